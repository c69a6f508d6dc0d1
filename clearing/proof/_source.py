"""Where the ledger of a proof comes from: a journal replayed to a seq, or a snapshot.

A journal (a directory, or the journal topic as ``kafka://HOST:PORT/TOPIC``, opened as
the audit commands open it) is replayed from seq 1 with every recorded output re-derived
and compared (``clearing.sequencer.recover``, the one definition of "the state at seq
N"), its snapshots left unused: a proof should not rest on a file the journal does not
vouch for. A snapshot file is loaded as it is, with the seq and chain hash its header
records.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from clearing.audit.sources import SourceError, is_kafka_source, open_journal, source_config
from clearing.engine import EngineCore, load_engine
from clearing.errors import ClearingError, UserError
from clearing.journal import JournalError
from clearing.sequencer import recover
from clearing.snapshot import SnapshotError, read_snapshot

__all__ = ["LedgerAt", "open_ledger"]


class LedgerAt(NamedTuple):
    """An engine at ``engine.seq`` and the journal's chain hash there."""

    engine: EngineCore
    chain_hash: bytes


def open_ledger(
    source: str, until_seq: int | None, core: str, config_path: str | None = None
) -> LedgerAt:
    """The ledger of ``source`` (a journal directory, ``kafka://...`` with ``config_path``
    for its settings, or a snapshot file); UserError if it cannot be read as asked."""
    if is_kafka_source(source) or os.path.isdir(source):
        return _from_journal(source, until_seq, core, config_path)
    if config_path is not None:
        raise UserError(f"--config applies to kafka:// sources only, not to {source}")
    if os.path.isfile(source):
        if until_seq is not None:
            raise UserError(
                f"--until needs a journal; {source} is a snapshot, taken at its own seq"
            )
        return _from_snapshot(source, core)
    raise UserError(
        f"{source}: no such journal directory or snapshot file (or kafka://HOST:PORT/TOPIC)"
    )


def _from_journal(
    source: str, until_seq: int | None, core: str, config_path: str | None
) -> LedgerAt:
    try:
        journal = open_journal(source, source_config(source, config_path))
    except SourceError as exc:
        raise UserError(str(exc)) from exc
    except JournalError as exc:
        raise UserError(f"cannot open journal {source}: {exc}") from exc
    try:
        if journal.last_seq == 0:
            raise UserError(f"the journal {source} holds no records: nothing to prove")
        if until_seq is not None and not 0 <= until_seq <= journal.last_seq:
            raise UserError(
                f"--until {until_seq} is outside the journal (seq 0..{journal.last_seq})"
            )
        # Under the rules the journal recorded (SPEC §9): the state it vouches for.
        result = recover(
            None, journal, until_seq=until_seq, core=core, rules_version=journal.rules_version
        )
        engine = result.engine
        return LedgerAt(engine, journal.hash_at(engine.seq))
    except UserError:
        raise
    except ClearingError as exc:
        raise UserError(f"cannot replay journal {source}: {exc}") from exc
    finally:
        journal.close()


def _from_snapshot(path: str, core: str) -> LedgerAt:
    try:
        snapshot = read_snapshot(path)
        engine = load_engine(snapshot.state, core)
    except (SnapshotError, ClearingError, OSError) as exc:
        raise UserError(f"cannot load snapshot {path}: {exc}") from exc
    if engine.seq != snapshot.journal_seq:
        raise UserError(
            f"snapshot {path} holds an engine at seq {engine.seq} but its header says "
            f"{snapshot.journal_seq}: it is damaged"
        )
    return LedgerAt(engine, snapshot.journal_hash)
