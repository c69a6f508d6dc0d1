"""The Kafka daemon: the single writer of one ledger.

    input topics --read_committed--> order + sequence --> engine --> ONE transaction:
        journal records + output events + DLQ records + the consumed input offsets

Per batch, the engine applies the records first (it is pure and fast), then one Kafka
transaction carries everything the batch produced together with the input offsets it
consumed (``send_offsets_to_transaction``). Either all of it becomes visible to
read_committed consumers, or none of it.

Failure semantics. The engine is ahead of the committed journal from the moment a batch
is applied until its transaction commits. If anything fails in between (a send, the
offsets, the commit, an invariant check), the transaction is aborted if the producer
still can, and the daemon exits non-zero: a supervisor restarts it and recovery rebuilds
the state from the journal, which never contains the aborted batch. A fenced producer (a
newer instance with the same ledger id took over) exits with ``EXIT_FENCED``. Sends and
commit are bounded (2 x ``kafka.request_timeout_ms``): aiokafka would otherwise retry a
send to a deleted journal topic forever. Input positions are never reset silently: an
input partition truncated past the ledger's position exits ``EXIT_RECOVERY``; rejected
credentials or missing ACLs exit ``EXIT_CONFIG``.
SIGTERM/SIGINT (``request_stop``) stops consuming, lets the open transaction commit,
writes a snapshot and exits 0, all within ``daemon.shutdown_timeout_s``; past that bound
the transaction is aborted and the exit is ``EXIT_SHUTDOWN_TIMEOUT``.

Startup order matters: the transactional producer starts (InitProducerId fences every
older instance and completes or aborts its open transaction) *before* the journal's end
is read, so nothing can be committed behind recovery's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    InvalidProducerEpoch,
    OffsetOutOfRangeError,
    ProducerFenced,
)

from clearing.engine import EngineCore, InvariantViolation
from clearing.engine.events import Clawback
from clearing.engine.persist import dump_state
from clearing.heap import HeapSettler, settle_heap, streaming_collections
from clearing.journal import JournalError
from clearing.kafka._background import BackgroundJob, start_background_job
from clearing.kafka._batch import (
    HEADER_SOURCE_TOPIC,
    BatchPlan,
    BatchPlanner,
    Consumed,
    InputBuffer,
    JournalChain,
)
from clearing.kafka._clients import (
    ACCESS_ERRORS,
    access_error_message,
    make_consumer,
    make_producer,
)
from clearing.kafka._connect import ConnectError, start_admin
from clearing.kafka._dead_letters import DeadLetterLog
from clearing.kafka._recovery import (
    KafkaRecovery,
    Positions,
    recover_from_kafka,
    write_kafka_snapshot,
)
from clearing.kafka._topics import describe_partitions, input_limit_warnings
from clearing.ops.config import Config
from clearing.ops.http import OpsServer
from clearing.ops.metrics import Metrics
from clearing.ops.read_api import ReadApi
from clearing.ops.reads import CommittedReads
from clearing.ops.state_hash import CommittedStateHash
from clearing.sequencer import RecoveryError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_FENCED",
    "EXIT_OK",
    "EXIT_RECOVERY",
    "EXIT_SHUTDOWN_TIMEOUT",
    "BeforeCommit",
    "Daemon",
    "DaemonExit",
    "drain_fetched",
]

log = logging.getLogger("clearing.kafka")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1  # a batch failed or something unexpected: restart, recovery rebuilds
EXIT_CONFIG: Final = 2  # bad configuration, wrong credentials or missing ACLs: fix, then start
EXIT_FENCED: Final = 3  # a newer instance with the same ledger id took over
EXIT_RECOVERY: Final = 4  # refused to start (topics, journal, snapshots): a person must look
EXIT_SHUTDOWN_TIMEOUT: Final = 5  # stop requested, but the bound passed: open txn aborted

# Test hook: called (and awaited if it returns an awaitable) with the 1-based batch number
# after the batch's messages were sent, before its offsets and commit. Raising makes the
# batch fail like a broken send would.
BeforeCommit = Callable[[int], Awaitable[None] | None]

_T = TypeVar("_T")
# Abort and client shutdown are best effort on the way out; never let them hang the exit.
_ABORT_TIMEOUT_S: Final = 10.0
_CLOSE_TIMEOUT_S: Final = 10.0
_STUCK_CLOSE_TIMEOUT_S: Final = 1.0
# Ledger gauges cost O(positions) on the loop; Prometheus scrapes every 15 s anyway.
_LEDGER_METRICS_INTERVAL_S: Final = 5.0
# The event loop runs the open transaction's round trips (add partitions, produce,
# offsets, commit), each only when the loop gets control back; the batch's CPU work
# (parsing fetched records, planning) yields to it after this many records, ~0.5 ms of
# work, so that each step waits that long at most.
_PLAN_CHUNK_RECORDS: Final = 100
_DRAIN_CHUNK_RECORDS: Final = 500
_FENCED_ERRORS: Final = (ProducerFenced, InvalidProducerEpoch)


class _Stuck(Exception):
    """A batch's sends or commit did not complete within the bound (see _stuck_after_s)."""


_SENDS: Final = "its sends"


class DaemonExit(Exception):
    """Stop the daemon with ``code``; ``message`` is the log line that says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def _in_daemon_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """Run blocking ``fn`` in a daemon thread (asyncio.to_thread's executor would make the
    interpreter wait for it at exit, defeating the shutdown bound)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name=f"clearing-{fn.__name__}", daemon=True).start()
    return await future


async def drain_fetched(
    consumer: AIOKafkaConsumer,
    buffer: InputBuffer,
    *,
    wait_ms: int,
    chunk_records: int = _DRAIN_CHUNK_RECORDS,
) -> None:
    """Move all that ``consumer`` has fetched into the read-ahead ``buffer`` (aiokafka
    sends the next fetch only then), waiting up to ``wait_ms`` for the first records.
    aiokafka turns fetched bytes into record objects as they are taken, about 1 us
    each, so they are taken ``chunk_records`` at a time with the event loop run in
    between, as planning does."""
    timeout_ms = wait_ms
    while True:
        data = await consumer.getmany(timeout_ms=timeout_ms, max_records=chunk_records)
        taken = 0
        if data:
            buffer.add({(tp.topic, tp.partition): rs for tp, rs in data.items()})
            taken = sum(map(len, data.values()))
        # Fewer than asked for: every partition's fetched records were taken.
        if taken < chunk_records:
            return
        timeout_ms = 0
        await asyncio.sleep(0)


def _retrieve_fatal_error(producer: AIOKafkaProducer) -> None:
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


def _listen_address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _log_ledger_changes(batch_no: int, plan: BatchPlan) -> None:
    """One line per committed batch and per waterfall step, each with its seq and source
    (``kafka:topic:partition:offset``), so the log alone tells where money moved."""
    if not plan.sources:
        return
    log.info(
        "batch %d committed: seq %d..%d, %d inputs, %d output events",
        batch_no,
        plan.first_seq,
        plan.last_seq,
        len(plan.sources),
        len(plan.outputs),
        extra={"seq": plan.last_seq, "source": plan.sources[-1]},
    )
    clawbacks: dict[tuple[int, str], tuple[int, list[str]]] = {}
    for event in plan.outputs:
        tag = event.__struct_config__.tag
        if tag not in ("liquidation", "fund_draw", "clawback", "bad_debt"):
            continue
        source = plan.sources[event.seq - plan.first_seq]
        if type(event) is Clawback:
            # One bankruptcy can debit thousands of accounts: summarise per cause.
            count, amounts = clawbacks.get((event.seq, event.cause), (0, []))
            clawbacks[event.seq, event.cause] = (count + 1, [*amounts[:2], event.amount])
            continue
        fields = " ".join(
            f"{name}={getattr(event, name)}" for name in event.__struct_fields__ if name != "seq"
        )
        log.info("%s %s", tag, fields, extra={"seq": event.seq, "source": source})
    for (seq, cause), (count, sample) in clawbacks.items():
        log.info(
            "clawback for %s from %d accounts (amounts %s%s)",
            cause,
            count,
            ", ".join(sample),
            ", ..." if count > len(sample) else "",
            extra={"seq": seq, "source": plan.sources[seq - plan.first_seq]},
        )


class Daemon:
    """One ledger's consume -> journal -> apply -> emit loop. ``await run()`` -> exit code."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self._before_commit = before_commit
        self._stop = asyncio.Event()
        self._rank = {topic: rank for rank, topic in enumerate(config.topics.inputs)}
        self.engine: EngineCore | None = None
        self.recovery: KafkaRecovery | None = None
        self.committed_seq = 0
        self.batches_committed = 0
        self.last_snapshot_path: str | None = None
        self._chain = JournalChain()
        self._journal_offset = -1
        self._positions: Positions = {}
        self._assigned: list[TopicPartition] = []
        self._buffer = InputBuffer(self._rank)  # consumed, not planned yet
        self._dead_letters = DeadLetterLog(config.topics.dlq)  # rate-limited lines
        self._last_snapshot_seq = 0
        self._heap = HeapSettler()
        self._job: BackgroundJob | None = None  # the forked check/snapshot child, if any
        self._job_task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None  # the open transaction's commit
        self._failure: DaemonExit | None = None  # what a child found, raised by the loop
        self._last_invariant_seq = 0
        self._batch_no = 0
        self._producer: AIOKafkaProducer | None = None
        self._producer_stuck = False  # a batch timed out: do not wait for its flush
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._server: OpsServer | None = None
        self.http_port: int | None = None
        self.reads = CommittedReads()  # one queue: GET /state-hash and the read API /v1/
        self.state_hashes = CommittedStateHash(self.reads)

    # -- control -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.metrics.ready

    def request_stop(self) -> None:
        """Stop consuming; the open transaction commits (and the batch planned behind it,
        already applied to the engine), then snapshot and exit 0."""
        if not self._stop.is_set():
            log.info("stop requested: finishing the open batches, then snapshot and exit")
            self.metrics.set_ready(False, "shutting down")
            self._stop.set()

    async def run(self) -> int:
        """Serve until stopped or failed; returns the process exit code."""
        main = asyncio.create_task(self._main(), name="clearing-daemon")
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not main.done():
                bound_s = self.config.daemon.shutdown_timeout_s
                try:
                    await asyncio.wait_for(asyncio.shield(main), bound_s)
                except TimeoutError:
                    log.error(
                        "shutdown did not finish within %.1f s: aborting the open transaction",
                        bound_s,
                    )
                    main.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await main
                    return EXIT_SHUTDOWN_TIMEOUT
            return main.result()
        finally:
            stopping.cancel()

    # -- lifecycle -----------------------------------------------------------------------

    async def _main(self) -> int:
        try:
            await self._serve()
            log.info("stopped cleanly at seq %d", self.committed_seq)
            return EXIT_OK
        except DaemonExit as exc:
            log.error("%s", exc.message)
            return exc.code
        except (RecoveryError, JournalError) as exc:
            log.critical("refusing to start: %s", exc)
            return EXIT_RECOVERY
        except ACCESS_ERRORS as exc:
            log.critical("%s", access_error_message(self.config, exc))
            return EXIT_CONFIG
        except Exception:
            log.exception("unexpected failure; exiting so that recovery rebuilds the state")
            return EXIT_FAILURE
        finally:
            self.metrics.set_ready(False, "stopped")
            await self._close()

    async def _serve(self) -> None:
        config = self.config
        metrics = self.metrics
        metrics.set_ready(False, "starting")
        if config.http.listen:
            host, port = _listen_address(config.http.listen)
            # A stuck commit shows on /healthz after twice the Kafka request timeout.
            stall_s = max(30.0, 2 * config.kafka.request_timeout_ms / 1000)
            self._server = OpsServer(
                metrics,
                host,
                port,
                stall_after_s=stall_s,
                state_hash=lambda: self.state_hashes.get(self.committed_seq),
                read_api=ReadApi(
                    self.reads,
                    lambda: self.committed_seq,
                    token=config.http.read_token.get() if config.http.read_token else None,
                    host=host,
                ),
            )
            await self._server.start()
            self.http_port = self._server.port
            log.info(
                "ops endpoint on %s (/metrics /healthz /readyz /state-hash /v1/; read API "
                "token %s)",
                self._server.url,
                "required" if config.http.read_token else "not set",
            )
        try:  # a bounded wait, then one line (clearing/kafka/_connect.py)
            self._admin = await start_admin(config)
        except ConnectError as exc:
            raise DaemonExit(exc.code, exc.message) from exc
        await self._preflight()

        metrics.set_ready(False, "fencing older instances")
        self._producer = make_producer(config)
        await self._producer.start()
        log.info(
            "transactional producer %r initialised: any older instance of ledger %r is fenced",
            config.transactional_id,
            config.ledger_id,
        )

        metrics.set_ready(False, "recovering from the journal")
        beating = asyncio.create_task(self._beat_while_recovering())
        try:
            recovery = await _in_daemon_thread(recover_from_kafka, config)
        finally:
            beating.cancel()
        self._adopt(recovery)

        self._consumer = make_consumer(config)
        await self._consumer.start()
        await self._assign(first=True)
        if not self._stop.is_set():
            metrics.set_ready(True)
        log.info(
            "ready: ledger %r at seq %d; consuming %s",
            config.ledger_id,
            self.committed_seq,
            ", ".join(f"{tp.topic}:{tp.partition}" for tp in self._assigned),
        )
        with streaming_collections():
            await self._consume()
        await self._finish_background_work()
        if config.snapshot_dir and config.snapshot.on_shutdown:
            await self._snapshot()

    def _adopt(self, recovery: KafkaRecovery) -> None:
        self.recovery = recovery
        self.engine = recovery.engine
        self._chain = recovery.chain
        self._journal_offset = recovery.journal_offset
        self._positions = dict(recovery.positions)
        self.committed_seq = recovery.engine.seq
        self._last_snapshot_seq = recovery.snapshot_seq
        self._last_invariant_seq = recovery.engine.seq
        if recovery.snapshot_path is not None:
            self.metrics.set_snapshot_time(time.time_ns())
        self.metrics.set_journal_seq(recovery.chain.last_seq)
        self.metrics.update_ledger(recovery.engine, time.time_ns())
        self.metrics.set_invariant_ok(True)
        settle_heap()
        log.info(
            "recovered to seq %d in %.2f s: snapshot %s (seq %d) + %d journal records "
            "replayed with outputs verified",
            recovery.engine.seq,
            recovery.seconds,
            recovery.snapshot_path or "none",
            recovery.snapshot_seq,
            recovery.replayed,
            extra={"seq": recovery.engine.seq},
        )

    async def _beat_while_recovering(self) -> None:
        # Recovery runs in a thread; the loop itself is alive and should say so.
        while True:
            if self._server is not None:
                self._server.beat()
            await asyncio.sleep(1.0)

    async def _preflight(self) -> None:
        topics = self.config.topics
        assert self._admin is not None
        names = [topics.journal, topics.events, topics.dlq, *topics.inputs]
        found = await describe_partitions(self._admin, names)
        missing = [name for name in names if found.get(name) is None]
        if missing:
            raise DaemonExit(
                EXIT_RECOVERY,
                f"refusing to start: topic(s) {', '.join(missing)} do not exist. Create them "
                f"with `clearing topics create --config FILE` (a missing journal topic that "
                f"existed before means the ledger's history is gone).",
            )
        if found[topics.journal] != 1:
            raise DaemonExit(
                EXIT_RECOVERY,
                f"refusing to start: journal topic {topics.journal!r} has "
                f"{found[topics.journal]} partitions; it must have exactly one",
            )
        for warning in await input_limit_warnings(self._admin, self.config):
            log.warning("%s", warning)

    async def _close(self) -> None:
        if self._job is not None:
            self._job.kill()  # exiting anyway: its result no longer matters
            self._job = None
        if self._job_task is not None:
            self._job_task.cancel()
        if self._producer is not None:
            _retrieve_fatal_error(self._producer)
        # producer.stop() flushes the pending sends first: hopeless after a stuck batch.
        producer_close_s = _STUCK_CLOSE_TIMEOUT_S if self._producer_stuck else _CLOSE_TIMEOUT_S
        for closer, timeout_s in (
            (self._consumer.stop if self._consumer else None, _CLOSE_TIMEOUT_S),
            (self._producer.stop if self._producer else None, producer_close_s),
            (self._admin.close if self._admin else None, _CLOSE_TIMEOUT_S),
            (self._server.stop if self._server else None, _CLOSE_TIMEOUT_S),
        ):
            if closer is None:
                continue
            try:
                await asyncio.wait_for(closer(), timeout_s)
            except Exception as exc:  # on the way out: report, keep closing the rest
                log.warning("closing a Kafka client failed: %r", exc)
        self._consumer = self._producer = self._admin = self._server = None

    # -- assignment ----------------------------------------------------------------------

    async def _input_partitions(self) -> list[TopicPartition]:
        assert self._admin is not None
        found = await describe_partitions(self._admin, self.config.topics.inputs)
        tps: list[TopicPartition] = []
        for topic in self.config.topics.inputs:
            count = found.get(topic)
            if count is None:
                raise DaemonExit(EXIT_FAILURE, f"input topic {topic!r} disappeared")
            tps.extend(TopicPartition(topic, p) for p in range(count))
        return tps

    async def _assign(self, first: bool = False) -> None:
        """Assign every input partition and seek each to where the journal says.

        Manual assignment, not group membership: there are no rebalances, so a batch can
        never lose its partitions halfway; exclusivity comes from transactional-id
        fencing. The start offset is max(committed group offset, journal position): they
        are equal unless the group's offsets were reset (never re-apply a journaled
        input) or the last records of a partition were oversized (never journaled).
        """
        consumer = self._consumer
        assert consumer is not None
        tps = await self._input_partitions()
        # consumer.committed() waits for the group coordinator (the admin client's lookup
        # fails instead while __consumer_offsets is still being created).
        committed: dict[tuple[str, int], int] = {}
        for tp in tps:
            offset = await consumer.committed(tp)
            if offset is not None and offset >= 0:
                committed[tp.topic, tp.partition] = offset
        if first and self._chain.last_seq == 0 and committed:
            raise DaemonExit(
                EXIT_RECOVERY,
                f"refusing to start: the journal topic {self.config.topics.journal!r} is "
                f"empty but consumer group {self.config.group_id!r} has committed offsets "
                f"({len(committed)} partitions): the journal was deleted or recreated. "
                f"Restore it; for a genuinely new ledger use a new ledger_id. (If every "
                f"input so far was oversized, and so only went to the DLQ, delete the "
                f"group's offsets to start over.)",
            )
        starts: dict[TopicPartition, int] = {}
        new: list[TopicPartition] = []
        for tp in tps:
            key = (tp.topic, tp.partition)
            journal_pos, group_pos = self._positions.get(key), committed.get(key)
            if journal_pos is not None and (group_pos is None or group_pos < journal_pos):
                if group_pos != journal_pos:
                    log.warning(
                        "%s:%d: group offset %s is behind the journal (%d): resuming from "
                        "the journal's position",
                        tp.topic,
                        tp.partition,
                        group_pos,
                        journal_pos,
                    )
                starts[tp] = journal_pos
            elif group_pos is not None:
                starts[tp] = group_pos
            else:
                # Never read and never committed: a new partition starts at its log
                # start, whatever that is (nothing of it was ever ours to lose).
                new.append(tp)
        if starts:
            # The consumer never resets a position by itself (auto_offset_reset="none"):
            # a start below the log start offset means inputs were deleted unread.
            log_start = await consumer.beginning_offsets(list(starts))
            lost: dict[TopicPartition, tuple[int, int | None]] = {
                tp: (start, log_start[tp])
                for tp, start in starts.items()
                if tp in log_start and start < log_start[tp]
            }
            if lost:
                raise self._truncated_inputs(lost)
        consumer.assign(tps)
        self._assigned = tps
        self._buffer.clear()  # every partition is re-read from its committed position
        # No await between assign() and the seeks: every partition gets its position
        # before the fetcher can look for one.
        for tp, start in starts.items():
            consumer.seek(tp, start)
            self._positions[tp.topic, tp.partition] = start
        if new:
            await consumer.seek_to_beginning(*new)

    def _truncated_inputs(
        self, lost: Mapping[TopicPartition, tuple[int, int | None]]
    ) -> DaemonExit:
        """Exit 4: input records this ledger never applied were deleted from Kafka."""
        parts = "; ".join(
            f"{tp.topic}:{tp.partition} expected offset {expected}, log start offset "
            f"{'unknown' if start is None else start}"
            for tp, (expected, start) in sorted(lost.items())
        )
        return DaemonExit(
            EXIT_RECOVERY,
            f"refusing to consume: input partition(s) truncated past the position this "
            f"ledger has applied ({parts}). The records in between were deleted (retention, "
            f"delete-records, or the topic was recreated) before they were journaled: "
            f"they are lost to this ledger. Restore them, or, to skip them deliberately, "
            f"move the offsets of consumer group {self.config.group_id!r} to the log start.",
        )

    # -- the loop ------------------------------------------------------------------------

    async def _consume(self) -> None:
        """Poll, plan, commit. Batches are pipelined one deep: batch N+1 is planned (the
        engine's CPU work) while batch N's transaction is in flight (the broker's work);
        transactions themselves stay strictly one after another, and anything that needs
        the engine to equal the committed state (background checks and snapshots,
        reassignment, fencing probes, shutdown) waits for the open one first."""
        config = self.config
        loop = asyncio.get_running_loop()
        idle_since = last_metrics = last_refresh = loop.time()
        try:
            while not self._stop.is_set():
                if self._failure is not None:
                    raise self._failure
                if self._server is not None:
                    self._server.beat()
                if any(self._due()):
                    await self._settle()
                    self._start_background_work()
                if self.reads.wanted:  # a batch boundary: answered once it is committed
                    self.reads.answer(self.engine, after=self._inflight)  # type: ignore[arg-type]
                buffered = self._buffer
                if buffered.count < config.batch.max_records:
                    # Wait for input only when there is nothing to plan.
                    await self._read_ahead(0 if buffered.count else config.batch.poll_timeout_ms)
                now = loop.time()
                records = buffered.take(config.batch.max_records, config.batch.max_bytes)
                if records:
                    batch_no, plan = await self._plan(records)
                    await self._settle()
                    self._inflight = asyncio.create_task(
                        self._commit(batch_no, plan), name=f"clearing-batch-{batch_no}"
                    )
                    idle_since = now
                else:
                    await self._settle()
                    if now - idle_since >= config.daemon.fence_probe_interval_s:
                        await self._fence_probe()
                        idle_since = now
                if now - last_metrics >= _LEDGER_METRICS_INTERVAL_S:
                    self._update_gauges()
                    last_metrics = now
                if now - last_refresh >= config.daemon.partition_refresh_interval_s:
                    await self._settle()
                    await self._refresh_partitions()
                    last_refresh = now
            await self._settle()
        except asyncio.CancelledError:
            # The shutdown bound passed: cancel the open transaction, which aborts it.
            inflight, self._inflight = self._inflight, None
            if inflight is not None and not inflight.done():
                inflight.cancel()
                with contextlib.suppress(BaseException):
                    await inflight
            raise
        except BaseException:
            # The loop failed with a transaction open: that batch was sound, let it
            # finish (its own failure, if any, is logged; the loop's is what exits).
            inflight, self._inflight = self._inflight, None
            if inflight is not None:
                try:
                    await inflight
                except Exception as exc:
                    log.error("the open batch failed too while stopping: %s", exc)
            raise

    async def _settle(self) -> None:
        """Wait for the open transaction, if any; raise its failure."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def _out_of_range(self, exc: OffsetOutOfRangeError) -> DaemonExit:
        """The fetch position left the log while running (truncated, or topic recreated)."""
        consumer = self._consumer
        assert consumer is not None
        positions = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        if not positions:
            return DaemonExit(
                EXIT_RECOVERY,
                f"refusing to consume: an input fetch offset is out of range ({exc!r}): "
                f"an input partition was truncated or recreated",
            )
        log_start: dict[TopicPartition, int] = {}
        # Best effort: only for the message.
        with contextlib.suppress(Exception):
            log_start = await asyncio.wait_for(
                consumer.beginning_offsets(list(positions)),
                self.config.kafka.request_timeout_ms / 1000,
            )
        lost = {tp: (offset, log_start.get(tp)) for tp, offset in positions.items()}
        return self._truncated_inputs(lost)

    async def _plan(self, records: list[Consumed]) -> tuple[int, BatchPlan]:
        """Apply a batch to the engine and build its messages (no I/O). In chunks, with
        the event loop run in between: the open transaction is a chain of round trips
        (add partitions, produce, offsets, commit), each of which needs the loop to send
        the next request, so planning in one go would leave the broker idle meanwhile."""
        config = self.config
        engine = self.engine
        assert engine is not None
        self._batch_no += 1
        busy_s = 0.0
        started = time.perf_counter()
        planner = BatchPlanner(
            engine,
            self._chain,
            journal_topic=config.topics.journal,
            events_topic=config.topics.events,
            dlq_topic=config.topics.dlq,
            ledger_id=config.ledger_id,
            max_message_bytes=config.limits.max_message_bytes,
            journal_block_bytes=config.limits.max_journal_record_bytes,
        )
        for begin in range(0, len(records), _PLAN_CHUNK_RECORDS):
            if begin:
                busy_s += time.perf_counter() - started
                await asyncio.sleep(0)
                started = time.perf_counter()
            planner.add(records[begin : begin + _PLAN_CHUNK_RECORDS])
        plan = planner.finish()
        self.metrics.engine_apply_seconds.observe(busy_s + time.perf_counter() - started)
        return self._batch_no, plan

    async def _read_ahead(self, wait_ms: int) -> None:
        """Drain what aiokafka has fetched into the read-ahead buffer."""
        consumer = self._consumer
        assert consumer is not None
        try:
            await drain_fetched(consumer, self._buffer, wait_ms=wait_ms)
        except OffsetOutOfRangeError as exc:
            raise await self._out_of_range(exc) from exc

    async def _commit(self, batch_no: int, plan: BatchPlan) -> None:
        """Write a planned batch in one transaction (journal, events, DLQ, offsets)."""
        config = self.config
        metrics = self.metrics
        producer = self._producer
        assert producer is not None
        # From here until the commit, the engine is ahead of the committed journal.
        where = f"batch {batch_no} (seq {plan.first_seq}..{plan.last_seq})"
        try:
            await producer.begin_transaction()
            with metrics.journal_write_seconds.time():
                futures: list[asyncio.Future[Any]] = []
                # aiokafka retries a produce to a missing partition (e.g. the journal
                # topic deleted under us) forever: bound it, or the daemon hangs silently.
                async with self._bounded(_SENDS):
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
                        # asyncio.wait, not gather: a timeout must not cancel aiokafka's
                        # own delivery futures.
                        await asyncio.wait(futures)
                sent = [future.result() for future in futures]
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
            raise self._fenced(where, exc) from exc
        except _Stuck as exc:
            # No abort: aiokafka sends EndTxn only after the pending sends are flushed, so
            # it would hang on the same sends; and no flush when closing either. The
            # coordinator aborts the open transaction when the restart fences this
            # producer (or after kafka.transaction_timeout_ms).
            self._producer_stuck = True
            cause = await self._missing_journal()
            outcome = (
                "Its transaction was not committed and is left to the coordinator to abort "
                "(nothing of it is visible)"
                if exc.args[0] == _SENDS
                else "Whether its transaction committed is unknown: the journal decides"
            )
            raise DaemonExit(
                EXIT_FAILURE,
                f"{where} timed out: {exc} did not complete within "
                f"{self._stuck_after_s:.1f} s (2 x kafka.request_timeout_ms). {cause}"
                f"{outcome}; exiting so that recovery rebuilds the state from the journal.",
            ) from exc
        except InvariantViolation as exc:
            metrics.set_invariant_ok(False)
            await self._abort()
            raise DaemonExit(
                EXIT_FAILURE,
                f"{where}: ledger invariant violated ({exc}); nothing of this batch was "
                f"committed. This is a bug: keep the journal for the post-mortem.",
            ) from exc
        except asyncio.CancelledError:
            await self._abort()
            raise
        except Exception as exc:
            await self._abort()
            raise DaemonExit(
                EXIT_FAILURE,
                f"{where} failed: {exc!r}. Its transaction was aborted (nothing of it is "
                f"visible); exiting so that recovery rebuilds the state from the journal.",
            ) from exc
        if plan.journal:
            self._journal_offset = sent[len(plan.journal) - 1].offset
        self._positions.update(plan.offsets)
        self.committed_seq = plan.last_seq
        self.batches_committed += 1
        self._observe(batch_no, plan)
        self._heap.add(len(plan.applied))

    def _due(self) -> tuple[bool, bool]:
        """(snapshot due, invariant check due); both False while a child is running
        (one at a time: the next is due again right after)."""
        engine = self.engine
        if engine is None or self._job is not None:
            return False, False
        config = self.config
        snapshot_due = bool(
            config.snapshot_dir
            and engine.seq - self._last_snapshot_seq >= config.snapshot.every_inputs
        )
        check_due = engine.seq - self._last_invariant_seq >= config.limits.invariant_check_inputs
        return snapshot_due, check_due

    def _start_background_work(self) -> None:
        """Fork a child to check the invariants (and snapshot) when one is due; only
        with no transaction open (the child's image must be the committed state).

        The periodic full check and the snapshots run on a copy-on-write image of the
        committed state (see _background.py), so consumption never stalls for them.
        """
        config = self.config
        engine = self.engine
        assert engine is not None
        assert self._inflight is None and engine.seq == self.committed_seq
        snapshot_due, check_due = self._due()
        if not (snapshot_due or check_due):
            return
        writer: Callable[[EngineCore], str] | None = None
        if snapshot_due:
            journal_hash = self._chain.head_hash
            journal_offset = self._journal_offset
            positions = dict(self._positions)

            def writer(state: EngineCore) -> str:
                return write_kafka_snapshot(
                    config,
                    dump_state(state),
                    state.seq,
                    journal_hash,
                    journal_offset,
                    positions,
                    state.account_count(),
                )

            # Next attempt only after another snapshot.every_inputs, even if this one fails.
            self._last_snapshot_seq = engine.seq
        self._last_invariant_seq = engine.seq
        job = start_background_job(engine, writer)
        self._job = job
        self._job_task = asyncio.create_task(self._watch(job), name="clearing-background")

    async def _watch(self, job: BackgroundJob) -> None:
        try:
            result = await job.wait()
        except Exception as exc:  # reaping failed: never leave checks silently stopped
            self._failure = DaemonExit(
                EXIT_FAILURE, f"lost track of the background check at seq {job.seq}: {exc!r}"
            )
            return
        finally:
            self._job = None
        seq = result.seq
        if result.interrupted is not None:
            # Nothing was learnt (a stop of the whole service, or the OOM killer): the
            # next check is due again after another interval.
            log.error(
                "background check%s at seq %d did not finish: %s",
                " and snapshot" if job.wants_snapshot else "",
                seq,
                result.interrupted,
                extra={"seq": seq},
            )
            return
        if result.violation is not None or result.error is not None:
            self.metrics.set_invariant_ok(False)
            what = (
                f"ledger invariant violated at seq {seq}: {result.violation}"
                if result.violation is not None
                else f"the invariant check at seq {seq} failed: {result.error}"
            )
            self._failure = DaemonExit(EXIT_FAILURE, what)
            return
        self.metrics.set_invariant_ok(True)
        if result.snapshot_error is not None:
            # Snapshots only shorten recovery; the journal is the ledger. Keep serving.
            log.error(
                "snapshot at seq %d failed: %s", seq, result.snapshot_error, extra={"seq": seq}
            )
        elif result.snapshot_path is not None:
            self.last_snapshot_path = result.snapshot_path
            self.metrics.set_snapshot_time(time.time_ns())
            self.metrics.snapshot_seconds.observe(result.seconds)
            log.info(
                "snapshot at seq %d written in %.3f s by a background child: %s",
                seq,
                result.seconds,
                result.snapshot_path,
                extra={"seq": seq},
            )

    async def _finish_background_work(self) -> None:
        """Let a running child finish (shutdown), then report what it found."""
        if self._job_task is not None:
            await asyncio.shield(self._job_task)
            self._job_task = None
        if self._failure is not None:
            raise self._failure

    @property
    def _stuck_after_s(self) -> float:
        # Each Kafka request is bounded by request_timeout_ms; allow one retry's worth.
        return 2 * self.config.kafka.request_timeout_ms / 1000

    @contextlib.asynccontextmanager
    async def _bounded(self, what: str) -> AsyncIterator[None]:
        """Raise ``_Stuck(what)`` if the body takes longer than ``_stuck_after_s``."""
        bound = asyncio.timeout(self._stuck_after_s)
        try:
            async with bound:
                yield
        except TimeoutError as exc:
            if bound.expired():  # not some TimeoutError raised inside the body
                raise _Stuck(what) from exc
            raise

    async def _missing_journal(self) -> str:
        """Why a batch may be stuck, if cheaply known: the journal topic is gone."""
        journal = self.config.topics.journal
        if self._admin is None:
            return ""
        try:
            found = await asyncio.wait_for(
                describe_partitions(self._admin, [journal]),
                min(_ABORT_TIMEOUT_S, self.config.kafka.request_timeout_ms / 1000),
            )
        except Exception:  # only a diagnosis
            return ""
        if found.get(journal) is None:
            return (
                f"The journal topic {journal!r} does not exist any more (deleted while "
                f"running?): a person must look; a restart will refuse to start. "
            )
        return ""

    def _fenced(self, where: str, exc: BaseException) -> DaemonExit:
        return DaemonExit(
            EXIT_FENCED,
            f"FENCED: another instance with transactional id {self.config.transactional_id!r} "
            f"(ledger {self.config.ledger_id!r}) has started; {where} was not committed and "
            f"this instance stops without writing anything more. (Kafka reports a "
            f"transaction older than kafka.transaction_timeout_ms the same way.) ({exc!r})",
        )

    async def _abort(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.abort_transaction(), _ABORT_TIMEOUT_S)
            log.warning("transaction aborted")
        except Exception as exc:  # fenced/fatal producers cannot abort; the broker will
            log.warning(
                "could not abort the transaction (%r); the coordinator aborts it when it "
                "times out or when the next instance starts",
                exc,
            )

    async def _fence_probe(self) -> None:
        """An offsets-only transaction: makes an idle zombie notice it has been fenced.

        (An empty transaction would not: aiokafka commits it without asking the broker.)
        It rewrites the already committed offsets, so it changes nothing.
        """
        producer = self._producer
        assert producer is not None
        if not self._positions:
            return
        offsets = {TopicPartition(t, p): o for (t, p), o in self._positions.items()}
        try:
            await producer.begin_transaction()
            await producer.send_offsets_to_transaction(offsets, self.config.group_id)
            await producer.commit_transaction()
        except _FENCED_ERRORS as exc:
            raise self._fenced("an idle fencing probe", exc) from exc
        except Exception as exc:
            await self._abort()
            raise DaemonExit(EXIT_FAILURE, f"idle fencing probe failed: {exc!r}") from exc

    async def _refresh_partitions(self) -> None:
        tps = await self._input_partitions()
        if set(tps) != set(self._assigned):
            log.info("input partitions changed: reassigning (%d partitions)", len(tps))
            await self._assign()

    # -- reporting, invariants, snapshots -------------------------------------------------

    def _check_invariants(self) -> None:
        engine = self.engine
        assert engine is not None
        engine.check_invariants()
        self._last_invariant_seq = engine.seq
        self.metrics.set_invariant_ok(True)

    def _observe(self, batch_no: int, plan: BatchPlan) -> None:
        metrics = self.metrics
        now_ns = time.time_ns()
        metrics.observe_batch(plan.applied, plan.first_seq, plan.outputs, now_ns, plan.kinds)
        dlq_by_topic: dict[str, int] = {}
        for message in plan.dlq:
            topic = dict(message.headers)[HEADER_SOURCE_TOPIC].decode()
            dlq_by_topic[topic] = dlq_by_topic.get(topic, 0) + 1
        for topic, count in dlq_by_topic.items():
            metrics.observe_dlq(topic, count)
        if plan.last_timestamp_ms > 0:
            metrics.observe_applied(plan.last_timestamp_ms * 1_000_000, now_ns)
        metrics.set_journal_seq(plan.last_seq)
        if plan.oversized or plan.rejects:
            log.info(
                "batch %d: %d rejected and %d oversized inputs sent to %s",
                batch_no,
                plan.rejects,
                plan.oversized,
                self.config.topics.dlq,
                extra={"seq": plan.last_seq},
            )
        self._dead_letters.log(plan.dlq, time.monotonic())
        _log_ledger_changes(batch_no, plan)

    def _update_gauges(self) -> None:
        engine, consumer = self.engine, self._consumer
        if engine is None or consumer is None:
            return
        self.metrics.update_ledger(engine, time.time_ns())
        for tp in self._assigned:
            end = consumer.last_stable_offset(tp) or consumer.highwater(tp)
            position = self._positions.get((tp.topic, tp.partition))
            if end is not None and position is not None:
                self.metrics.set_partition_lag(tp.topic, tp.partition, max(0, end - position))

    async def _snapshot(self) -> None:
        """Snapshot the committed state (only ever called between batches)."""
        config = self.config
        engine = self.engine
        if config.snapshot_dir is None or engine is None:
            return
        if engine.seq <= self._last_snapshot_seq or engine.seq != self.committed_seq:
            return
        try:
            self._check_invariants()
        except InvariantViolation as exc:
            self.metrics.set_invariant_ok(False)
            raise DaemonExit(
                EXIT_FAILURE, f"ledger invariant violated at seq {engine.seq}: {exc}"
            ) from exc
        started = time.perf_counter()
        state = dump_state(engine)
        # Next attempt only after another snapshot.every_inputs, even if this one fails.
        self._last_snapshot_seq = engine.seq
        try:
            with self.metrics.snapshot_seconds.time():
                path = await asyncio.to_thread(
                    write_kafka_snapshot,
                    config,
                    state,
                    engine.seq,
                    self._chain.head_hash,
                    self._journal_offset,
                    dict(self._positions),
                    engine.account_count(),
                )
        except OSError as exc:
            # Snapshots only shorten recovery; the journal is the ledger. Keep serving.
            log.error("snapshot at seq %d failed: %s", engine.seq, exc, extra={"seq": engine.seq})
            return
        self.last_snapshot_path = path
        self.metrics.set_snapshot_time(time.time_ns())
        log.info(
            "snapshot at seq %d (journal offset %d) written in %.3f s: %s",
            engine.seq,
            self._journal_offset,
            time.perf_counter() - started,
            path,
            extra={"seq": engine.seq},
        )
