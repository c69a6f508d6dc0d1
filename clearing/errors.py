"""Every error the clearing packages raise on purpose, in one tree.

Catch ``ClearingError`` to catch them all; catch a branch to catch one kind of trouble.
The modules that raise them re-export them (``clearing.journal.JournalError`` is
``clearing.errors.JournalError``), so both import paths work. This module imports
nothing of ours: every layer, the engine included, may import it.

    ClearingError
    ├── UserError               a person's mistake at the terminal: one line, exit code 2
    ├── ConfigError             the configuration is invalid (the daemon exits 2)
    ├── CoreUnavailable         the native engine core is asked for but not installed
    ├── InvariantViolation      the ledger does not balance: a bug, never an input problem
    ├── StateFormatError        bytes that are not an engine state of this version
    ├── SnapshotError           a snapshot file failed validation
    ├── JournalError            the journal cannot be read or written as asked
    │   ├── JournalLocked       another writer holds the journal
    │   ├── JournalClosed       closed, or left unusable by a failed write
    │   ├── JournalCorrupt      an integrity check failed (segment and byte offset)
    │   └── KafkaJournalError   the journal topic is missing, truncated or does not verify
    ├── RecoveryError           the state cannot be rebuilt safely
    │   └── OutputDivergence    a replayed record re-derived other outputs than it recorded
    ├── RulesVersionMismatch    the journal records another rules version than the
    │                           ledger being followed runs (a restart takes the journal's)
    ├── SequencerBroken         a journal write or invariant check failed mid-run
    ├── ProofInvalid            a proof of liabilities does not verify (which check failed)
    └── ScenarioFailed          a stress scenario's engine run failed (in its child process)

Some also derive from the built-in they stood for before the tree existed
(``InvariantViolation`` is an ``AssertionError``, ``StateFormatError`` a ``ValueError``,
``CoreUnavailable`` and ``SequencerBroken`` ``RuntimeError``s), so older ``except``
clauses keep catching them.
"""

from __future__ import annotations

import os
from typing import ClassVar

__all__ = [
    "ClearingError",
    "ConfigError",
    "CoreUnavailable",
    "InvariantViolation",
    "JournalClosed",
    "JournalCorrupt",
    "JournalError",
    "JournalLocked",
    "KafkaJournalError",
    "OutputDivergence",
    "ProofInvalid",
    "RecoveryError",
    "RulesVersionMismatch",
    "ScenarioFailed",
    "SequencerBroken",
    "SnapshotError",
    "StateFormatError",
    "UserError",
]


class ClearingError(Exception):
    """The root of every error the clearing packages raise on purpose."""


class UserError(ClearingError):
    """A problem the person at the terminal can fix. ``clearing`` prints its message as
    one line, without a traceback, and exits with ``exit_code``."""

    exit_code: ClassVar[int] = 2


class ConfigError(ClearingError):
    """The configuration is invalid; the message names the key and what is expected."""


class CoreUnavailable(ClearingError, RuntimeError):
    """The native engine core was asked for but the extension is not installed."""


class InvariantViolation(ClearingError, AssertionError):
    """The ledger no longer balances: a bug, never an input problem. Stop, do not go on."""


class StateFormatError(ClearingError, ValueError):
    """The bytes are not an engine state of this version."""


class SnapshotError(ClearingError):
    """A snapshot file failed validation (the message says why)."""


class JournalError(ClearingError):
    """Base class of every journal error."""


class JournalLocked(JournalError):
    """Another process (or another ``LocalJournal`` object) holds the writer lock."""


class JournalClosed(JournalError):
    """The journal was closed, or a failed write left it unusable until it is reopened."""


class JournalCorrupt(JournalError):
    """The journal failed an integrity check somewhere other than a torn tail.

    ``segment`` is the path of the segment file and ``offset`` the byte offset inside
    it where the first bad record (or the bad segment header, offset 0) starts.
    Nothing is modified when this is raised: the operator decides what to do.
    """

    def __init__(self, directory: str, segment: str, offset: int, reason: str) -> None:
        self.directory = directory
        self.segment = segment
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"journal corrupt: {reason} (segment {segment}, byte offset {offset}). "
            f"Nothing was changed. Inspect with `clearing journal verify {directory}`; "
            f"`clearing journal verify --repair-truncate {directory}` cuts the journal at "
            f"the last good record before this point (records after it are deleted and "
            f"must be re-ingested from their sources)."
        )

    @property
    def segment_name(self) -> str:
        return os.path.basename(self.segment)


class KafkaJournalError(JournalError):
    """The journal topic is missing, truncated, out of sequence or does not verify."""


class RecoveryError(ClearingError):
    """The state cannot be rebuilt safely; the message says why and what to do."""


class OutputDivergence(RecoveryError):
    """Replaying a journal record gave different outputs from the ones it recorded."""

    def __init__(self, seq: int, recorded: bytes, derived: bytes) -> None:
        super().__init__(
            f"journal seq {seq}: re-derived outputs differ from the recorded ones\n"
            f"  recorded: {recorded[:300]!r}\n  derived:  {derived[:300]!r}"
        )
        self.seq = seq
        self.recorded = recorded
        self.derived = derived


class RulesVersionMismatch(ClearingError):
    """A journal record carries another rules version than the ledger in memory: it was
    started on an empty journal under the configured version, and the active writes
    another. Not a broken journal: a restart recovers under the journal's version."""


class SequencerBroken(ClearingError, RuntimeError):
    """A journal write or invariant check failed; restart and recover from the journal."""


class ProofInvalid(ClearingError):
    """A proof of liabilities does not verify; the message is the first check that failed,
    in one line (``clearing proof verify`` prints it and exits 1)."""


class ScenarioFailed(ClearingError):
    """A stress or risk scenario could not be run through the engine: a bug, not a
    property of the ledger (the message carries the child process's last error line)."""
