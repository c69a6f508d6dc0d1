"""The replay loop: journal records applied to an engine in order, outputs re-checked.

Every reader of a journal goes through ``replay``: recovery (snapshot + tail), the audit
replay (``clearing replay``), the report's collector, and a standby following a journal.
It applies the records after the engine's seq, in order, re-derives each record's outputs
and compares them byte for byte with the ones the journal recorded (``OutputDivergence``),
and reports progress.

Two ways through, same results (the differential tests hold them equal):

* frame windows: where the reader hands out raw frame windows (``LocalJournal``, the
  journal topic read back, a standby's fetched records) and the engine verifies and
  applies frames itself (the native core's ``replays_frames``; for a reader that says
  every input's outputs were recorded, one that compares empty recorded outputs too),
  a window's frames are checked and applied in one call per batch, with no Python
  object per record; records the engine hands back (deferred or refused inputs) and
  frames it refuses (the journal classifies the damage) take the per-record step;
* records: otherwise (the Python core, or a caller with an observer that needs each
  record) the reader's verified records are applied one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final, Protocol, runtime_checkable

import msgspec

from clearing.engine import EngineCore, encode_output
from clearing.errors import OutputDivergence, RecoveryError
from clearing.heap import HeapSettler
from clearing.journal import FrameWindow, JournalReader, Record

__all__ = [
    "Divergence",
    "OutputDivergence",
    "RecoveryError",
    "ReplayObserver",
    "ReplayResult",
    "encode_outputs",
    "join_outputs",
    "replay",
]

_NEWLINE: Final = b"\n"
# Records per native call: enough to amortise the call, few enough that the batch's
# derived outputs stay in cache until written (4096 measured ~1.5x slower than 1024);
# and a byte bound, so a batch of large records cannot hold much memory at once.
WINDOW_BATCH_RECORDS: Final = 1024
WINDOW_BATCH_BYTES: Final = 1 << 20
_U64_MAX: Final = (1 << 64) - 1
# Progress is reported every this many records on the per-record path.
_PROGRESS_EVERY_RECORDS: Final = 4096


class Divergence(msgspec.Struct, frozen=True, gc=False):
    """A record whose re-derived outputs differ from the recorded ones."""

    seq: int
    source: str
    recorded: bytes
    derived: bytes


class ReplayResult(msgspec.Struct, gc=False):
    """What one ``replay`` did: records applied, output events re-derived, and (when
    divergences do not stop it) how many records diverged, the first of them."""

    inputs: int = 0
    events: int = 0
    divergences: int = 0
    first_divergence: Divergence | None = None


class ReplayObserver:
    """Per-record hooks for callers that need each record (the report, ``--until-ts``,
    invariant checks after every input). Having one makes the loop take the per-record
    path. The defaults do nothing."""

    def before(self, record: Record) -> bool:
        """Called before ``record`` is applied; False stops the replay there."""
        return True

    def after(self, record: Record, events: list[bytes], derived: bytes) -> None:
        """Called once ``record`` is applied and checked: its re-derived output events
        (``encode_output`` form) and the same joined as the journal records them."""


@runtime_checkable
class _WindowReplayer(Protocol):
    """An engine that verifies and applies journal frame windows itself (the native
    core's ``replay_window``; see ``clearing.engine.native.ReplayedWindow``)."""

    replays_frames: bool
    replays_all_outputs_recorded: bool

    def replay_window(
        self,
        buf: bytes,
        offset: int,
        end: int,
        seq: int,
        prev_hash: bytes,
        stop_seq: int,
        max_records: int,
        max_bytes: int,
        verify: bool,
        stop_at_divergence: bool,
        all_outputs_recorded: bool = False,
    ) -> _ReplayedWindow: ...

    def finish_refusal(self, raw: bytes, code: int) -> list[bytes]: ...


class _ReplayedWindow(Protocol):
    inputs: int
    events: int
    derived: bytes
    divergences: int
    first_divergence: tuple[int, str, bytes, bytes] | None
    pending: tuple[int, str, bytes, bytes, bytes] | None
    refusal: int | None
    error: BaseException | None
    next_offset: int
    next_seq: int
    last_hash: bytes
    problem: bool


@runtime_checkable
class _AllOutputsReader(Protocol):
    """A reader that says whether its writer recorded every input's outputs (the Kafka
    daemon does: an empty record means the input had none); without it, an empty one
    means "not recorded" (a local journal written before outputs were)."""

    all_outputs_recorded: bool


@runtime_checkable
class _WindowReader(Protocol):
    def frame_windows(
        self, from_seq: int = 1, until_seq: int | None = None
    ) -> Iterator[FrameWindow]: ...


def encode_outputs(outputs: list) -> bytes:  # type: ignore[type-arg]
    """The journal's form of an input's outputs: JSON lines, each ending in a newline."""
    if not outputs:
        return b""
    return b"".join(encode_output(event) + _NEWLINE for event in outputs)


def join_outputs(encoded: list[bytes]) -> bytes:
    """``encode_outputs`` for outputs already encoded (``apply_encoded``)."""
    if not encoded:
        return b""
    return b"".join(event + _NEWLINE for event in encoded)


def replay(
    reader: JournalReader,
    engine: EngineCore,
    *,
    until_seq: int | None = None,
    verify: bool = True,
    stop_at_divergence: bool = True,
    observer: ReplayObserver | None = None,
    on_events: Callable[[bytes], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Apply the journal's records ``engine.seq + 1 .. until_seq`` (default: its last)
    to ``engine``, in order.

    With ``verify``, each record's re-derived outputs are compared with the recorded
    ones (where it recorded any): a difference raises ``OutputDivergence`` with
    ``stop_at_divergence``, else it is counted in the result; a record that recorded
    no outputs is compared only where the reader says ``all_outputs_recorded``.
    ``on_events`` receives the re-derived output events as the journal records them
    (JSON lines), in order; ``progress`` the engine's seq every few thousand records.
    The reader's errors (a damaged journal) propagate once the records before the
    damage are applied.
    """
    last = reader.last_seq if until_seq is None else min(until_seq, reader.last_seq)
    every_output = isinstance(reader, _AllOutputsReader) and reader.all_outputs_recorded
    loop = _Loop(engine, verify, stop_at_divergence, observer, on_events, progress, every_output)
    if last <= engine.seq:
        return loop.result
    if (
        observer is None
        and isinstance(engine, _WindowReplayer)
        and engine.replays_frames
        and (engine.replays_all_outputs_recorded or not every_output)
        and isinstance(reader, _WindowReader)
    ):
        loop.run_windows(reader.frame_windows(engine.seq + 1, last), engine)
    else:
        loop.run_records(reader.read(engine.seq + 1, last))
    return loop.result


class _Loop:
    """One replay's running state; ``replay`` is its public face."""

    def __init__(
        self,
        engine: EngineCore,
        verify: bool,
        stop_at_divergence: bool,
        observer: ReplayObserver | None,
        on_events: Callable[[bytes], None] | None,
        progress: Callable[[int], None] | None,
        all_outputs_recorded: bool = False,
    ) -> None:
        self.engine = engine
        self.verify = verify
        self.stop_at_divergence = stop_at_divergence
        self.observer = observer
        self.on_events = on_events
        self.progress = progress
        self.heap = HeapSettler()
        self.result = ReplayResult()
        self.all_outputs_recorded = all_outputs_recorded  # compare empty ones too

    def run_records(self, records: Iterator[Record]) -> None:
        apply_encoded = self.engine.apply_encoded
        observer = self.observer
        progress = self.progress
        for record in records:
            if observer is not None and not observer.before(record):
                return
            events = apply_encoded(record.payload)
            derived = self.applied(record, events)
            if observer is not None:
                observer.after(record, events, derived)
            if progress is not None and record.seq % _PROGRESS_EVERY_RECORDS == 0:
                progress(record.seq)

    def run_windows(self, windows: Iterator[FrameWindow], engine: _WindowReplayer) -> None:
        replay_window = engine.replay_window
        apply_encoded = self.engine.apply_encoded
        for window in windows:
            while not window.finished:
                if not window.native_scan_fits:
                    record = window.read_record()
                    self.applied(record, apply_encoded(record.payload))
                    continue
                batch = replay_window(
                    window.buf,
                    window.offset,
                    window.end,
                    window.seq,
                    window.prev_hash,
                    min(window.stop_seq, _U64_MAX),
                    WINDOW_BATCH_RECORDS,
                    WINDOW_BATCH_BYTES,
                    self.verify,
                    self.stop_at_divergence,
                    self.all_outputs_recorded,
                )
                window.advance(batch.next_offset, batch.next_seq, batch.last_hash)
                self.applied_batch(batch)
                if batch.pending is not None:
                    record = Record(*batch.pending)
                    if batch.refusal is None:
                        events = apply_encoded(record.payload)
                    else:
                        events = engine.finish_refusal(record.payload, batch.refusal)
                    self.applied(record, events)
                if batch.error is not None:
                    raise batch.error
                if batch.problem:
                    # The journal's own check of the frame: it raises the classified
                    # damage, or returns a record only the reference decoder reads.
                    record = window.read_record()
                    self.applied(record, apply_encoded(record.payload))
                if self.progress is not None:
                    self.progress(self.engine.seq)

    def applied_batch(self, batch: _ReplayedWindow) -> None:
        """Account for the records a native window call applied."""
        result = self.result
        result.inputs += batch.inputs
        result.events += batch.events
        self.heap.add(batch.inputs)
        if batch.derived and self.on_events is not None:
            self.on_events(batch.derived)
        if batch.divergences:
            seq, source, recorded, derived = batch.first_divergence  # type: ignore[misc]
            self.diverged(batch.divergences, Divergence(seq, source, recorded, derived))

    def applied(self, record: Record, events: list[bytes]) -> bytes:
        """Check one record just applied (its seq, its recorded outputs against
        ``events``) and account for it; returns its outputs as the journal records them."""
        engine_seq = self.engine.seq
        if engine_seq != record.seq:
            raise RecoveryError(f"journal record seq {record.seq} replayed as {engine_seq}")
        derived = join_outputs(events)
        result = self.result
        result.inputs += 1
        result.events += len(events)
        self.heap.add()
        if derived and self.on_events is not None:
            self.on_events(derived)
        if (
            self.verify
            and (record.outputs or self.all_outputs_recorded)
            and derived != record.outputs
        ):
            self.diverged(1, Divergence(record.seq, record.source, record.outputs, derived))
        return derived

    def diverged(self, count: int, first: Divergence) -> None:
        if self.stop_at_divergence:
            raise OutputDivergence(first.seq, first.recorded, first.derived)
        result = self.result
        result.divergences += count
        if result.first_divergence is None:
            result.first_divergence = first
