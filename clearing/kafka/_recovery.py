"""Recovery for the Kafka daemon, and the snapshots it writes.

The rules are ``clearing.sequencer.recover``'s: the newest local snapshot whose recorded
chain hash matches the journal's at its seq, then the journal tail replayed through the
engine with every record's recorded outputs compared byte for byte with the re-derived
ones. Kafka adds where things are: a snapshot's metadata stores the journal topic offset
of its seq (so the match is checked by reading one record) and the next input offset per
input partition at that point (so the daemon knows where the journal says to resume).

Refusals (``RecoveryError`` / ``KafkaJournalError``, each saying what to do): the journal
topic is missing or has more than one partition; its records were deleted (log start
offset above 0 with no usable snapshot, first record not seq 1, a seq gap); a valid
snapshot is ahead of the journal's end; a replayed record's outputs differ; the recovered
ledger does not balance.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from clearing.engine import EngineCore, InvariantViolation
from clearing.errors import ConfigError
from clearing.journal import Record, RulesVersionConflict, settle_rules_version
from clearing.kafka._batch import parse_source
from clearing.kafka._journal import KafkaJournalReader
from clearing.kafka._snapshot_topic import Manifest, SnapshotTopicReader
from clearing.ops.config import Config
from clearing.risk import OracleHistory
from clearing.sequencer import JournalChain, RecoveryError, recover
from clearing.snapshot import SnapshotError, install_snapshot, list_snapshots, prune, write_snapshot

__all__ = [
    "KafkaRecovery",
    "Positions",
    "check_rules_version",
    "input_positions",
    "ledger_rules_version",
    "recover_from_kafka",
    "snapshot_meta",
    "write_kafka_snapshot",
]

log = logging.getLogger("clearing.kafka.recovery")

# (topic, partition) -> next offset to consume, as the journal says.
Positions = dict[tuple[str, int], int]
_WRITER: Final = "clearing.kafka"


class KafkaRecovery(NamedTuple):
    engine: EngineCore
    chain: JournalChain
    journal_offset: int  # offset of the journal's last record; -1 when empty
    positions: Positions
    snapshot_path: str | None
    snapshot_seq: int
    replayed: int
    seconds: float
    # The replayed tail's oracle ticks, within risk.window_s (only when risk is on).
    oracle_history: OracleHistory | None = None
    # The complete snapshots found in the snapshot topic (newest first), and the seq of
    # the one restored from it into the empty or older local cache (0: none).
    topic_manifests: tuple[Manifest, ...] = ()
    restored_seq: int = 0


def snapshot_meta(
    config: Config, journal_offset: int, positions: Positions, accounts: int
) -> dict[str, Any]:
    return {
        "writer": _WRITER,
        "ledger_id": config.ledger_id,
        "journal_topic": config.topics.journal,
        "journal_partition": 0,
        "journal_offset": journal_offset,
        "input_positions": {f"{t}:{p}": o for (t, p), o in sorted(positions.items())},
        "accounts": accounts,
    }


def _positions_from_meta(meta: dict[str, Any]) -> Positions:
    positions: Positions = {}
    raw = meta.get("input_positions")
    if not isinstance(raw, dict):
        return positions
    for key, offset in raw.items():
        topic, _, partition = str(key).rpartition(":")
        if topic and partition.isdigit() and isinstance(offset, int):
            positions[topic, int(partition)] = offset
    return positions


def write_kafka_snapshot(
    config: Config,
    state: bytes,
    seq: int,
    head_hash: bytes,
    journal_offset: int,
    positions: Positions,
    accounts: int,
) -> str:
    """Write a snapshot (fsynced, atomic) and prune old ones. Blocking: call in a thread.

    ``state`` is ``dump_state(engine)`` taken on the event loop, between batches.
    """
    directory = config.snapshot_dir
    assert directory is not None
    path = write_snapshot(
        directory,
        state,
        seq,
        head_hash,
        snapshot_meta(config, journal_offset, positions, accounts),
    )
    prune(directory, keep=config.snapshot.keep)
    return path


class _TailPositions:
    """Where each input partition stands after the replayed tail, from the records'
    sources; also feeds the tail's oracle ticks to ``history`` (fund risk, when it is
    on). Given each journal message's records as the reader hands them out
    (``on_records``), so the replay needs no per-record observer and the native core
    replays the tail as frame windows. Only a recovery that replayed every record uses
    what it gathered."""

    def __init__(self, history: OracleHistory | None = None) -> None:
        self.positions: Positions = {}
        self.history = history

    def observe(self, records: list[Record]) -> None:
        self.positions.update(input_positions(records))
        if self.history is not None:
            for record in records:
                self.history.observe(record.payload)


def input_positions(records: Sequence[Record]) -> Positions:
    """Where each input partition stands after ``records``: the offset after its last
    record's (the records of other sources say nothing)."""
    positions: Positions = {}
    done: set[str] = set()  # sources' ``kafka:<topic>:<partition>`` already placed
    for record in reversed(records):  # the last record of each partition first
        head = record.source.rpartition(":")[0]
        if head in done:
            continue
        where = parse_source(record.source)
        if where is not None:
            done.add(head)
            positions.setdefault((where[0], where[1]), where[2] + 1)
    return positions


def ledger_rules_version(config: Config, journal_topic: str, recorded: int | None) -> int:
    """The rules version the ledger runs: the one its journal topic recorded, or for an
    empty topic (a new ledger) ``engine.rules_version`` (unset: 1). Raises
    ``ConfigError`` when the configuration names another version than the topic's: a
    ledger's rules never change, and replaying it under others would diverge."""
    try:
        return settle_rules_version(recorded, config.engine.rules_version)
    except RulesVersionConflict as conflict:
        raise ConfigError(
            f"engine.rules_version is {conflict.requested} but journal topic "
            f"{journal_topic!r} records rules version {recorded}, and a ledger's rules "
            f"cannot change: set engine.rules_version = {recorded} or remove the key"
        ) from None


def check_rules_version(config: Config) -> None:
    """``ledger_rules_version``'s refusal, from the journal topic's tail alone: cheap
    enough to run before a process fences the running active (blocking: in a thread)."""
    with KafkaJournalReader(config) as reader:
        ledger_rules_version(config, reader.topic, reader.tail().rules_version)


def recover_from_kafka(config: Config) -> KafkaRecovery:
    """Rebuild the engine from the newest matching snapshot plus the journal topic.

    Blocking (reads Kafka over a private event loop): run it in a worker thread. Call it
    only after the ledger's transactional producer has started, so no older instance can
    commit anything after the journal's end is read.
    """
    started = time.perf_counter()
    directory = config.snapshot_dir
    risk = config.risk
    history = OracleHistory(risk.window_s * 10**9) if risk.interval_s > 0 else None
    replayed = _TailPositions(history)
    with KafkaJournalReader(config, on_records=replayed.observe) as reader:
        tail = reader.tail()
        manifests: list[Manifest] = []
        restored_seq = 0
        if directory and config.snapshot.publish:
            manifests, restored_seq = _restore_from_topic(config, reader, directory)
        metas: dict[str, dict[str, Any]] = {}
        if directory and os.path.isdir(directory):
            for info in list_snapshots(directory):
                meta = info.meta
                if info.problem is not None or meta.get("journal_topic") != reader.topic:
                    continue
                offset = meta.get("journal_offset")
                if isinstance(offset, int) and offset >= 0:
                    reader.anchor(info.journal_seq, offset)
                metas[info.path] = meta
        if tail.last is None and tail.begin_offset > 0:
            raise RecoveryError(
                f"journal topic {reader.topic!r} holds no records but its log start offset "
                f"is {tail.begin_offset}: its records were deleted. Restore the journal; "
                f"the ledger cannot be rebuilt without it."
            )
        rules = ledger_rules_version(config, reader.topic, tail.rules_version)
        # No observer: the reader hands each message's records to ``replayed``, and it
        # says every input's outputs were recorded (an empty record must re-derive none).
        result = recover(directory, reader, core=config.engine.core, rules_version=rules)
        if result.engine.seq != reader.last_seq:
            raise RecoveryError(
                f"recovered to seq {result.engine.seq} but the journal ends at seq "
                f"{reader.last_seq}"
            )
        try:
            result.engine.check_invariants()
        except InvariantViolation as exc:
            raise RecoveryError(
                f"the ledger does not balance after recovery to seq {result.engine.seq} "
                f"({exc}): this is a bug, keep the journal and snapshots for the post-mortem"
            ) from exc
        positions: Positions = {}
        if result.snapshot_path is not None:
            positions.update(_positions_from_meta(metas.get(result.snapshot_path, {})))
        positions.update(replayed.positions)
        chain = JournalChain(reader.last_seq, reader.head_hash)
        return KafkaRecovery(
            engine=result.engine,
            chain=chain,
            journal_offset=tail.last_offset,
            positions=positions,
            snapshot_path=result.snapshot_path,
            snapshot_seq=result.snapshot_seq,
            replayed=result.replayed,
            seconds=time.perf_counter() - started,
            oracle_history=history,
            topic_manifests=tuple(manifests),
            restored_seq=restored_seq,
        )


def _newest_local_seq(directory: str, journal_topic: str, last_seq: int) -> int:
    if not os.path.isdir(directory):
        return 0
    seqs = [
        info.journal_seq
        for info in list_snapshots(directory)
        if info.problem is None
        and info.meta.get("journal_topic") == journal_topic
        and info.journal_seq <= last_seq
    ]
    return max(seqs, default=0)


def _restore_from_topic(
    config: Config, reader: KafkaJournalReader, directory: str
) -> tuple[list[Manifest], int]:
    """Copy the newest complete snapshot of the snapshot topic into the local cache when
    it is newer than every local one (an empty disk: a new machine). One that is
    damaged, partial or not of this journal's history is skipped with a log line and the
    previous one tried. Returns the manifests found and the restored seq (0: none)."""
    last_seq = reader.last_seq
    local_seq = _newest_local_seq(directory, reader.topic, last_seq)
    with SnapshotTopicReader(config) as topic:
        manifests = topic.manifests()
        for manifest in manifests:
            seq = manifest.journal_seq
            if seq <= local_seq:
                break  # the local cache is as new: nothing to fetch
            where = f"snapshot at seq {seq} in topic {topic.topic!r}"
            if seq > last_seq:
                log.warning("%s is ahead of the journal (seq %d): skipped", where, last_seq)
                continue
            try:
                if manifest.journal_offset >= 0:
                    reader.anchor(seq, manifest.journal_offset)
                if reader.hash_at(seq).hex() != manifest.journal_hash:
                    raise ValueError("its chain hash is not the journal's at that seq")
                data = topic.fetch(manifest)
                installed = install_snapshot(directory, data)
            except (ValueError, SnapshotError, OSError) as exc:
                log.warning("%s is unusable (%s): trying the previous one", where, exc)
                continue
            held = (installed.journal_seq, installed.journal_hash.hex())
            if held != (seq, manifest.journal_hash):
                log.warning("%s does not hold what its manifest says: skipped", where)
                os.unlink(installed.path)
                continue
            log.info("%s restored into %s", where, installed.path, extra={"seq": seq})
            return manifests, seq
    return manifests, 0
