"""Where a ledger comes from: a local journal directory (or a ``clearing demo`` directory),
the journal topic as ``kafka://HOST:PORT/TOPIC`` (opened as the audit commands open it,
with ``--config FILE`` for its settings), or a snapshot file. Read-only: the journal is
opened for reading and nothing is written.

The engine at the head (or at ``--until SEQ``) is rebuilt the way every reader does
(``clearing.sequencer.recover``: for a directory the newest snapshot that matches the
journal, then the journal's tail; for the topic, which has no snapshots beside it, the
whole journal; every re-derived output checked against the recorded one, under the rules
version the journal recorded).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from clearing.audit.sources import SourceError, is_kafka_source, open_journal, source_config
from clearing.engine import EngineCore, load_engine
from clearing.errors import (
    CoreUnavailable,
    JournalError,
    RecoveryError,
    SnapshotError,
    StateFormatError,
    UserError,
)
from clearing.journal import JournalReader, LocalJournal
from clearing.risk._history import OracleTick, oracle_tick
from clearing.sequencer import recover
from clearing.snapshot import default_snapshot_dir, read_snapshot

__all__ = ["Ledger", "load_ledger", "oracle_history", "oracle_ticks"]


class _OpenJournal(JournalReader, Protocol):
    """A journal reader that is closed after use (a directory or the topic)."""

    def close(self) -> None: ...


class Ledger(NamedTuple):
    engine: EngineCore
    seq: int  # the last input applied
    # The journal the ledger was rebuilt from, for ``oracle_history``: the directory or the
    # kafka:// topic (None for a snapshot file: it holds no history).
    journal: str | None
    config_path: str | None = None  # --config, for a kafka:// journal


def _journal_dir(path: str) -> str:
    """The journal directory itself, or the ``journal/`` inside a ``clearing demo`` one."""
    inner = os.path.join(path, "journal")
    if os.path.isdir(inner) and not any(name.endswith(".seg") for name in os.listdir(path)):
        return inner
    return path


def load_ledger(
    path: str, until_seq: int | None, core: str, config_path: str | None = None
) -> Ledger:
    """The ledger at ``until_seq`` (default: the head) on the named core; ``config_path``
    is the configuration of a ``kafka://`` source (its security settings)."""
    if until_seq is not None and until_seq < 1:
        raise UserError(f"--until {until_seq}: give a sequence number of 1 or more")
    if is_kafka_source(path):
        return _from_topic(path, until_seq, core, config_path)
    if config_path is not None:
        raise UserError(f"--config applies to kafka:// sources only, not to {path}")
    if os.path.isdir(path):
        return _from_journal(_journal_dir(path), until_seq, core)
    if os.path.isfile(path):
        return _from_snapshot(path, until_seq, core)
    raise UserError(
        f"{path}: no such file or directory; pass a journal directory, "
        f"kafka://HOST:PORT/TOPIC or a snapshot"
    )


def _open(source: str, config_path: str | None) -> _OpenJournal:
    """A read-only reader of the journal directory or topic ``source``; UserError if none."""
    try:
        return open_journal(source, source_config(source, config_path))
    except SourceError as exc:
        raise UserError(str(exc)) from exc
    except JournalError as exc:
        raise UserError(f"cannot open journal {source}: {exc}") from exc


def _from_journal(journal_dir: str, until_seq: int | None, core: str) -> Ledger:
    try:
        journal = LocalJournal(journal_dir, readonly=True, scan_mode="tail")
    except JournalError as exc:
        raise UserError(f"cannot open journal {journal_dir}: {exc}") from exc
    try:
        last = journal.last_seq
        if until_seq is not None and until_seq > last:
            raise UserError(f"--until {until_seq}: the journal ends at seq {last}")
        result = recover(
            default_snapshot_dir(journal_dir),
            journal,
            until_seq=until_seq,
            core=core,
            rules_version=journal.rules_version,  # a version-2 ledger (the demo's) replays as one
        )
    except CoreUnavailable as exc:
        raise UserError(str(exc)) from exc
    except (JournalError, RecoveryError) as exc:
        raise UserError(f"cannot rebuild the ledger from {journal_dir}: {exc}") from exc
    finally:
        journal.close()
    return Ledger(result.engine, result.engine.seq, journal_dir)


def _from_topic(source: str, until_seq: int | None, core: str, config_path: str | None) -> Ledger:
    journal = _open(source, config_path)
    try:
        last = journal.last_seq
        if until_seq is not None and until_seq > last:
            raise UserError(f"--until {until_seq}: the journal ends at seq {last}")
        # Under the rules the journal recorded, as clearing proof build replays the topic.
        result = recover(
            None, journal, until_seq=until_seq, core=core, rules_version=journal.rules_version
        )
    except CoreUnavailable as exc:
        raise UserError(str(exc)) from exc
    except (JournalError, RecoveryError) as exc:
        raise UserError(f"cannot rebuild the ledger from {source}: {exc}") from exc
    finally:
        journal.close()
    return Ledger(result.engine, result.engine.seq, source, config_path)


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


def oracle_history(
    journal: str, until_seq: int, config_path: str | None = None
) -> Iterator[OracleTick]:
    """Every stamped, well-formed oracle input of the journal (a directory, or a
    ``kafka://`` topic with ``config_path`` for its settings) up to ``until_seq``."""
    reader = _open(journal, config_path)
    try:
        yield from oracle_ticks(reader, until_seq)
    except JournalError as exc:
        raise UserError(f"cannot read journal {journal}: {exc}") from exc
    finally:
        reader.close()


def oracle_ticks(reader: JournalReader, until_seq: int) -> Iterator[OracleTick]:
    """The stamped oracle inputs of any open journal reader up to ``until_seq``."""
    for record in reader.read(1, until_seq):
        tick = oracle_tick(record.payload)
        if tick is not None:
            yield tick
