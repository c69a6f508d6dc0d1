"""The fund-risk job's oracle history after a restart, rebuilt from the journal topic.

Recovery replays only the journal's tail after the snapshot it starts from, so the ticks
before that snapshot are missing from the history the adequacy job needs (a whole
``risk.window_s`` of them); a promoted standby hands over none. The journal topic holds
every tick: ``OracleBackfill`` reads them back and hands them to the job.

Blocking (a ``KafkaJournalReader`` of its own over a private event loop), so it runs in a
daemon thread: the event loop goes on, and an exiting daemon neither waits for it nor
for the interpreter to join it (the shutdown bound holds even while the broker is slow).
The thread shares the interpreter with the commit loop, so commits run somewhat slower
while it reads; the job uses whatever history it has until the ticks land.

Where the read starts: the local snapshots of this journal topic record the offset of
their seq (as recovery uses them). The newest one whose input is stamped at or before
the window's start (``newest stamp - window``) is a safe place to start: every tick
after it is read. The newest stamp is the newest tick held, or when none is held (a
snapshot at the head, a promoted standby) the stamp of the last record to read (else of
the newest snapshot's record: an older stamp only widens the read). Only if no snapshot
is that old, or no stamp is found, the read starts at seq 1. The records are read
verified (consecutive seqs, the hash chain recomputed), as every reader of the journal
reads them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from clearing.journal import Record
from clearing.kafka._journal import KafkaJournalReader
from clearing.kafka._recovery import KafkaRecovery
from clearing.kafka._threads import in_daemon_thread
from clearing.ops.config import Config
from clearing.risk import OracleHistory
from clearing.risk._history import OracleTick, oracle_tick
from clearing.snapshot import list_snapshots

__all__ = ["OracleBackfill", "ReadStopped", "read_oracle_window"]

log = logging.getLogger("clearing.kafka")

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
    reader at the offsets their metadata records; newest first. A snapshot that the
    writer's retention deletes meanwhile is skipped (listed with a problem)."""
    directory = config.snapshot_dir
    if not directory:
        return []
    try:
        infos = list_snapshots(directory)
    except OSError:  # the directory itself is gone or unreadable: no place to start from
        return []
    seqs = []
    for info in infos:
        meta = info.meta
        offset = meta.get("journal_offset")
        if info.problem is not None or meta.get("journal_topic") != reader.topic:
            continue
        if isinstance(offset, int) and offset >= 0 and 0 < info.journal_seq <= until_seq:
            reader.anchor(info.journal_seq, offset)
            seqs.append(info.journal_seq)
    return sorted(set(seqs), reverse=True)


def _stamped(reader: KafkaJournalReader, seqs: Iterable[int]) -> Iterable[tuple[int, int]]:
    """(seq, stamp in ns) of those of ``seqs`` that are reachable and stamped."""
    for seq in seqs:
        try:
            stamp_ns = _stamp_ns(reader.record_at(seq))
        except ValueError:  # offset unknown, or a stale anchor (the topic was recreated)
            continue
        if stamp_ns is not None:
            yield seq, stamp_ns


def _start_seq(
    config: Config,
    reader: KafkaJournalReader,
    until_seq: int,
    newest_ns: int | None,
    window_ns: int,
) -> int:
    """The first seq to read (module docstring)."""
    anchored = _anchored_seqs(config, reader, until_seq)
    if newest_ns is None:
        dated = next(iter(_stamped(reader, [until_seq, *anchored])), None)
        if dated is None:
            return 1
        newest_ns = dated[1]
    oldest_ns = newest_ns - window_ns
    for seq, stamp_ns in _stamped(reader, anchored):
        if stamp_ns <= oldest_ns:
            return seq + 1
    return 1


class ReadStopped(Exception):
    """The daemon is exiting: the read was abandoned."""


def read_oracle_window(
    config: Config,
    until_seq: int,
    until_offset: int | None,
    newest_ns: int | None,
    window_ns: int,
    stop: threading.Event,
) -> tuple[list[OracleTick], int]:
    """The stamped oracle ticks of journal seqs up to ``until_seq`` (at ``until_offset``,
    if known) that are at most ``window_ns`` older than ``newest_ns`` (the newest tick the
    caller holds; None: the newest read), oldest first; and the seq the read started at.
    Set ``stop`` to abandon the read (``ReadStopped``) between its steps and records."""
    history = OracleHistory(window_ns)
    with KafkaJournalReader(config) as reader:
        if until_offset is not None:
            reader.anchor(until_seq, until_offset)
        if stop.is_set():
            raise ReadStopped("stopped before the read started")
        first = _start_seq(config, reader, until_seq, newest_ns, window_ns)
        for record in reader.read(first, until_seq):
            if stop.is_set():
                raise ReadStopped(f"stopped at seq {record.seq}")
            tick = oracle_tick(record.payload)
            if tick is not None:
                history.observe_tick(tick)
    ticks = history.ticks()
    if newest_ns is not None:
        ticks = [t for t in ticks if t.ts_ns >= newest_ns - window_ns]
    return ticks, first


def missing_until(recovery: KafkaRecovery) -> tuple[int, int | None]:
    """The last seq whose ticks the recovered history lacks (0: none are missing), and its
    journal offset when recovery knows it: the snapshot recovery started from, or the
    head for a promoted standby (it kept no history)."""
    if recovery.oracle_history is not None:
        until_seq = recovery.snapshot_seq
    else:
        until_seq = recovery.engine.seq
    known = until_seq == recovery.chain.last_seq and recovery.journal_offset >= 0
    return until_seq, recovery.journal_offset if known else None


class OracleBackfill:
    """One read-back in a daemon thread; ``stop`` abandons it (the daemon is exiting)."""

    def __init__(self, window_ns: int) -> None:
        self._window_ns = window_ns
        self._stop = threading.Event()  # the thread checks it between steps and records
        self._task: asyncio.Task[None] | None = None

    def start(
        self,
        config: Config,
        recovery: KafkaRecovery,
        newest_ns: int | None,
        deliver: Callable[[list[OracleTick]], None],
    ) -> None:
        """Read the ticks ``recovery`` lacks (``newest_ns``: the newest tick it holds) and
        call ``deliver`` with them on the loop, unless the read fails (logged once)."""
        until_seq, until_offset = missing_until(recovery)
        if until_seq <= 0:
            return  # recovery replayed the whole journal: nothing is missing
        read = self._read(config, until_seq, until_offset, newest_ns, deliver)
        self._task = asyncio.create_task(read, name="clearing-fund-risk-history")

    async def _read(
        self,
        config: Config,
        until_seq: int,
        until_offset: int | None,
        newest_ns: int | None,
        deliver: Callable[[list[OracleTick]], None],
    ) -> None:
        started_s = time.perf_counter()
        try:
            ticks, first = await in_daemon_thread(
                read_oracle_window,
                config,
                until_seq,
                until_offset,
                newest_ns,
                self._window_ns,
                self._stop,
            )
        except ReadStopped:
            return
        except Exception as exc:  # an optional figure: the job goes on with what it has
            log.warning("fund risk: the oracle history before seq %d was not read back: %s",
                        until_seq, exc)  # fmt: skip
            return
        deliver(ticks)
        log.info(
            "fund risk: %d oracle ticks of seqs %d..%d read back from the journal in %.2f s",
            len(ticks), first, until_seq, time.perf_counter() - started_s,
        )  # fmt: skip

    def stop(self) -> None:
        """Exiting: abandon the read; the thread ends at its next check or with the
        process (a daemon thread: the interpreter does not wait for it)."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            self._task = None
