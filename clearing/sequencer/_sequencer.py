"""The sequencer: numbers inputs, applies them to the engine and journals them.

    source -> **sequencer** -> journal -> engine -> sinks

One ``submit`` is one batch and one journal group commit. The engine applies the batch in
memory first (it is pure and fast), then the records, each with the outputs it produced,
are appended to the journal; only after the append returns are the outputs handed back to
be emitted. If the append fails, the in-memory state is ahead of the journal: the
sequencer refuses further work and the process must recover from the journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final

from clearing.engine import EngineCore, InvariantViolation, OutputEvent
from clearing.engine.events import decode_output
from clearing.engine.persist import dump_state
from clearing.errors import SequencerBroken
from clearing.heap import HeapSettler, settle_heap
from clearing.journal import Journal, LocalJournal, Record
from clearing.journal._scan import ScanMode
from clearing.sequencer._recovery import RecoveryResult, recover
from clearing.sequencer._replay import join_outputs
from clearing.snapshot import prune, write_snapshot

__all__ = ["Sequencer", "SequencerBroken"]

log = logging.getLogger(__name__)

# A full invariant check is O(accounts); every 100k inputs keeps it well under 1% of time.
DEFAULT_INVARIANT_CHECK_INPUTS: Final = 100_000
DEFAULT_SNAPSHOT_EVERY_INPUTS: Final = 1_000_000
DEFAULT_KEEP_SNAPSHOTS: Final = 3


class Sequencer:
    def __init__(
        self,
        engine: EngineCore,
        journal: Journal,
        snapshot_dir: str | None = None,
        *,
        snapshot_every_inputs: int = DEFAULT_SNAPSHOT_EVERY_INPUTS,
        keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
        invariant_check_inputs: int = DEFAULT_INVARIANT_CHECK_INPUTS,
    ) -> None:
        if engine.seq != journal.last_seq:
            raise ValueError(f"engine at seq {engine.seq} but journal at {journal.last_seq}")
        self.engine = engine
        self.journal = journal
        self.snapshot_dir = snapshot_dir
        self.snapshot_every_inputs = snapshot_every_inputs
        self.keep_snapshots = keep_snapshots
        self.invariant_check_inputs = invariant_check_inputs
        self.last_snapshot_seq = engine.seq
        self._last_invariant_seq = engine.seq
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
        **options: int,
    ) -> tuple[Sequencer, RecoveryResult]:
        """Open (or create) a local journal, recover the engine on the named core
        ("python", "native" or "auto"), and return a sequencer.

        ``scan_mode="full"`` verifies every record of the journal before recovery;
        ``"tail"`` checks the earlier segments' headers only and verifies the last
        segment, the records recovery replays and the chain hash the snapshot was taken
        at: a faster restart that leaves the full check to ``clearing journal verify``.
        """
        journal = LocalJournal(journal_dir, fsync=fsync, scan_mode=scan_mode)  # type: ignore[arg-type]
        try:
            result = recover(snapshot_dir, journal, core=core)
        except BaseException:
            journal.close()
            raise
        return cls(result.engine, journal, snapshot_dir, **options), result

    def submit(self, inputs: Sequence[tuple[str, bytes]]) -> list[OutputEvent]:
        """Apply and journal one batch of ``(source, raw input)``; return its outputs."""
        if self._broken:
            raise SequencerBroken(self._broken)
        engine = self.engine
        apply_encoded = engine.apply_encoded
        records: list[Record] = []
        produced: list[OutputEvent] = []
        try:
            for source, payload in inputs:
                outputs = apply_encoded(payload)
                records.append(Record(engine.seq, source, payload, join_outputs(outputs)))
                if outputs:
                    produced.extend(map(decode_output, outputs))
            self.journal.append(records)
            self._heap.add(len(records))
            if engine.seq - self._last_invariant_seq >= self.invariant_check_inputs:
                self.check_invariants()
        except InvariantViolation as exc:
            self._broken = f"ledger invariant violated at seq {engine.seq}: {exc}"
            raise SequencerBroken(self._broken) from exc
        except BaseException as exc:
            self._broken = f"batch ending at seq {engine.seq} failed: {exc!r}"
            raise
        if self.snapshot_dir and engine.seq - self.last_snapshot_seq >= self.snapshot_every_inputs:
            try:
                self.snapshot()
            except OSError as exc:
                # The batch is journaled: its outputs must reach the caller. A snapshot is
                # only an optimisation; the next one is retried after another interval.
                self.last_snapshot_seq = engine.seq
                log.error("snapshot at seq %d failed (%s); continuing", engine.seq, exc,
                          extra={"seq": engine.seq})  # fmt: skip
        return produced

    def check_invariants(self) -> None:
        self.engine.check_invariants()
        self._last_invariant_seq = self.engine.seq

    def snapshot(self) -> str | None:
        """Write a snapshot at the current seq (journal synced first); prune old ones."""
        if not self.snapshot_dir or self._broken:
            return None
        self.check_invariants()
        self.journal.sync()
        started = time.perf_counter()
        path = write_snapshot(
            self.snapshot_dir,
            dump_state(self.engine),
            self.engine.seq,
            self.journal.head_hash,
            {"accounts": self.engine.account_count()},
        )
        self.last_snapshot_seq = self.engine.seq
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
        try:
            if snapshot and not self._broken and self.engine.seq > self.last_snapshot_seq:
                try:
                    self.snapshot()
                except OSError as exc:
                    log.error("closing snapshot failed (%s): recovery will replay the tail", exc)
            if not self._broken:
                self.journal.sync()
        finally:
            self.journal.close()
