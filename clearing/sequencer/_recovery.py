"""Recovery: newest usable snapshot + replay of the journal tail = the state before a stop.

Used by every mode (embedded ingest, the Kafka daemon, audit replay), so there is one
definition of "the state at seq N". A snapshot is usable only if its journal position is
inside the journal and its recorded chain hash matches the journal's hash at that seq;
otherwise an older one is tried, and with none the journal is replayed from seq 1.
Replayed inputs re-derive their outputs; where the journal recorded outputs, the two must
match byte for byte, or recovery stops (the code changed meaning, or the log was forged).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Final

import msgspec

from clearing.engine import EngineCore, encode_output, load_engine, make_engine
from clearing.engine.native import NativeEngine, RefusedRecord, ReplayedBatch
from clearing.errors import OutputDivergence, RecoveryError, StateFormatError
from clearing.heap import HeapSettler
from clearing.journal import Record
from clearing.journal._format import batch_scanner, native_scan_available
from clearing.snapshot import SnapshotError, list_snapshots, read_snapshot

__all__ = [
    "OutputDivergence",
    "RecoveryError",
    "RecoveryResult",
    "encode_outputs",
    "join_outputs",
    "recover",
]

log = logging.getLogger(__name__)

# Re-derived outputs are compared with recorded ones for every replayed record.
_NEWLINE: Final = b"\n"


class RecoveryResult(msgspec.Struct):
    engine: EngineCore
    snapshot_path: str | None
    snapshot_seq: int
    replayed: int


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


def recover(
    snapshot_dir: str | None,
    last_seq: int,
    read: Callable[[int, int | None], Iterator[Record]],
    hash_at: Callable[[int], bytes],
    *,
    until_seq: int | None = None,
    check_outputs: bool = True,
    on_record: Callable[[Record, bytes], None] | None = None,
    core: str = "python",
    rules_version: int = 1,
) -> RecoveryResult:
    """Rebuild the engine at ``until_seq`` (default: the journal's last record).

    ``read(from_seq, until_seq)`` yields verified records; ``hash_at(seq)`` gives the
    chain hash at a seq. ``on_record`` sees each replayed record with its re-derived
    outputs in the journal's form (``encode_outputs``). ``core`` names the engine core;
    ``rules_version`` is the one the journal recorded (a snapshot under other rules is
    skipped).
    """
    target = last_seq if until_seq is None else min(until_seq, last_seq)
    engine: EngineCore | None = None
    snapshot_path: str | None = None
    if snapshot_dir and os.path.isdir(snapshot_dir):
        infos = list_snapshots(snapshot_dir)
        ahead = [i for i in infos if i.problem is None and i.journal_seq > last_seq]
        if ahead and until_seq is None:
            raise RecoveryError(
                f"snapshot {ahead[-1].path} is at seq {ahead[-1].journal_seq} but the journal "
                f"ends at seq {last_seq}: journal records were lost. Restore the journal, or "
                f"move the newer snapshots away to rebuild from what the journal holds."
            )
        for info in reversed(infos):
            if info.problem is not None or info.journal_seq > target:
                continue
            try:
                snap = read_snapshot(info.path)
                if snap.journal_seq and hash_at(snap.journal_seq) != snap.journal_hash:
                    log.warning(
                        "snapshot %s does not match the journal's chain hash at seq %d: skipped",
                        info.path,
                        snap.journal_seq,
                    )
                    continue
                candidate = load_engine(snap.state, core)
            except (OSError, ValueError, StateFormatError, SnapshotError) as exc:
                log.warning("snapshot %s is unusable (%s): trying an older one", info.path, exc)
                continue
            if candidate.rules_version != rules_version:
                log.warning(
                    "snapshot %s is under rules version %d, the journal under %d: skipped",
                    info.path,
                    candidate.rules_version,
                    rules_version,
                )
                continue
            if candidate.seq != snap.journal_seq:
                log.warning("snapshot %s has engine seq %d: skipped", info.path, candidate.seq)
                continue
            engine, snapshot_path = candidate, info.path
            break
    if engine is None:
        engine = make_engine(core, rules_version=rules_version)
    snapshot_seq = engine.seq
    replayed = 0
    heap = HeapSettler()
    heap.add(heap.every_inputs)  # settle the loaded snapshot's objects now
    if target > engine.seq and _replays_natively(engine, on_record):
        replayed = _replay_native(engine, read, target, check_outputs, heap)  # type: ignore[arg-type]
    elif target > engine.seq:
        apply_encoded = engine.apply_encoded
        for record in read(engine.seq + 1, target):
            derived = _replayed(engine, record, apply_encoded(record.payload), check_outputs)
            heap.add()
            if on_record is not None:
                on_record(record, derived)
            replayed += 1
    return RecoveryResult(engine, snapshot_path, snapshot_seq, replayed)


def _replayed(
    engine: EngineCore, record: Record, outputs: list[bytes], check_outputs: bool
) -> bytes:
    """Check one replayed record (its seq, and its recorded outputs against ``outputs``,
    just re-derived); returns them joined as the journal records them."""
    if engine.seq != record.seq:
        raise RecoveryError(f"journal record seq {record.seq} replayed as {engine.seq}")
    derived = join_outputs(outputs)
    if check_outputs and record.outputs and derived != record.outputs:
        raise OutputDivergence(record.seq, record.outputs, derived)
    return derived


def _replays_natively(engine: EngineCore, on_record: object) -> bool:
    return (
        isinstance(engine, NativeEngine)
        and on_record is None
        and engine.replays_frames
        and native_scan_available()
    )


def _replay_native(
    engine: NativeEngine,
    read: Callable[[int, int | None], Iterator[Record]],
    target: int,
    check_outputs: bool,
    heap: HeapSettler,
) -> int:
    """``recover``'s replay loop with the native core applying whole batches of journal
    frames as its reader verifies them (``NativeEngine.frame_replayer``); the records
    it hands back (and those of a reader that does not scan natively) take the
    per-record path. Same checks, same errors."""
    replayed = 0
    apply_encoded = engine.apply_encoded
    with batch_scanner(engine.frame_replayer(check_outputs, stop_at_divergence=True)):
        for item in read(engine.seq + 1, target):
            if type(item) is ReplayedBatch:
                if item.divergences:
                    seq, _source, recorded, derived = item.first_divergence  # type: ignore[misc]
                    raise OutputDivergence(seq, recorded, derived)
                replayed += item.inputs
                heap.add(item.inputs)
                continue
            if type(item) is RefusedRecord:
                record = item.record
                outputs = engine.finish_refusal(record.payload, item.code)
            else:
                record = item
                outputs = apply_encoded(record.payload)
            _replayed(engine, record, outputs, check_outputs)
            heap.add()
            replayed += 1
    return replayed
