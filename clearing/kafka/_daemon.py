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
commit are bounded (2 x ``kafka.request_timeout_ms``; for the sends, without an answer
from the broker, so a large batch that keeps moving completes): aiokafka would otherwise
retry a send to a deleted journal topic forever. Input positions are never reset
silently: an input partition truncated past the ledger's position exits
``EXIT_RECOVERY``; rejected credentials or missing ACLs exit ``EXIT_CONFIG``.
SIGTERM/SIGINT (``request_stop``) stops consuming, lets the open transaction commit,
writes a snapshot and exits 0, all within ``daemon.shutdown_timeout_s``; past that bound
the transaction is aborted and the exit is ``EXIT_SHUTDOWN_TIMEOUT``.

Startup order matters: the transactional producer starts (InitProducerId fences every
older instance and completes or aborts its open transaction) *before* the journal's end
is read, so nothing can be committed behind recovery's back.

This module is the loop and the lifecycle. The inputs are numbered, applied and
journalled by the one sequencer (``clearing.sequencer.Sequencer.step``, through
``_batch.BatchPlanner``); the rest lives beside it: ``_transaction`` (the Kafka sink:
one transaction per batch), ``_assignment`` (input partitions and where each starts),
``_upkeep`` (invariant checks and snapshots as the sequencer's schedule says, in a forked
child, ``_background``), ``_fund_risk`` (fund adequacy every ``risk.interval_s``, in a
forked child too; its oracle history read back after a restart, ``_oracle_backfill``),
``_exits`` (exit codes and ``DaemonExit``), ``_threads`` (blocking calls off the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import OffsetOutOfRangeError

from clearing.engine import EngineCore
from clearing.engine.events import Clawback
from clearing.errors import RulesVersionMismatch
from clearing.heap import settle_heap, streaming_collections
from clearing.journal import JournalError
from clearing.kafka._assignment import Assignment
from clearing.kafka._batch import (
    HEADER_SOURCE_TOPIC,
    BatchPlan,
    BatchPlanner,
    Consumed,
    InputBuffer,
)
from clearing.kafka._clients import (
    ACCESS_ERRORS,
    access_error_message,
    make_consumer,
    make_producer,
)
from clearing.kafka._connect import ConnectError, start_admin
from clearing.kafka._dead_letters import DeadLetterLog
from clearing.kafka._election import Election
from clearing.kafka._exits import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_FENCED,
    EXIT_OK,
    EXIT_RECOVERY,
    EXIT_SHUTDOWN_TIMEOUT,
    DaemonExit,
)
from clearing.kafka._follow import JournalFollower
from clearing.kafka._fund_risk import FundRisk
from clearing.kafka._recovery import (
    KafkaRecovery,
    Positions,
    check_rules_version,
    recover_from_kafka,
)
from clearing.kafka._snapshot_topic import SnapshotPublisher
from clearing.kafka._threads import in_daemon_thread
from clearing.kafka._topics import describe_partitions, input_limit_warnings
from clearing.kafka._transaction import BeforeCommit, Transactions, retrieve_fatal_error
from clearing.kafka._upkeep import Upkeep
from clearing.ops.config import Config, ConfigError
from clearing.ops.http import OpsServer
from clearing.ops.metrics import Metrics
from clearing.ops.read_api import ReadApi
from clearing.ops.reads import CommittedReads
from clearing.ops.state_hash import CommittedStateHash
from clearing.sequencer import RecoveryError, Sequencer

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

# Client shutdown is best effort on the way out; never let it hang the exit.
_CLOSE_TIMEOUT_S: Final = 10.0
_STUCK_CLOSE_TIMEOUT_S: Final = 1.0
# Ledger gauges cost O(positions) on the loop; Prometheus scrapes every 15 s anyway.
_LEDGER_METRICS_INTERVAL_S: Final = 5.0
# The event loop runs the open transaction's round trips (add partitions, produce,
# offsets, commit), each only when the loop gets control back; the batch's CPU work
# (parsing fetched records, planning) yields to it after this many records, ~0.5 ms of
# work, so that each step waits that long at most.
_PLAN_CHUNK_RECORDS: Final = 100
# A standby answers reads between journal fetches, which wait up to 100 ms for new
# records; while readers come (a read answered within _READERS_RECENT_S), it waits at
# most this long, so an idle journal does not hold their answers back.
_STANDBY_READS_POLL_MS: Final = 10
_STANDBY_IDLE_POLL_MS: Final = 100
_READERS_RECENT_S: Final = 1.0
_DRAIN_CHUNK_RECORDS: Final = 500


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
        self._lost = asyncio.Event()  # the control partition went to another process
        self._rank = {topic: rank for rank, topic in enumerate(config.topics.inputs)}
        self.engine: EngineCore | None = None
        self.recovery: KafkaRecovery | None = None
        self.committed_seq = 0
        self.batches_committed = 0
        self._sequencer: Sequencer | None = None  # numbers, applies and chains the inputs
        self._upkeep: Upkeep | None = None  # invariant checks and snapshots
        self._fund_risk: FundRisk | None = None  # fund adequacy, when risk.interval_s > 0
        self._publisher: SnapshotPublisher | None = None  # snapshots to the snapshot topic
        self._election: Election | None = None  # the control group: who is active
        self._follower: JournalFollower | None = None  # standby: the journal follower
        self.role = config.daemon.role  # what this process does now
        self._transactions: Transactions | None = None  # the sink: one per batch
        self._inputs: Assignment | None = None  # the input partitions and their positions
        self._journal_offset = -1
        self._positions: Positions = {}
        self._buffer = InputBuffer(self._rank)  # consumed, not planned yet
        self._dead_letters = DeadLetterLog(config.topics.dlq)  # rate-limited lines
        self._inflight: asyncio.Task[None] | None = None  # the open transaction's commit
        self._batch_no = 0
        self._producer: AIOKafkaProducer | None = None
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

    @property
    def last_snapshot_path(self) -> str | None:
        return None if self._upkeep is None else self._upkeep.last_snapshot_path

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
        lost = asyncio.create_task(self._lost.wait())
        try:
            await asyncio.wait({main, stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
            if not main.done() and lost.done():
                # Whatever the loop waits for (a commit, a probe), this process is no
                # longer the elected one: never wait for it to find out by itself.
                log.error(
                    "FENCED: this process lost the control partition (another process "
                    "started as active, or its group session ended: paused, partitioned or "
                    "too slow). Stopping without writing anything more."
                )
                await self._cancel(main)
                return EXIT_FENCED
            if not main.done():
                bound_s = self.config.daemon.shutdown_timeout_s
                try:
                    await asyncio.wait_for(asyncio.shield(main), bound_s)
                except TimeoutError:
                    log.error(
                        "shutdown did not finish within %.1f s: aborting the open transaction",
                        bound_s,
                    )
                    await self._cancel(main)
                    return EXIT_SHUTDOWN_TIMEOUT
            return main.result()
        finally:
            stopping.cancel()
            lost.cancel()

    @staticmethod
    async def _cancel(main: asyncio.Task[int]) -> None:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await main

    # -- lifecycle -----------------------------------------------------------------------

    async def _main(self) -> int:
        try:
            await self._serve()
            log.info("stopped cleanly at seq %d", self.committed_seq)
            return EXIT_OK
        except DaemonExit as exc:
            log.error("%s", exc.message)
            return exc.code
        except RulesVersionMismatch as exc:  # a standby's: the restart takes the topic's
            log.error("%s", exc)
            return EXIT_FAILURE
        except (RecoveryError, JournalError) as exc:
            log.critical("refusing to start: %s", exc)
            return EXIT_RECOVERY
        except ConfigError as exc:  # found only against the topics (engine.rules_version)
            log.critical("refusing to start: %s", exc)
            return EXIT_CONFIG
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
        if config.engine.rules_version is not None:
            # A version the topic did not record stops here, before this process can
            # fence the running active; recovery checks again (the topic may be empty).
            await in_daemon_thread(check_rules_version, config)

        # Kafka decides who writes: an active process claims the control partition
        # (and gets it at its first join), a standby follows the journal until elected.
        follower: JournalFollower | None = None
        if await self._join_election():
            if self.role == "standby":
                follower = await self._follow_until_elected()
            else:
                await self._wait_elected()
            if self._stop.is_set():
                if follower is not None:
                    await follower.stop()
                return  # stopped before this process was ever the active one

        metrics.set_ready(False, "fencing older instances")
        self._producer = make_producer(config)
        await self._producer.start()
        self._transactions = Transactions(
            config, metrics, self._producer, self._admin, self._before_commit
        )
        log.info(
            "transactional producer %r initialised: any older instance of ledger %r is fenced",
            config.transactional_id,
            config.ledger_id,
        )

        if follower is not None:
            recovery = await self._promote(follower)
        else:
            metrics.set_ready(False, "recovering from the journal")
            recovery = await self._recover()
        self._adopt(recovery)

        self._consumer = make_consumer(config)
        await self._consumer.start()
        self._inputs = Assignment(
            config, self._consumer, self._admin, self._positions, self._buffer
        )
        await self._inputs.assign(first=True, journal_empty=recovery.chain.last_seq == 0)
        if not self._stop.is_set():
            metrics.set_ready(True)
        log.info(
            "ready: ledger %r at seq %d; consuming %s",
            config.ledger_id,
            self.committed_seq,
            ", ".join(f"{tp.topic}:{tp.partition}" for tp in self._inputs.assigned),
        )
        with streaming_collections():
            await self._consume()
        # Hand over at once: a standby may promote while the last snapshot is written.
        await self._leave_election()
        assert self._upkeep is not None
        await self._upkeep.finish()
        if config.snapshot_dir and config.snapshot.on_shutdown and self._settled():
            await self._upkeep.snapshot_now(self._journal_offset, self._positions)

    # -- active or standby ------------------------------------------------------------------

    async def _recover(self) -> KafkaRecovery:
        beating = asyncio.create_task(self._beat_while_recovering())
        try:
            return await in_daemon_thread(recover_from_kafka, self.config)
        finally:
            beating.cancel()

    async def _join_election(self) -> bool:
        """Join the control group; False when there is none (no control topic: an active
        process then runs unelected, as before standbys existed)."""
        control = self.config.topics.control
        assert self._admin is not None
        if (await describe_partitions(self._admin, [control])).get(control) is None:
            if self.role == "standby":
                raise DaemonExit(
                    EXIT_RECOVERY,
                    f"refusing to start as a standby: control topic {control!r} does not "
                    f"exist. Create it with `clearing topics create --config FILE`.",
                )
            log.warning(
                "control topic %r does not exist: running without an election (no standby "
                "can take over); create it with `clearing topics create`",
                control,
            )
            return False
        self._election = Election(self.config, on_lost=self._lost.set)
        await self._election.join()
        self.metrics.set_role(self.role)
        return True

    async def _leave_election(self) -> None:
        if self._election is not None:
            election, self._election = self._election, None
            try:
                await asyncio.wait_for(election.leave(), _CLOSE_TIMEOUT_S)
            except Exception as exc:  # the session timeout hands over instead
                log.warning("leaving the control group failed: %r", exc)

    async def _wait_elected(self) -> None:
        """Active: wait for the group to hand over the partition (at once, unless a
        dead holder's session must expire first)."""
        election = self._election
        assert election is not None
        self.metrics.set_ready(False, "joining the control group")
        while not (election.elected.is_set() or self._stop.is_set()):
            if election.failure is not None:
                raise election.failure
            if self._server is not None:
                self._server.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(election.elected.wait(), 1.0)

    async def _follow_until_elected(self) -> JournalFollower:
        """Standby: recover, then apply the journal as the active commits it, answering
        the read API between polls (a read replica: the active pays nothing for those
        readers; the answers are as stale as the standby's lag)."""
        election, metrics = self._election, self.metrics
        assert election is not None
        metrics.set_ready(False, "standby: recovering")
        recovery = await self._recover()
        follower = self._follower = JournalFollower(self.config, recovery)
        await follower.start()
        self.engine = follower.engine
        metrics.set_ready(False, "standby: following the journal")
        metrics.set_following()  # a read replica from here: the read API answers
        log.info(
            "standby: recovered to seq %d in %.2f s; following %s",
            recovery.engine.seq,
            recovery.seconds,
            self.config.topics.journal,
        )
        loop = asyncio.get_running_loop()
        last_report = last_read = 0.0
        while not (election.elected.is_set() or self._stop.is_set()):
            if election.failure is not None:
                raise election.failure
            if self._server is not None:
                self._server.beat()
            readers = loop.time() - last_read < _READERS_RECENT_S
            await follower.poll(_STANDBY_READS_POLL_MS if readers else _STANDBY_IDLE_POLL_MS)
            self.committed_seq = follower.chain.last_seq
            if self.reads.wanted:  # every record applied here is committed: no ``after``
                self.reads.answer(follower.engine)
                last_read = loop.time()
            # Per poll (a gauge set): the lag in records is the active's seq minus this.
            self.metrics.set_journal_seq(self.committed_seq)
            if loop.time() - last_report >= 1.0:
                await self._report_lag(follower)
                last_report = loop.time()
        return follower

    async def _report_lag(self, follower: JournalFollower) -> None:
        behind = max(0, await follower.end_offset() - await follower.position())
        lag_s = follower.lag_seconds() if behind else 0.0
        in_sync = lag_s <= self.config.daemon.standby_sync_s
        self.metrics.set_standby_lag(behind, lag_s, in_sync)
        self.metrics.set_journal_seq(follower.chain.last_seq)

    async def _promote(self, follower: JournalFollower) -> KafkaRecovery:
        """Elected standby: the producer has fenced the old active (its open transaction
        is aborted), so the journal's end is final: apply up to it, then serve. Meanwhile
        new reads get 503 "promoting" (``set_ready(False)`` ends the standby's reads);
        reads already queued are answered at the active loop's first batch boundary."""
        started = time.perf_counter()
        self.metrics.set_ready(False, "promoting: catching up with the journal")
        await follower.catch_up()
        await follower.stop()
        self._follower = None
        self.role = "active"
        self.metrics.set_role("active")
        self.metrics.failovers.inc()
        log.warning(
            "promoted to active at seq %d: caught up in %.3f s",
            follower.chain.last_seq,
            time.perf_counter() - started,
            extra={"seq": follower.chain.last_seq},
        )
        return follower.as_recovery(started)

    def _adopt(self, recovery: KafkaRecovery) -> None:
        self.recovery = recovery
        self.engine = recovery.engine
        config = self.config
        self._sequencer = Sequencer(
            recovery.engine,
            chain=recovery.chain,
            snapshot_every_inputs=config.snapshot.every_inputs if config.snapshot_dir else None,
            invariant_check_inputs=config.limits.invariant_check_inputs,
            last_snapshot_seq=recovery.snapshot_seq,
        )
        if config.snapshot_dir and config.snapshot.publish:
            self._publisher = SnapshotPublisher(config)
        self._upkeep = Upkeep(config, self.metrics, self._sequencer, self._publisher)
        if config.risk.interval_s > 0:
            fund_metrics = self.metrics.enable_fund_risk(config.risk.interval_s)
            self._fund_risk = FundRisk(
                config.risk, fund_metrics, time.monotonic(), recovery.oracle_history
            )
            self._fund_risk.rebuild_history(config, recovery)  # in a thread, off the loop
        self._journal_offset = recovery.journal_offset
        self._positions = dict(recovery.positions)
        self.committed_seq = recovery.engine.seq
        if recovery.snapshot_path is not None:
            self.metrics.set_snapshot_time(time.time_ns())
        self.metrics.set_journal_seq(recovery.chain.last_seq)
        self.metrics.update_ledger(recovery.engine, time.time_ns())
        self.metrics.set_invariant_ok(True)
        settle_heap()
        log.info(
            "recovered to seq %d in %.2f s: snapshot %s (seq %d%s) + %d journal records "
            "replayed with outputs verified",
            recovery.engine.seq,
            recovery.seconds,
            recovery.snapshot_path or "none",
            recovery.snapshot_seq,
            ", restored from the snapshot topic" if recovery.restored_seq else "",
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
        if self._upkeep is not None:
            self._upkeep.kill()
        if self._fund_risk is not None:
            self._fund_risk.kill()
        if self._producer is not None:
            retrieve_fatal_error(self._producer)
        # producer.stop() flushes the pending sends first: hopeless after a stuck batch.
        stuck = self._transactions is not None and self._transactions.stuck
        producer_close_s = _STUCK_CLOSE_TIMEOUT_S if stuck else _CLOSE_TIMEOUT_S
        await self._leave_election()
        for closer, timeout_s in (
            (self._follower.stop if self._follower else None, _CLOSE_TIMEOUT_S),
            (self._consumer.stop if self._consumer else None, _CLOSE_TIMEOUT_S),
            (self._publisher.close if self._publisher else None, _CLOSE_TIMEOUT_S),
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
        self._follower = None

    # -- assignment ----------------------------------------------------------------------

    # -- the loop ------------------------------------------------------------------------

    async def _consume(self) -> None:
        """Poll, plan, commit. Batches are pipelined one deep: batch N+1 is planned (the
        engine's CPU work) while batch N's transaction is in flight (the broker's work);
        transactions themselves stay strictly one after another, and anything that needs
        the engine to equal the committed state (background checks and snapshots,
        reassignment, fencing probes, shutdown) waits for the open one first."""
        config = self.config
        upkeep, transactions, inputs = self._upkeep, self._transactions, self._inputs
        assert upkeep is not None and transactions is not None and inputs is not None
        loop = asyncio.get_running_loop()
        idle_since = last_metrics = last_refresh = loop.time()
        try:
            while not self._stop.is_set():
                if upkeep.failure is not None:
                    raise upkeep.failure
                if self._election is not None and self._election.failure is not None:
                    raise self._election.failure
                if self._server is not None:
                    self._server.beat()
                if upkeep.due():
                    # The child's image must be the committed state: no transaction open.
                    await self._settle()
                    assert self._inflight is None and self._settled()
                    upkeep.start(self._journal_offset, self._positions)
                fund_risk = self._fund_risk
                if fund_risk is not None and fund_risk.due(time.monotonic()):
                    await self._settle()  # the child's image must be the committed state
                    assert self._inflight is None and self._settled()
                    fund_risk.start(self.engine, time.monotonic())  # type: ignore[arg-type]
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
                        await transactions.fence_probe(self._positions)
                        idle_since = now
                if now - last_metrics >= _LEDGER_METRICS_INTERVAL_S:
                    self._update_gauges()
                    last_metrics = now
                if now - last_refresh >= config.daemon.partition_refresh_interval_s:
                    await self._settle()
                    await inputs.refresh()
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

    def _settled(self) -> bool:
        """The engine holds exactly the committed state (nothing planned in between)."""
        return self.engine is not None and self.engine.seq == self.committed_seq

    async def _plan(self, records: list[Consumed]) -> tuple[int, BatchPlan]:
        """Apply a batch to the engine and build its messages (no I/O). In chunks, with
        the event loop run in between: the open transaction is a chain of round trips
        (add partitions, produce, offsets, commit), each of which needs the loop to send
        the next request, so planning in one go would leave the broker idle meanwhile."""
        config = self.config
        sequencer = self._sequencer
        assert sequencer is not None
        self._batch_no += 1
        busy_s = 0.0
        started = time.perf_counter()
        planner = BatchPlanner(
            sequencer,
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
        consumer, inputs = self._consumer, self._inputs
        assert consumer is not None and inputs is not None
        try:
            await drain_fetched(consumer, self._buffer, wait_ms=wait_ms)
        except OffsetOutOfRangeError as exc:
            raise await inputs.out_of_range(exc) from exc

    async def _commit(self, batch_no: int, plan: BatchPlan) -> None:
        """Write a planned batch in one transaction (journal, events, DLQ, offsets), then
        take it as committed."""
        transactions, sequencer = self._transactions, self._sequencer
        assert transactions is not None and sequencer is not None
        journal_offset = await transactions.commit(batch_no, plan)
        if journal_offset is not None:
            self._journal_offset = journal_offset
        self._positions.update(plan.offsets)
        self.committed_seq = plan.last_seq
        self.batches_committed += 1
        self._observe(batch_no, plan)
        sequencer.committed(len(plan.applied))

    # -- reporting ------------------------------------------------------------------------

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
        if self._fund_risk is not None:
            self._fund_risk.observe(plan.applied, plan.kinds)
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
        for tp in self._inputs.assigned if self._inputs is not None else ():
            end = consumer.last_stable_offset(tp) or consumer.highwater(tp)
            position = self._positions.get((tp.topic, tp.partition))
            if end is not None and position is not None:
                self.metrics.set_partition_lag(tp.topic, tp.partition, max(0, end - position))
