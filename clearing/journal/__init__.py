"""Append-only, tamper-evident input journal.

``Journal`` is the storage-agnostic interface; ``LocalJournal`` stores it as
segment files in a directory.  The on-disk format is specified in
``clearing.journal._format``; durability policies in ``clearing.journal._local``.

Operator tools (read-only unless stated): ``verify`` (full check, first problem),
``info`` (cheap summary), ``export_payloads`` / ``export_jsonl`` (raw inputs in
order), ``repair_truncate`` (destructive: cut at the first bad record).
``hash_at`` gives the chain hash at a seq, to match a snapshot to the journal.

Readers (``JournalReader``: ``LocalJournal``, the Kafka journal reader) yield verified
records; ``LocalJournal.frame_windows`` also hands out raw frame windows, for a verifier
that checks frames itself (the native core's replay). The journal knows nothing of the
engine: the replay loop (``clearing.sequencer.replay``) decides which way to read.
"""

from ._errors import JournalClosed, JournalCorrupt, JournalError, JournalLocked
from ._format import (
    GENESIS_HASH,
    HASH_BYTES,
    Record,
    chain_hash,
    encode_frame,
    encode_frames,
    segment_name,
)
from ._local import DEFAULT_SEGMENT_BYTES, FrameWindow, FsyncPolicy, LocalJournal
from ._protocol import Journal, JournalReader, hash_at
from ._rules import RulesVersionConflict, settle_rules_version
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
    "FrameWindow",
    "FsyncPolicy",
    "Journal",
    "JournalClosed",
    "JournalCorrupt",
    "JournalError",
    "JournalInfo",
    "JournalLocked",
    "JournalReader",
    "LocalJournal",
    "Problem",
    "Record",
    "RepairReport",
    "RulesVersionConflict",
    "SegmentInfo",
    "SegmentSummary",
    "VerifyReport",
    "chain_hash",
    "encode_frame",
    "encode_frames",
    "export_jsonl",
    "export_payloads",
    "hash_at",
    "info",
    "repair_truncate",
    "segment_name",
    "settle_rules_version",
    "verify",
]
