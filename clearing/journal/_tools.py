"""Operator tools over a journal directory: verify, info, export, repair.

These back the ``clearing journal ...`` commands.  All but ``repair_truncate`` are
read-only and may run while the daemon is writing (a record being written at that
moment shows up as a torn tail).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import BinaryIO

import msgspec

from ._local import LocalJournal, acquire_lock, cut_at
from ._scan import Problem, scan

__all__ = [
    "JournalInfo",
    "RepairReport",
    "SegmentSummary",
    "VerifyReport",
    "export_jsonl",
    "export_payloads",
    "info",
    "repair_truncate",
    "verify",
]

log = logging.getLogger("clearing.journal")


class VerifyReport(msgspec.Struct, frozen=True, gc=False):
    """Result of a full verification.

    ``records``, ``first_seq``, ``last_seq``, ``head_hash`` and ``valid_bytes``
    describe the valid prefix (everything before ``problem``).  ``problem`` is the
    first thing wrong; ``problem.torn`` means it is only a torn tail, which the
    next writable open truncates by itself.
    """

    directory: str
    segments: int  # segment files present
    size_bytes: int  # total size of the segment files on disk
    valid_bytes: int
    records: int
    first_seq: int  # 0 when there is no valid record
    last_seq: int
    head_hash: bytes
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _disk_bytes(paths: list[str]) -> int:
    return sum(os.stat(p).st_size for p in paths)


def verify(directory: str | os.PathLike[str]) -> VerifyReport:
    """Check every segment header, frame CRC, seq and the whole hash chain.

    Never modifies anything.  Raises ``FileNotFoundError`` if the directory is missing.
    """
    d = os.fspath(directory)
    if not os.path.isdir(d):
        raise FileNotFoundError(d)
    result = scan(d, "full")
    return VerifyReport(
        directory=d,
        segments=len(result.all_paths),
        size_bytes=_disk_bytes(result.all_paths),
        valid_bytes=result.total_bytes,
        records=result.records,
        first_seq=1 if result.records else 0,
        last_seq=result.last_seq,
        head_hash=result.head_hash,
        problem=result.problem,
    )


class SegmentSummary(msgspec.Struct, frozen=True, gc=False):
    name: str
    first_seq: int
    last_seq: int
    size_bytes: int


class JournalInfo(msgspec.Struct, frozen=True, gc=False):
    """Cheap summary: segment headers plus a full check of the last segment only."""

    directory: str
    segments: list[SegmentSummary]
    size_bytes: int
    records: int
    last_seq: int
    head_hash: bytes
    problem: Problem | None


def info(directory: str | os.PathLike[str]) -> JournalInfo:
    d = os.fspath(directory)
    if not os.path.isdir(d):
        raise FileNotFoundError(d)
    result = scan(d, "tail")
    return JournalInfo(
        directory=d,
        segments=[
            SegmentSummary(os.path.basename(s.path), s.first_seq, s.last_seq, s.size_bytes)
            for s in result.segments
        ],
        size_bytes=_disk_bytes(result.all_paths),
        records=result.records,
        last_seq=result.last_seq,
        head_hash=result.head_hash,
        problem=result.problem,
    )


def export_payloads(
    directory: str | os.PathLike[str], from_seq: int = 1, until_seq: int | None = None
) -> Iterator[bytes]:
    """Yield the raw input payloads in seq order (verified as they are read).

    A torn tail is skipped with a warning; corruption raises ``JournalCorrupt``
    (possibly after some payloads were already yielded).
    """
    journal = LocalJournal(directory, readonly=True, scan_mode="tail")
    try:
        for rec in journal.read(from_seq, until_seq):
            yield rec.payload
    finally:
        journal.close()


def export_jsonl(
    directory: str | os.PathLike[str],
    out: BinaryIO,
    from_seq: int = 1,
    until_seq: int | None = None,
) -> int:
    """Write payloads one per line (payload + b"\\n") to ``out``; returns the count.

    Raises ``ValueError`` on a payload containing a newline, which JSON Lines cannot
    carry losslessly (output already written stays written).
    """
    count = 0
    seq = from_seq
    for payload in export_payloads(directory, from_seq, until_seq):
        if b"\n" in payload:
            raise ValueError(f"payload of seq {seq} contains a newline; cannot export as JSONL")
        out.write(payload)
        out.write(b"\n")
        count += 1
        seq += 1
    return count


class RepairReport(msgspec.Struct, frozen=True, gc=False):
    """What ``repair_truncate`` did.  ``problem`` is None when nothing needed repair."""

    directory: str
    problem: Problem | None
    bytes_dropped: int
    deleted_segments: list[str]
    last_seq: int
    head_hash: bytes


def repair_truncate(directory: str | os.PathLike[str]) -> RepairReport:
    """Cut the journal at its first problem (torn tail or corruption).

    The segment holding the first bad record is truncated just before it (or
    deleted if no good record precedes it in that segment) and every later segment
    is deleted.  Destroys data: only on an explicit operator request.  Takes the
    writer lock, so it cannot run while the daemon has the journal open.
    """
    d = os.fspath(directory)
    if not os.path.isdir(d):
        raise FileNotFoundError(d)
    lock_fd = acquire_lock(d)
    try:
        result = scan(d, "full")
        if result.problem is None:
            return RepairReport(d, None, 0, [], result.last_seq, result.head_hash)
        problem = result.problem
        dropped_bytes, deleted = cut_at(result)
        log.warning(
            "journal %s: repair cut at segment %s byte offset %d (%s): dropped %d bytes, "
            "deleted %d segment file(s); last seq is now %d",
            d,
            problem.segment,
            problem.offset,
            problem.reason,
            dropped_bytes,
            len(deleted),
            result.last_seq,
        )
        after = scan(d, "full")
        if after.problem is not None:  # cannot happen: the cut keeps only verified records
            raise RuntimeError(f"journal {d} still has a problem after repair: {after.problem}")
        return RepairReport(d, problem, dropped_bytes, deleted, after.last_seq, after.head_hash)
    finally:
        os.close(lock_fd)
