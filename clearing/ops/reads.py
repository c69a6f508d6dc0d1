"""Reads of the committed ledger: one queue, answered by the daemon's loop between batches.

The engine runs ahead of the committed journal while a batch is planned or in flight, so
no HTTP handler reads it directly. A request queues a query (a function of the engine)
and waits; the daemon's loop, at the top of its next turn (a batch boundary: the engine
has applied exactly the batches planned so far, at most one of them still in its open
transaction), calls ``answer(engine, after=<that transaction>)``, which runs the queued
queries in arrival order and hands each its result with the seq it reflects once that
transaction has committed. So a read never sees half a batch nor an uncommitted one, and
the loop never waits for a transaction on a read's behalf (the batch pipeline stays
full).
``/state-hash`` and every read-API route (``clearing.ops.read_api``) go through this one
queue. On a standby (a read replica) the follow loop calls ``answer(engine)`` after each
fetch of the journal, without ``after``: every record it applied is committed.

Bounded: each query is bounded in cost by its route (one account: O(markets it holds);
one market: O(depth)); one ``answer`` call runs queries until its budget of CPU
time has been spent (5 ms plus 2 % of the loop's CPU time since the last call, at most
50 ms) and leaves the rest for the next boundary, so a flood of requests delays a commit
by at most the budget plus one query. Whole-ledger queries (the state hash, the
ranked lists) are also cached by ``CostBoundedCache``: recomputed at most once per
``cost_factor`` times their last cost, so whatever the polling rate they take at most
about ``1/cost_factor`` of the loop's time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Generic, NamedTuple, Protocol, TypeVar

from clearing.engine import EngineCore

__all__ = ["Answer", "CommittedReads", "CostBoundedCache", "ReadAborted", "Waiter"]

T = TypeVar("T")

# Queries answered per batch boundary stop after this much CPU time of the loop's thread
# (one query may overrun it): 5 ms, plus 2 % of the loop's CPU time since the last
# boundary answered (long batches under a backlog leave more waiting), at most 50 ms.
DEFAULT_BUDGET_S: Final = 0.005
BUDGET_SHARE: Final = 0.02
MAX_BUDGET_S: Final = 0.05


class Answer(NamedTuple, Generic[T]):
    seq: int  # the committed seq the value reflects
    value: T


class ReadAborted(Exception):
    """The batch a read was taken after did not commit: retry (the daemon is exiting)."""


class Waiter(Protocol):
    """Who gets a query's answer: an ``asyncio.Future``, or anything with its three
    methods (the HTTP server's pending response: no task nor future per request)."""

    def done(self) -> bool: ...  # True once it no longer wants an answer

    def set_result(self, result: Answer, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class CommittedReads:
    """The queue of reads waiting for the loop's next batch boundary."""

    def __init__(
        self, budget_s: float = DEFAULT_BUDGET_S, clock: Callable[[], float] = time.thread_time
    ) -> None:
        self._budget_s = budget_s
        # CPU time of the loop's thread: the budget bounds the work done, which a busy
        # machine's scheduler stretching wall time would otherwise cut to a query or two.
        self._clock = clock
        self._last_answer_s = clock()
        self._queue: deque[tuple[Callable[[EngineCore], object], Waiter]] = deque()

    @property
    def wanted(self) -> bool:
        """True when a request waits: the loop should call ``answer`` at a boundary."""
        # A request that timed out (its future cancelled) no longer needs an answer.
        while self._queue and self._queue[0][1].done():
            self._queue.popleft()
        return bool(self._queue)

    async def run(self, query: Callable[[EngineCore], T]) -> Answer[T]:
        """``query(engine)`` on a committed state, from the loop's next boundary;
        ReadAborted if that state never commits."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.append((query, future))
        return await future

    def submit(self, query: Callable[[EngineCore], object], waiter: Waiter) -> None:
        """``run`` without awaiting: ``waiter`` gets the answer (or the failure) from the
        loop's next boundary, unless it is ``done()`` by then."""
        self._queue.append((query, waiter))

    def answer(self, engine: EngineCore, after: asyncio.Future[None] | None = None) -> None:
        """Called by the loop while ``engine`` is at a batch boundary: the committed state,
        or (``after`` given) the state once the open transaction ``after`` commits. The
        answers are computed now, so no batch has to wait for them, and handed over only
        when ``after`` has committed: a read never sees a state that is not committed."""
        now = self._clock()
        since_s, self._last_answer_s = now - self._last_answer_s, now
        deadline = now + min(MAX_BUDGET_S, self._budget_s + BUDGET_SHARE * since_s)
        seq = engine.seq
        done: list[tuple[Waiter, Answer | BaseException]] = []
        while self._queue:
            query, waiter = self._queue.popleft()
            if waiter.done():
                continue
            try:
                done.append((waiter, Answer(seq, query(engine))))
            except Exception as exc:  # a query's bug fails its request, never the loop
                done.append((waiter, exc))
            if self._clock() >= deadline:
                break
        if after is None or after.done():
            _deliver(done, after)
        else:
            after.add_done_callback(lambda task: _deliver(done, task))


def _deliver(
    done: list[tuple[Waiter, Answer | BaseException]], after: asyncio.Future[None] | None
) -> None:
    failed = after is not None and (after.cancelled() or after.exception() is not None)
    for waiter, result in done:
        if waiter.done():
            continue  # the request timed out meanwhile
        if failed:
            waiter.set_exception(ReadAborted("the batch before this read did not commit"))
        elif isinstance(result, BaseException):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)


class CostBoundedCache(Generic[T]):
    """One whole-ledger query's last answer, recomputed at most once per
    ``max(min_interval_s, cost_factor * last cost)``; in between, a request gets the last
    answer with its own (older) seq. The bound holds on the loop too: requests that
    queued while a recomputation was allowed reuse the last answer once one has been
    made, instead of recomputing at every batch boundary."""

    def __init__(
        self, compute: Callable[[EngineCore], T], cost_factor: float, min_interval_s: float
    ) -> None:
        self._compute = compute
        self._cost_factor = cost_factor
        self._min_interval_s = min_interval_s
        self._cached: Answer[T] | None = None  # the last answer handed out: committed
        self._computed: Answer[T] | None = None  # the last computed (maybe not yet committed)
        self._next_allowed_s = 0.0  # monotonic time before which no recomputation runs
        self.last_cost_s = 0.0

    def _fresh_enough(self, answer: Answer[T] | None, seq: int) -> bool:
        return answer is not None and (answer.seq == seq or time.monotonic() < self._next_allowed_s)

    async def get(self, reads: CommittedReads, committed_seq: int) -> Answer[T]:
        cached = self.cached(committed_seq)
        if cached is not None:
            return cached
        return self.remember((await reads.run(self.compute_or_reuse)).value)

    def cached(self, committed_seq: int) -> Answer[T] | None:
        """The last answer handed out, if fresh enough to give without asking the loop."""
        cached = self._cached
        return cached if self._fresh_enough(cached, committed_seq) else None

    def remember(self, answer: Answer[T]) -> Answer[T]:
        """Note an answer ``compute_or_reuse`` gave, once handed over by the loop (after
        the commit of the boundary it ran at, so the answer inside, computed there or at
        an earlier boundary, is of a committed state); returns it."""
        if self._cached is None or answer.seq > self._cached.seq:
            self._cached = answer
        return answer

    def compute_or_reuse(self, engine: EngineCore) -> Answer[T]:
        """The query to queue: the last computed answer, or a new one if allowed."""
        computed = self._computed
        if self._fresh_enough(computed, engine.seq):
            return computed  # type: ignore[return-value]
        started = time.monotonic()
        self._computed = Answer(engine.seq, self._compute(engine))
        self.last_cost_s = time.monotonic() - started
        self._next_allowed_s = started + max(
            self._min_interval_s, self._cost_factor * self.last_cost_s
        )
        return self._computed
