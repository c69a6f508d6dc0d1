"""The sequencer: numbers inputs, applies them to the engine, journals them, and
schedules the upkeep (invariant checks, snapshots). Every writer uses it: ``clearing
ingest``, the demo, the simulator and the Kafka daemon.

    source -> **sequencer** -> journal -> engine -> sinks

``step`` is the shared part: one batch of ``(source, raw input)`` applied in memory (the
engine is pure and fast) and turned into journal records on the hash chain
(``clearing.sequencer._step``), nothing written yet. A sink then commits the step:

* the local journal (``submit``): the records are appended as one group commit, and only
  after the append returns are the outputs handed back to be emitted; the upkeep then
  runs inline;
* one Kafka transaction (``clearing.kafka``): the daemon builds the step's messages,
  commits them with the input offsets, and runs the upkeep in a forked child.

If a sink fails, the in-memory state is ahead of the journal: the sequencer refuses
further work and the process must recover from the journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from clearing.engine import EngineCore, InvariantViolation, OutputEvent
from clearing.engine.events import decode_output
from clearing.engine.persist import dump_state
from clearing.errors import SequencerBroken
from clearing.heap import HeapSettler, settle_heap
from clearing.journal import Journal, LocalJournal
from clearing.journal._scan import ScanMode
from clearing.sequencer._recovery import RecoveryResult, recover
from clearing.sequencer._schedule import (
    DEFAULT_INVARIANT_CHECK_INPUTS,
    DEFAULT_KEEP_SNAPSHOTS,
    DEFAULT_SNAPSHOT_EVERY_INPUTS,
    UpkeepSchedule,
)
from clearing.sequencer._step import JournalChain, Step, decode_record, sequence
from clearing.snapshot import prune, write_snapshot
from clearing.storage import Storage

__all__ = [
    "DEFAULT_INVARIANT_CHECK_INPUTS",
    "DEFAULT_KEEP_SNAPSHOTS",
    "DEFAULT_SNAPSHOT_EVERY_INPUTS",
    "Sequencer",
    "SequencerBroken",
]

log = logging.getLogger(__name__)


class Sequencer:
    """The one sequencer over ``engine``.

    With a local ``journal`` (embedded mode) ``submit`` commits each step to it and
    snapshots go to ``snapshot_dir``. Without one (the Kafka daemon, whose sink is a
    transaction it commits itself) ``chain`` gives the journal's position, and the caller
    runs the upkeep that ``schedule`` says is due.
    """

    def __init__(
        self,
        engine: EngineCore,
        journal: Journal | None = None,
        snapshot_dir: str | None = None,
        *,
        chain: JournalChain | None = None,
        snapshot_every_inputs: int | None = DEFAULT_SNAPSHOT_EVERY_INPUTS,
        keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
        invariant_check_inputs: int = DEFAULT_INVARIANT_CHECK_INPUTS,
        last_snapshot_seq: int | None = None,
        storage: Storage | None = None,
    ) -> None:
        if journal is not None:
            if chain is not None:
                raise ValueError("pass a journal or a chain, not both")
            chain = JournalChain(journal.last_seq, journal.head_hash)
        elif chain is None:
            chain = JournalChain()
        if engine.seq != chain.last_seq:
            raise ValueError(f"engine at seq {engine.seq} but journal at {chain.last_seq}")
        self.engine = engine
        self.journal = journal
        self.chain = chain
        self.snapshot_dir = snapshot_dir
        self.keep_snapshots = keep_snapshots
        self.storage = storage  # snapshots are written through it (None: the real disk)
        self.schedule = UpkeepSchedule(
            engine.seq,
            snapshot_every_inputs=snapshot_every_inputs,
            invariant_check_inputs=invariant_check_inputs,
            last_snapshot_seq=last_snapshot_seq,
        )
        self._broken: str | None = None
        self._heap = HeapSettler()

    @classmethod
    def open_local(
        cls,
        journal_dir: str,
        snapshot_dir: str | None = None,
        *,
        fsync: str = "batch",
        core: str = "python",
        scan_mode: ScanMode = "full",
        rules_version: int | None = None,
        **options: int,
    ) -> tuple[Sequencer, RecoveryResult]:
        """Open (or create) a local journal, recover the engine on the named core
        ("python", "native" or "auto"), and return a sequencer.

        ``scan_mode="full"`` verifies every record of the journal before recovery;
        ``"tail"`` checks the earlier segments' headers only and verifies the last
        segment, the records recovery replays and the chain hash the snapshot was taken
        at: a faster restart that leaves the full check to ``clearing journal verify``.
        ``rules_version`` is for a new journal (default 1); an existing one keeps its own.
        """
        journal = LocalJournal(
            journal_dir,
            fsync=fsync,
            scan_mode=scan_mode,  # type: ignore[arg-type]
            rules_version=rules_version,
        )
        return cls.over(journal, snapshot_dir, core=core, **options)

    @classmethod
    def over(
        cls, journal: Journal, snapshot_dir: str | None = None, *, core: str = "python",
        storage: Storage | None = None, **options: int,
    ) -> tuple[Sequencer, RecoveryResult]:  # fmt: skip
        """Recover the engine from ``journal`` (and ``snapshot_dir``) and return a
        sequencer writing to it (snapshots through ``storage``); the journal is closed if
        recovery fails."""
        try:
            result = recover(snapshot_dir, journal, core=core, rules_version=journal.rules_version)
        except BaseException:
            journal.close()
            raise
        return cls(result.engine, journal, snapshot_dir, storage=storage, **options), result

    # -- the step every writer shares ----------------------------------------------------

    @property
    def last_snapshot_seq(self) -> int:
        return self.schedule.last_snapshot_seq

    def step(self, payloads: list[bytes], sources: list[str]) -> Step:
        """Number and apply one batch (``payloads[i]`` came from ``sources[i]``) and build
        its journal records. Nothing is durable until a sink commits the step."""
        if self._broken:
            raise SequencerBroken(self._broken)
        try:
            return sequence(self.engine, self.chain, payloads, sources)
        except BaseException as exc:
            self._broken = f"batch ending at seq {self.engine.seq} failed: {exc!r}"
            raise

    def committed(self, inputs: int) -> None:
        """A sink made a step of ``inputs`` records durable."""
        self._heap.add(inputs)

    # -- the local journal sink ----------------------------------------------------------

    def submit(self, inputs: Sequence[tuple[str, bytes]]) -> list[OutputEvent]:
        """Apply and journal one batch of ``(source, raw input)``; return its outputs."""
        journal = self.journal
        if journal is None:
            raise TypeError("this sequencer has no local journal: commit its steps yourself")
        if self._broken:
            raise SequencerBroken(self._broken)
        engine = self.engine
        sources = [source for source, _ in inputs]
        payloads = [payload for _, payload in inputs]
        produced: list[OutputEvent] = []
        try:
            done = self.step(payloads, sources)
            journal.append(map(decode_record, done.records))
            self.committed(len(done.records))
            for _, encoded in done.outputs:
                produced.extend(map(decode_output, encoded))
            if self.schedule.check_due(engine.seq):
                self.check_invariants()
        except InvariantViolation as exc:
            self._broken = f"ledger invariant violated at seq {engine.seq}: {exc}"
            raise SequencerBroken(self._broken) from exc
        except BaseException as exc:
            self._broken = f"batch ending at seq {engine.seq} failed: {exc!r}"
            raise
        if self.snapshot_dir and self.schedule.snapshot_due(engine.seq):
            try:
                self.snapshot()
            except OSError as exc:
                # The batch is journaled: its outputs must reach the caller. A snapshot is
                # only an optimisation; the next one is retried after another interval.
                self.schedule.snapshot_attempted(engine.seq)
                log.error("snapshot at seq %d failed (%s); continuing", engine.seq, exc,
                          extra={"seq": engine.seq})  # fmt: skip
        return produced

    def check_invariants(self) -> None:
        self.engine.check_invariants()
        self.schedule.checked(self.engine.seq)

    def snapshot(self) -> str | None:
        """Write a snapshot at the current seq (journal synced first); prune old ones."""
        journal = self.journal
        if not self.snapshot_dir or self._broken or journal is None:
            return None
        self.check_invariants()
        journal.sync()
        started = time.perf_counter()
        path = write_snapshot(
            self.snapshot_dir,
            dump_state(self.engine),
            self.engine.seq,
            journal.head_hash,
            {"accounts": self.engine.account_count()},
            storage=self.storage,
        )
        self.schedule.snapshot_attempted(self.engine.seq)
        prune(self.snapshot_dir, keep=self.keep_snapshots)
        settle_heap(full=True)  # a pause already: also re-examine the frozen objects
        log.info(
            "snapshot at seq %d written in %.3f s: %s",
            self.engine.seq,
            time.perf_counter() - started,
            path,
            extra={"seq": self.engine.seq},
        )
        return path

    def close(self, snapshot: bool = True) -> None:
        journal = self.journal
        if journal is None:
            return
        try:
            if snapshot and not self._broken and self.engine.seq > self.last_snapshot_seq:
                try:
                    self.snapshot()
                except OSError as exc:
                    log.error("closing snapshot failed (%s): recovery will replay the tail", exc)
            if not self._broken:
                journal.sync()
        finally:
            journal.close()
