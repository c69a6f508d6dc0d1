"""Reads of the committed ledger: one queue, answered by the daemon's loop between batches.

The engine runs ahead of the committed journal while a batch is planned or in flight, so
no HTTP handler reads it directly. A request queues a query (a function of the engine)
and waits; the daemon's loop, at its next point where the engine equals the committed
state (no transaction open: where snapshots fork), calls ``answer(engine)``, which runs
the queued queries in arrival order and hands each its result with the seq it reflects.
``/state-hash`` and every read-API route (``clearing.ops.read_api``) go through this one
queue.

Bounded: each query is bounded in cost by its route (one account: O(markets it holds);
one market: O(holders + depth)); one ``answer`` call runs queries until ``budget_s`` has
been spent and leaves the rest for the next boundary, so a flood of requests delays a
commit by at most the budget plus one query. Whole-ledger queries (the state hash, the
ranked lists) are also cached by ``CostBoundedCache``: recomputed at most once per
``cost_factor`` times their last cost, so whatever the polling rate they take at most
about ``1/cost_factor`` of the loop's time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Generic, NamedTuple, TypeVar

from clearing.engine import EngineCore

__all__ = ["Answer", "CommittedReads", "CostBoundedCache"]

T = TypeVar("T")

# Queries answered per batch boundary stop after this much loop time (one query may
# overrun it): about a tenth of a batch commit's time on a loaded 2-core machine.
DEFAULT_BUDGET_S: Final = 0.005


class Answer(NamedTuple, Generic[T]):
    seq: int  # the committed seq the value reflects
    value: T


class CommittedReads:
    """The queue of reads waiting for the loop's next consistent point."""

    def __init__(self, budget_s: float = DEFAULT_BUDGET_S) -> None:
        self._budget_s = budget_s
        self._queue: deque[tuple[Callable[[EngineCore], object], asyncio.Future[Answer]]]
        self._queue = deque()

    @property
    def wanted(self) -> bool:
        """True when a request waits: the loop should settle and call ``answer``."""
        # A request that timed out (its future cancelled) no longer needs an answer.
        while self._queue and self._queue[0][1].done():
            self._queue.popleft()
        return bool(self._queue)

    async def run(self, query: Callable[[EngineCore], T]) -> Answer[T]:
        """``query(engine)`` on the committed state, at the loop's next boundary."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.append((query, future))
        return await future

    def answer(self, engine: EngineCore) -> None:
        """Called by the loop while ``engine`` is exactly the committed state."""
        deadline = time.monotonic() + self._budget_s
        seq = engine.seq
        while self._queue:
            query, future = self._queue.popleft()
            if future.done():
                continue
            try:
                future.set_result(Answer(seq, query(engine)))
            except Exception as exc:  # a query's bug fails its request, never the loop
                future.set_exception(exc)
            if time.monotonic() >= deadline:
                break


class CostBoundedCache(Generic[T]):
    """One whole-ledger query's last answer, recomputed at most once per
    ``max(min_interval_s, cost_factor * last cost)``; in between, a request gets the last
    answer with its own (older) seq."""

    def __init__(
        self, compute: Callable[[EngineCore], T], cost_factor: float, min_interval_s: float
    ) -> None:
        self._compute = compute
        self._cost_factor = cost_factor
        self._min_interval_s = min_interval_s
        self._cached: Answer[T] | None = None
        self._next_allowed_s = 0.0  # monotonic time before which the cache is served
        self.last_cost_s = 0.0

    async def get(self, reads: CommittedReads, committed_seq: int) -> Answer[T]:
        cached = self._cached
        if cached is not None and (
            cached.seq == committed_seq or time.monotonic() < self._next_allowed_s
        ):
            return cached
        return await reads.run(self._refresh)

    def _refresh(self, engine: EngineCore) -> T:
        # Several requests may have queued for one boundary: compute once.
        if self._cached is None or self._cached.seq != engine.seq:
            started = time.monotonic()
            self._cached = Answer(engine.seq, self._compute(engine))
            self.last_cost_s = time.monotonic() - started
            self._next_allowed_s = started + max(
                self._min_interval_s, self._cost_factor * self.last_cost_s
            )
        return self._cached.value
