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

import msgspec

from clearing.engine import EngineCore, load_engine, make_engine
from clearing.errors import RecoveryError, StateFormatError
from clearing.heap import settle_heap
from clearing.journal import JournalReader
from clearing.sequencer._replay import ReplayObserver, replay
from clearing.snapshot import SnapshotError, list_snapshots, read_snapshot

__all__ = ["RecoveryResult", "recover"]

log = logging.getLogger(__name__)


class RecoveryResult(msgspec.Struct):
    engine: EngineCore
    snapshot_path: str | None
    snapshot_seq: int
    replayed: int


def recover(
    snapshot_dir: str | None,
    journal: JournalReader,
    *,
    until_seq: int | None = None,
    check_outputs: bool = True,
    observer: ReplayObserver | None = None,
    core: str = "python",
    rules_version: int | None = None,
) -> RecoveryResult:
    """Rebuild the engine at ``until_seq`` (default: the journal's last record).

    The tail after the snapshot is replayed by the replay loop (``replay``), which
    stops at the first record whose re-derived outputs differ from the recorded ones
    (``OutputDivergence``) unless ``check_outputs`` is off. ``observer`` sees each
    replayed record (and makes the replay go record by record). ``core`` names the
    engine core; ``rules_version`` defaults to the one the journal recorded (a snapshot
    under other rules is skipped).
    """
    if rules_version is None:
        rules_version = journal.rules_version
    last_seq = journal.last_seq
    hash_at = journal.hash_at
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
    settle_heap()  # the loaded snapshot's objects live as long as the engine
    done = replay(
        journal,
        engine,
        until_seq=target,
        verify=check_outputs,
        observer=observer,
    )
    return RecoveryResult(engine, snapshot_path, snapshot_seq, done.inputs)
