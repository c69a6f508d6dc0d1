"""Where a ledger comes from: a local journal directory (or a ``clearing demo`` directory)
or a snapshot file. Read-only: the journal is opened for reading and nothing is written.

The engine at the head (or at ``--until SEQ``) is rebuilt the way every reader does
(``clearing.sequencer.recover``: the newest snapshot that matches the journal, then the
journal's tail, every re-derived output checked against the recorded one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

from clearing.engine import EngineCore, load_engine
from clearing.errors import (
    CoreUnavailable,
    JournalError,
    RecoveryError,
    SnapshotError,
    StateFormatError,
    UserError,
)
from clearing.journal import LocalJournal
from clearing.risk._history import OracleTick, oracle_tick
from clearing.sequencer import recover
from clearing.snapshot import default_snapshot_dir, read_snapshot

__all__ = ["Ledger", "load_ledger", "oracle_history"]


class Ledger(NamedTuple):
    engine: EngineCore
    seq: int  # the last input applied
    journal_dir: str | None  # None for a snapshot file (it holds no history)


def _journal_dir(path: str) -> str:
    """The journal directory itself, or the ``journal/`` inside a ``clearing demo`` one."""
    inner = os.path.join(path, "journal")
    if os.path.isdir(inner) and not any(name.endswith(".seg") for name in os.listdir(path)):
        return inner
    return path


def load_ledger(path: str, until_seq: int | None, core: str) -> Ledger:
    """The ledger at ``until_seq`` (default: the head) on the named core."""
    if until_seq is not None and until_seq < 1:
        raise UserError(f"--until {until_seq}: give a sequence number of 1 or more")
    if os.path.isdir(path):
        return _from_journal(_journal_dir(path), until_seq, core)
    if os.path.isfile(path):
        return _from_snapshot(path, until_seq, core)
    raise UserError(f"{path}: no such file or directory; pass a journal directory or a snapshot")


def _from_journal(journal_dir: str, until_seq: int | None, core: str) -> Ledger:
    try:
        journal = LocalJournal(journal_dir, readonly=True, scan_mode="tail")
    except JournalError as exc:
        raise UserError(f"cannot open journal {journal_dir}: {exc}") from exc
    try:
        last = journal.last_seq
        if until_seq is not None and until_seq > last:
            raise UserError(f"--until {until_seq}: the journal ends at seq {last}")
        result = recover(default_snapshot_dir(journal_dir), journal, until_seq=until_seq, core=core)
    except CoreUnavailable as exc:
        raise UserError(str(exc)) from exc
    except (JournalError, RecoveryError) as exc:
        raise UserError(f"cannot rebuild the ledger from {journal_dir}: {exc}") from exc
    finally:
        journal.close()
    return Ledger(result.engine, result.engine.seq, journal_dir)


def _from_snapshot(path: str, until_seq: int | None, core: str) -> Ledger:
    try:
        snapshot = read_snapshot(path)
        engine = load_engine(snapshot.state, core)
    except CoreUnavailable as exc:
        raise UserError(str(exc)) from exc
    except (OSError, SnapshotError, StateFormatError) as exc:
        raise UserError(f"{path} is not a readable snapshot: {exc}") from exc
    if until_seq is not None and until_seq != engine.seq:
        raise UserError(
            f"--until {until_seq}: the snapshot holds the ledger at seq {engine.seq} only; "
            f"pass the journal directory to stop elsewhere"
        )
    return Ledger(engine, engine.seq, None)


def oracle_history(journal_dir: str, until_seq: int) -> Iterator[OracleTick]:
    """Every stamped, well-formed oracle input of the journal up to ``until_seq``."""
    try:
        journal = LocalJournal(journal_dir, readonly=True, scan_mode="tail")
    except JournalError as exc:
        raise UserError(f"cannot open journal {journal_dir}: {exc}") from exc
    try:
        for record in journal.read(1, until_seq):
            tick = oracle_tick(record.payload)
            if tick is not None:
                yield tick
    except JournalError as exc:
        raise UserError(f"cannot read journal {journal_dir}: {exc}") from exc
    finally:
        journal.close()
