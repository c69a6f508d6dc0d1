"""The Kafka sink of the sequencer: one transaction per planned batch.

A batch's transaction carries its journal blocks, output events and dead letters
(``BatchPlan``) together with the input offsets it consumed
(``send_offsets_to_transaction``): read_committed consumers see all of it or none. This
module only writes; what the daemon does after a commit (positions, metrics, upkeep) and
how it reacts to a failure (exit, recover) is the daemon's.

Every failure becomes a ``DaemonExit``: fenced by a newer instance (``EXIT_FENCED``),
sends stuck (no send answered for 2 x ``kafka.request_timeout_ms``: a bound on the
lack of progress, so a batch of any size completes while it keeps moving), offsets and
commit not done within that bound, or anything else (the transaction is aborted if the
producer still can; ``EXIT_FAILURE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

from clearing.engine import InvariantViolation
from clearing.kafka._batch import BatchPlan
from clearing.kafka._exits import EXIT_FAILURE, EXIT_FENCED, DaemonExit
from clearing.kafka._progress import NoProgress, progress_timeout
from clearing.kafka._topics import describe_partitions
from clearing.ops.config import Config
from clearing.ops.metrics import Metrics

__all__ = ["ABORT_TIMEOUT_S", "BeforeCommit", "Transactions", "retrieve_fatal_error"]

log = logging.getLogger("clearing.kafka")

# Test hook: called (and awaited if it returns an awaitable) with the 1-based batch number
# after the batch's messages were sent, before its offsets and commit. Raising makes the
# batch fail like a broken send would.
BeforeCommit = Callable[[int], Awaitable[None] | None]

# Abort is best effort on the way out; never let it hang the exit.
ABORT_TIMEOUT_S: Final = 10.0
_FENCED_ERRORS: Final = (ProducerFenced, InvalidProducerEpoch)
_SENDS: Final = "its sends"


class _Stuck(Exception):
    """A batch's sends made no progress, or its commit did not complete, within the
    bound (``stuck_after_s``). ``args``: what was stuck, and a detail for the log line."""


class _Answered:
    """How many of a batch's sends the broker has answered so far (the progress the
    send limit looks at). Polled a few times per limit: sends are answered roughly in
    order, so it mostly walks forward from where it stopped last time."""

    def __init__(self, futures: list[asyncio.Future[Any]]) -> None:
        self._futures = futures  # still growing while the batch is being sent
        self._done_prefix = 0

    def __call__(self) -> int:
        futures = self._futures
        prefix = self._done_prefix
        while prefix < len(futures) and futures[prefix].done():
            prefix += 1
        self._done_prefix = prefix
        return prefix + sum(1 for future in futures[prefix:] if future.done())


def retrieve_fatal_error(producer: AIOKafkaProducer) -> None:
    """Read the error aiokafka leaves on an internal future once fenced.

    Nobody awaits that future, so asyncio would log "Future exception was never
    retrieved" with a traceback whenever it is garbage collected, possibly in the middle
    of another traceback's formatting (on CPython 3.11 that nesting corrupts the ``ast``
    module's state: "SystemError: AST constructor recursion depth mismatch").
    """
    manager = getattr(producer, "_txn_manager", None)
    waiter = getattr(manager, "_transaction_waiter", None)
    if isinstance(waiter, asyncio.Future) and waiter.done() and not waiter.cancelled():
        waiter.exception()


class Transactions:
    """Commits planned batches through ``producer``, strictly one after another."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        producer: AIOKafkaProducer,
        admin: AIOKafkaAdminClient | None,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._producer = producer
        self._admin = admin
        self._before_commit = before_commit
        # A batch timed out: closing must not wait for its sends to flush.
        self.stuck = False

    @property
    def stuck_after_s(self) -> float:
        # Each Kafka request is bounded by request_timeout_ms; allow one retry's worth.
        return 2 * self._config.kafka.request_timeout_ms / 1000

    async def commit(self, batch_no: int, plan: BatchPlan) -> int | None:
        """Write ``plan`` in one transaction (journal, events, DLQ, offsets). Returns the
        offset of its last journal message (None when it has none)."""
        config = self._config
        metrics = self._metrics
        producer = self._producer
        # From here until the commit, the engine is ahead of the committed journal.
        where = f"batch {batch_no} (seq {plan.first_seq}..{plan.last_seq})"
        opened_s = time.monotonic()
        try:
            await producer.begin_transaction()
            with metrics.journal_write_seconds.time():
                sent = await self._send_all(plan)
            if self._before_commit is not None:
                hooked = self._before_commit(batch_no)
                if inspect.isawaitable(hooked):
                    await hooked
            offsets = {TopicPartition(t, p): o for (t, p), o in plan.offsets.items()}
            async with self._bounded("its offsets and commit"):
                await producer.send_offsets_to_transaction(offsets, config.group_id)
                with metrics.txn_commit_seconds.time():
                    await producer.commit_transaction()
        except _FENCED_ERRORS as exc:
            open_s = time.monotonic() - opened_s
            if open_s * 1000 >= config.kafka.transaction_timeout_ms:
                raise self.too_long(where, open_s, exc) from exc
            raise self.fenced(where, exc) from exc
        except _Stuck as exc:
            # No abort: aiokafka sends EndTxn only after the pending sends are flushed, so
            # it would hang on the same sends; and no flush when closing either. The
            # coordinator aborts the open transaction when the restart fences this
            # producer (or after kafka.transaction_timeout_ms).
            self.stuck = True
            what, detail = exc.args
            cause = await self._missing_journal()
            outcome = (
                "Its transaction was not committed and is left to the coordinator to abort "
                "(nothing of it is visible)"
                if what == _SENDS
                else "Whether its transaction committed is unknown: the journal decides"
            )
            raise DaemonExit(
                EXIT_FAILURE,
                f"{where} timed out: {what} did not complete within "
                f"{self.stuck_after_s:.1f} s (2 x kafka.request_timeout_ms){detail}. {cause}"
                f"{outcome}; exiting so that recovery rebuilds the state from the journal.",
            ) from exc
        except InvariantViolation as exc:
            metrics.set_invariant_ok(False)
            await self.abort()
            raise DaemonExit(
                EXIT_FAILURE,
                f"{where}: ledger invariant violated ({exc}); nothing of this batch was "
                f"committed. This is a bug: keep the journal for the post-mortem.",
            ) from exc
        except asyncio.CancelledError:
            await self.abort()
            raise
        except Exception as exc:
            await self.abort()
            raise DaemonExit(
                EXIT_FAILURE,
                f"{where} failed: {exc!r}. Its transaction was aborted (nothing of it is "
                f"visible); exiting so that recovery rebuilds the state from the journal.",
            ) from exc
        if plan.journal:
            return int(sent[len(plan.journal) - 1].offset)
        return None

    async def _send_all(self, plan: BatchPlan) -> list[Any]:
        """Send the batch's messages; their delivery records, in order.

        aiokafka retries a produce to a missing partition (e.g. the journal topic deleted
        under us) forever: bounded, or the daemon would hang silently. The bound is on
        the time without an answered send, not on the total: a batch of millions of
        events (clawbacks across a large ledger) takes longer than any fixed bound, and
        would then fail again after every restart.
        """
        producer = self._producer
        futures: list[asyncio.Future[Any]] = []
        try:
            async with progress_timeout(self.stuck_after_s, _Answered(futures)):
                for message in (*plan.journal, *plan.events, *plan.dlq):
                    futures.append(
                        await producer.send(
                            message.topic,
                            message.value,
                            key=message.key,
                            partition=message.partition,
                            headers=message.headers,
                        )
                    )
                if futures:
                    # asyncio.wait, not gather: a timeout must not cancel aiokafka's own
                    # delivery futures.
                    await asyncio.wait(futures)
        except NoProgress as exc:
            raise _Stuck(
                _SENDS,
                f" of the batch's start or of the last answer to one of them "
                f"({exc.progress} of {len(futures)} sent were answered)",
            ) from exc
        return [future.result() for future in futures]

    @contextlib.asynccontextmanager
    async def _bounded(self, what: str) -> AsyncIterator[None]:
        """Raise ``_Stuck(what)`` if the body takes longer than ``stuck_after_s``."""
        bound = asyncio.timeout(self.stuck_after_s)
        try:
            async with bound:
                yield
        except TimeoutError as exc:
            if bound.expired():  # not some TimeoutError raised inside the body
                raise _Stuck(what, "") from exc
            raise

    async def _missing_journal(self) -> str:
        """Why a batch may be stuck, if cheaply known: the journal topic is gone."""
        journal = self._config.topics.journal
        if self._admin is None:
            return ""
        try:
            found = await asyncio.wait_for(
                describe_partitions(self._admin, [journal]),
                min(ABORT_TIMEOUT_S, self._config.kafka.request_timeout_ms / 1000),
            )
        except Exception:  # only a diagnosis
            return ""
        if found.get(journal) is None:
            return (
                f"The journal topic {journal!r} does not exist any more (deleted while "
                f"running?): a person must look; a restart will refuse to start. "
            )
        return ""

    def fenced(self, where: str, exc: BaseException) -> DaemonExit:
        config = self._config
        return DaemonExit(
            EXIT_FENCED,
            f"FENCED: another instance with transactional id {config.transactional_id!r} "
            f"(ledger {config.ledger_id!r}) has started; {where} was not committed and "
            f"this instance stops without writing anything more. (Kafka reports a "
            f"transaction older than kafka.transaction_timeout_ms the same way.) ({exc!r})",
        )

    def too_long(self, where: str, open_s: float, exc: BaseException) -> DaemonExit:
        """Fenced after the transaction outlived its timeout: most likely the coordinator
        aborted it for that (a batch too large for the timeout), not a second instance."""
        kafka = self._config.kafka
        return DaemonExit(
            EXIT_FENCED,
            f"FENCED: {where} was not committed: its transaction was open {open_s:.1f} s, "
            f"longer than kafka.transaction_timeout_ms ({kafka.transaction_timeout_ms} ms), "
            f"so the coordinator aborted it (or another instance started). If this "
            f"repeats, raise kafka.transaction_timeout_ms (up to the brokers' "
            f"transaction.max.timeout.ms) or lower batch.max_records. ({exc!r})",
        )

    async def abort(self) -> None:
        try:
            await asyncio.wait_for(self._producer.abort_transaction(), ABORT_TIMEOUT_S)
            log.warning("transaction aborted")
        except Exception as exc:  # fenced/fatal producers cannot abort; the broker will
            log.warning(
                "could not abort the transaction (%r); the coordinator aborts it when it "
                "times out or when the next instance starts",
                exc,
            )

    async def fence_probe(self, positions: dict[tuple[str, int], int]) -> None:
        """An offsets-only transaction: makes an idle zombie notice it has been fenced.

        (An empty transaction would not: aiokafka commits it without asking the broker.)
        It rewrites the already committed offsets (``positions``), so it changes nothing.
        """
        if not positions:
            return
        producer = self._producer
        offsets = {TopicPartition(t, p): o for (t, p), o in positions.items()}
        try:
            # Bounded like a batch: a probe sent by a process that was paused can meet
            # a coordinator that has moved on.
            async with self._bounded("an idle fencing probe"):
                await producer.begin_transaction()
                await producer.send_offsets_to_transaction(offsets, self._config.group_id)
                await producer.commit_transaction()
        except _FENCED_ERRORS as exc:
            raise self.fenced("an idle fencing probe", exc) from exc
        except _Stuck as exc:
            self.stuck = True
            raise DaemonExit(
                EXIT_FAILURE,
                f"idle fencing probe did not complete within {self.stuck_after_s:.1f} s; "
                f"exiting so that recovery rebuilds the state from the journal",
            ) from exc
        except Exception as exc:
            await self.abort()
            raise DaemonExit(EXIT_FAILURE, f"idle fencing probe failed: {exc!r}") from exc
