"""Append-only, tamper-evident input journal.

``Journal`` is the storage-agnostic interface; ``LocalJournal`` stores it as
segment files in a directory.  The on-disk format is specified in
``clearing.journal._format``; durability policies in ``clearing.journal._local``.

Operator tools (read-only unless stated): ``verify`` (full check, first problem),
``info`` (cheap summary), ``export_payloads`` / ``export_jsonl`` (raw inputs in
order), ``repair_truncate`` (destructive: cut at the first bad record).
``hash_at`` gives the chain hash at a seq, to match a snapshot to the journal.
"""

from ._errors import JournalClosed, JournalCorrupt, JournalError, JournalLocked
from ._format import GENESIS_HASH, HASH_BYTES, Record, chain_hash, segment_name
from ._local import DEFAULT_SEGMENT_BYTES, FsyncPolicy, LocalJournal
from ._protocol import Journal, hash_at
from ._scan import Problem, SegmentInfo
from ._tools import (
    JournalInfo,
    RepairReport,
    SegmentSummary,
    VerifyReport,
    export_jsonl,
    export_payloads,
    info,
    repair_truncate,
    verify,
)

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "GENESIS_HASH",
    "HASH_BYTES",
    "FsyncPolicy",
    "Journal",
    "JournalClosed",
    "JournalCorrupt",
    "JournalError",
    "JournalInfo",
    "JournalLocked",
    "LocalJournal",
    "Problem",
    "Record",
    "RepairReport",
    "SegmentInfo",
    "SegmentSummary",
    "VerifyReport",
    "chain_hash",
    "export_jsonl",
    "export_payloads",
    "hash_at",
    "info",
    "repair_truncate",
    "segment_name",
    "verify",
]
