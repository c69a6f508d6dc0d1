"""The daemon's upkeep: invariant checks and snapshots of the committed state, when the
sequencer's schedule (``clearing.sequencer.UpkeepSchedule``) says they are due.

While serving, the work runs in a forked child (``_background``) on a copy-on-write
image of the state as of the last committed batch, so consumption never stalls for it;
the child's verdict comes back to the loop as a ``DaemonExit`` to raise (a violation) or
a log line (a failed snapshot: snapshots only shorten recovery). At shutdown the last
snapshot is written in place, after a check on the loop. Each snapshot written is then
published to the snapshot topic (``_snapshot_topic``) on the loop, one at a time; a
failed publication is a log line, like a failed snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from clearing.engine import EngineCore, InvariantViolation
from clearing.engine.persist import dump_state
from clearing.kafka._background import BackgroundJob, start_background_job
from clearing.kafka._exits import EXIT_FAILURE, DaemonExit
from clearing.kafka._recovery import Positions, write_kafka_snapshot
from clearing.kafka._snapshot_topic import SnapshotPublisher
from clearing.ops.config import Config
from clearing.ops.metrics import Metrics
from clearing.sequencer import Sequencer

__all__ = ["Upkeep"]

log = logging.getLogger("clearing.kafka")


class Upkeep:
    """Runs the due checks and snapshots of ``sequencer``'s engine, one child at a time."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        sequencer: Sequencer,
        publisher: SnapshotPublisher | None = None,
    ) -> None:
        self._config = config
        self._publisher = publisher
        self._publishing: asyncio.Task[None] | None = None
        self._next_path: str | None = None  # written, waiting to be published
        self._metrics = metrics
        self._sequencer = sequencer
        self.last_snapshot_path: str | None = None
        self._job: BackgroundJob | None = None  # the forked check/snapshot child, if any
        self._job_task: asyncio.Task[None] | None = None
        self.failure: DaemonExit | None = None  # what a child found, raised by the loop

    def due(self) -> bool:
        """A check or snapshot is due; never while a child is running (one at a time:
        the next is due again right after)."""
        if self._job is not None:
            return False
        return any(self._sequencer.schedule.due(self._sequencer.engine.seq))

    def start(self, journal_offset: int, positions: Positions) -> None:
        """Fork a child to check the invariants (and snapshot) when one is due; only
        with no transaction open (the child's image must be the committed state, which
        ``journal_offset`` and ``positions`` describe)."""
        if not self.due():
            return
        config = self._config
        sequencer = self._sequencer
        engine = sequencer.engine
        schedule = sequencer.schedule
        writer: Callable[[EngineCore], str] | None = None
        if schedule.snapshot_due(engine.seq):
            journal_hash = sequencer.chain.head_hash
            positions = dict(positions)

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
            schedule.snapshot_attempted(engine.seq)
        schedule.checked(engine.seq)
        job = start_background_job(engine, writer)
        self._job = job
        self._job_task = asyncio.create_task(self._watch(job), name="clearing-background")

    async def _watch(self, job: BackgroundJob) -> None:
        try:
            result = await job.wait()
        except Exception as exc:  # reaping failed: never leave checks silently stopped
            self.failure = DaemonExit(
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
            self._metrics.set_invariant_ok(False)
            what = (
                f"ledger invariant violated at seq {seq}: {result.violation}"
                if result.violation is not None
                else f"the invariant check at seq {seq} failed: {result.error}"
            )
            self.failure = DaemonExit(EXIT_FAILURE, what)
            return
        self._metrics.set_invariant_ok(True)
        if result.snapshot_error is not None:
            # Snapshots only shorten recovery; the journal is the ledger. Keep serving.
            log.error(
                "snapshot at seq %d failed: %s", seq, result.snapshot_error, extra={"seq": seq}
            )
        elif result.snapshot_path is not None:
            self.last_snapshot_path = result.snapshot_path
            self._publish(result.snapshot_path)
            self._metrics.set_snapshot_time(time.time_ns())
            self._metrics.snapshot_seconds.observe(result.seconds)
            log.info(
                "snapshot at seq %d written in %.3f s by a background child: %s",
                seq,
                result.seconds,
                result.snapshot_path,
                extra={"seq": seq},
            )

    def _publish(self, path: str) -> None:
        """Publish ``path`` to the snapshot topic in the background, one publication at
        a time; a snapshot written meanwhile is published next (only the newest one
        waiting: an older one would be pruned at once)."""
        if self._publisher is None:
            return
        self._next_path = path
        if self._publishing is None or self._publishing.done():
            self._publishing = asyncio.create_task(
                self._publish_waiting(self._publisher), name="clearing-snapshot-publish"
            )

    async def _publish_waiting(self, publisher: SnapshotPublisher) -> None:
        while self._next_path is not None:
            path, self._next_path = self._next_path, None
            await publisher.publish(path)

    async def published(self) -> None:
        """Wait for the running publication, if any (it logs its own failure)."""
        if self._publishing is not None:
            await asyncio.shield(self._publishing)

    async def finish(self) -> None:
        """Let a running child finish (shutdown), then report what it found."""
        if self._job_task is not None:
            await asyncio.shield(self._job_task)
            self._job_task = None
        await self.published()
        if self.failure is not None:
            raise self.failure

    def kill(self) -> None:
        """Exiting anyway: stop a running child, its result no longer matters."""
        if self._job is not None:
            self._job.kill()
            self._job = None
        if self._job_task is not None:
            self._job_task.cancel()
        if self._publishing is not None:
            self._publishing.cancel()

    async def snapshot_now(self, journal_offset: int, positions: Positions) -> None:
        """Check and snapshot the committed state in place (only between batches)."""
        config = self._config
        sequencer = self._sequencer
        engine = sequencer.engine
        if config.snapshot_dir is None or engine.seq <= sequencer.last_snapshot_seq:
            return
        try:
            sequencer.check_invariants()
        except InvariantViolation as exc:
            self._metrics.set_invariant_ok(False)
            raise DaemonExit(
                EXIT_FAILURE, f"ledger invariant violated at seq {engine.seq}: {exc}"
            ) from exc
        self._metrics.set_invariant_ok(True)
        started = time.perf_counter()
        state = dump_state(engine)
        # Next attempt only after another snapshot.every_inputs, even if this one fails.
        sequencer.schedule.snapshot_attempted(engine.seq)
        try:
            with self._metrics.snapshot_seconds.time():
                path = await asyncio.to_thread(
                    write_kafka_snapshot,
                    config,
                    state,
                    engine.seq,
                    sequencer.chain.head_hash,
                    journal_offset,
                    dict(positions),
                    engine.account_count(),
                )
        except OSError as exc:
            # Snapshots only shorten recovery; the journal is the ledger. Keep serving.
            log.error("snapshot at seq %d failed: %s", engine.seq, exc, extra={"seq": engine.seq})
            return
        self.last_snapshot_path = path
        self._metrics.set_snapshot_time(time.time_ns())
        log.info(
            "snapshot at seq %d (journal offset %d) written in %.3f s: %s",
            engine.seq,
            journal_offset,
            time.perf_counter() - started,
            path,
            extra={"seq": engine.seq},
        )
        self._publish(path)
        await self.published()
