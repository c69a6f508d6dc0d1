"""The fund-risk job's oracle history after a restart, rebuilt from the journal topic.

Recovery replays only the journal's tail after the snapshot it starts from, so the ticks
before that snapshot are missing from the history the adequacy job needs (a whole
``risk.window_s`` of them). The journal topic holds every tick: this reads them back.

Blocking (a ``KafkaJournalReader`` of its own over a private event loop): the daemon
calls it in a worker thread (``FundRisk.rebuild_history``), so neither its event loop
nor its commit path waits for it; the job uses whatever history it has until it lands.

Where the read starts: the local snapshots of this journal topic record the offset of
their seq (as recovery uses them). The newest one whose input is stamped at or before
the window's start (``newest tick - window``) is a safe place to start: every tick
after it is read. If none is that old, or the recovered history holds no tick to date
the window by, the read starts at seq 1. The records are read verified (consecutive
seqs, the hash chain recomputed), as every reader of the journal reads them.
"""

from __future__ import annotations

import os
import threading
from typing import Final

import msgspec

from clearing.journal import Record
from clearing.kafka._journal import KafkaJournalReader
from clearing.ops.config import Config
from clearing.risk import OracleHistory
from clearing.risk._history import OracleTick, oracle_tick
from clearing.snapshot import list_snapshots

__all__ = ["ReadStopped", "read_oracle_window"]

_STAMP_FIELD: Final = b'"ts"'


class _Stamp(msgspec.Struct):
    ts: object = None


_decode_stamp = msgspec.json.Decoder(_Stamp).decode


def _stamp_ns(record: Record) -> int | None:
    """The ``ts`` of a record's input, if it has a well-formed one."""
    if _STAMP_FIELD not in record.payload:
        return None
    try:
        ts = _decode_stamp(record.payload).ts
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    return ts if type(ts) is int else None


def _anchored_seqs(config: Config, reader: KafkaJournalReader, until_seq: int) -> list[int]:
    """Seqs of this topic's local snapshots at or before ``until_seq``, anchored on the
    reader at the offsets their metadata records; newest first."""
    directory = config.snapshot_dir
    if not directory or not os.path.isdir(directory):
        return []
    seqs = []
    for info in list_snapshots(directory):
        meta = info.meta
        offset = meta.get("journal_offset")
        if info.problem is not None or meta.get("journal_topic") != reader.topic:
            continue
        if isinstance(offset, int) and offset >= 0 and 0 < info.journal_seq <= until_seq:
            reader.anchor(info.journal_seq, offset)
            seqs.append(info.journal_seq)
    return sorted(set(seqs), reverse=True)


def _start_seq(
    config: Config, reader: KafkaJournalReader, until_seq: int, oldest_ns: int | None
) -> int:
    """The first seq to read (module docstring)."""
    if oldest_ns is None:
        return 1
    for seq in _anchored_seqs(config, reader, until_seq):
        try:
            stamp = _stamp_ns(reader.record_at(seq))
        except ValueError:  # a stale anchor (the topic was recreated): try an older one
            continue
        if stamp is not None and stamp <= oldest_ns:
            return seq + 1
    return 1


class ReadStopped(Exception):
    """The daemon is exiting: the read was abandoned."""


def read_oracle_window(
    config: Config,
    until_seq: int,
    newest_ns: int | None,
    window_ns: int,
    stop: threading.Event | None = None,
) -> tuple[list[OracleTick], int]:
    """The stamped oracle ticks of journal seqs up to ``until_seq`` that are at most
    ``window_ns`` older than ``newest_ns`` (the newest tick the caller holds; None: the
    newest read), oldest first; and the seq the read started at. ``stop``: set it to
    abandon the read (``ReadStopped``), so that an exiting daemon does not wait for it."""
    history = OracleHistory(window_ns)
    with KafkaJournalReader(config) as reader:
        oldest_ns = None if newest_ns is None else newest_ns - window_ns
        first = _start_seq(config, reader, until_seq, oldest_ns)
        for record in reader.read(first, until_seq):
            if stop is not None and stop.is_set():
                raise ReadStopped(f"stopped at seq {record.seq}")
            tick = oracle_tick(record.payload)
            if tick is not None:
                history.observe_tick(tick)
    ticks = history.ticks()
    if newest_ns is not None:
        ticks = [t for t in ticks if t.ts_ns >= newest_ns - window_ns]
    return ticks, first
