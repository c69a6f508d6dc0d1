"""Read-only scanning of a journal directory: find the valid prefix and the first problem.

Shared by ``LocalJournal`` (open), ``verify``, ``info``, ``export`` and
``repair_truncate`` so that every tool classifies damage the same way:

* torn tail -- damage confined to the end of the LAST segment that an interrupted
  write can produce: a short record header, a short body, a CRC-bad final record
  that ends exactly at EOF, a bad record whose bytes from some point inside it to EOF
  are all zero (sectors that never landed), or a last segment with no complete record.
  ``LocalJournal`` truncates it (with a warning) when it opens the journal.
* anything else is corruption: ``LocalJournal`` refuses to open.
"""

from __future__ import annotations

import mmap
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import msgspec

from ._format import (
    GENESIS_HASH,
    SEGMENT_HEADER_BYTES,
    BadFrame,
    Record,
    SegmentHeaderError,
    decode_segment_header,
    parse_segment_name,
    verify_frames,
)

__all__ = ["Problem", "ScanResult", "SegmentInfo", "list_segments", "map_file", "scan"]

ScanMode = Literal["full", "tail"]


class Problem(msgspec.Struct, frozen=True, gc=False):
    """First problem found in a journal.

    ``offset`` is where the first bad record (0: the segment header / whole file)
    starts, i.e. the length of the valid prefix of ``segment``.  ``torn`` is true
    when this is a torn tail (recoverable by truncation on open).
    """

    segment: str
    offset: int
    reason: str
    torn: bool


@dataclass(slots=True)
class SegmentInfo:
    """A segment in the valid prefix: ``size_bytes`` is the size of its valid part."""

    first_seq: int
    path: str
    size_bytes: int
    last_seq: int


@dataclass(slots=True)
class ScanResult:
    directory: str
    segments: list[SegmentInfo]  # valid prefix
    all_paths: list[str]  # every segment file present, in seq order
    records: int  # records in the valid prefix
    last_seq: int
    head_hash: bytes
    last_record: Record | None
    problem: Problem | None = None
    # Index in ``all_paths`` of the problem's segment (len(all_paths) if no problem).
    problem_index: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(s.size_bytes for s in self.segments)


def list_segments(directory: str) -> list[tuple[int, str]]:
    """``(first_seq_from_name, path)`` of every segment file, sorted by seq."""
    found: list[tuple[int, str]] = []
    with os.scandir(directory) as it:
        for entry in it:
            seq = parse_segment_name(entry.name)
            if seq is not None:
                found.append((seq, entry.path))
    found.sort()
    return found


@contextmanager
def map_file(path: str) -> Iterator[tuple[bytes, int]]:
    """Map a file read-only; yields ``(buffer, size_bytes)``.

    mmap keeps replay free of per-record syscalls and copies; slices of it are
    plain ``bytes``, so no buffer export outlives the mapping.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            yield b"", 0
            return
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        try:
            mm.madvise(mmap.MADV_SEQUENTIAL)
            yield mm, size  # type: ignore[misc]  # mmap supports the bytes protocol used
        finally:
            mm.close()
    finally:
        os.close(fd)


def _read_header(path: str) -> tuple[bytes, int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, SEGMENT_HEADER_BYTES, 0), os.fstat(fd).st_size
    finally:
        os.close(fd)


def scan(directory: str, mode: ScanMode = "full") -> ScanResult:
    """Scan a journal directory without modifying it.

    ``full`` verifies every frame CRC, seq and the whole hash chain.  ``tail``
    checks only the headers of the earlier segments (name, CRC, first seq) and
    fully verifies the last segment, taking its header's prev_hash on trust; the
    chain across earlier segments is then checked lazily by ``read``.  If the last
    segment holds no valid record, the one before it is verified too, so that the
    head (last seq, head hash) is always known.
    """
    names = list_segments(directory)
    if mode == "full" or len(names) < 2:
        return _scan(directory, names, 0)
    result = _scan(directory, names, len(names) - 1)
    problem_index = result.problem_index
    if (
        result.problem is not None
        and problem_index == len(names) - 1
        and len(result.segments) == problem_index
    ):
        result = _scan(directory, names, len(names) - 2)
    return result


def _scan(directory: str, names: list[tuple[int, str]], full_from: int) -> ScanResult:
    """Segments before index ``full_from`` get a header check only; from there on
    every frame is verified, starting from the trusted header of ``full_from``."""
    result = ScanResult(
        directory=directory,
        segments=[],
        all_paths=[p for _, p in names],
        records=0,
        last_seq=0,
        head_hash=GENESIS_HASH,
        last_record=None,
        problem_index=len(names),
    )

    def fail(index: int, path: str, offset: int, reason: str, torn: bool) -> ScanResult:
        result.problem = Problem(path, offset, reason, torn)
        result.problem_index = index
        return result

    expected_seq = 1
    prev = GENESIS_HASH
    for index, (name_seq, path) in enumerate(names):
        is_last = index == len(names) - 1
        if index < full_from:
            header, size = _read_header(path)
            try:
                first_seq, seg_prev = decode_segment_header(header)
            except SegmentHeaderError as exc:
                return fail(index, path, 0, str(exc), False)
            if first_seq != name_seq:
                return fail(index, path, 0, _name_mismatch(first_seq, name_seq), False)
            if index == 0 and (first_seq != 1 or seg_prev != GENESIS_HASH):
                return fail(index, path, 0, "first segment does not start at seq 1", False)
            next_seq = names[index + 1][0]
            result.segments.append(SegmentInfo(first_seq, path, size, next_seq - 1))
            result.records += next_seq - first_seq
            expected_seq = next_seq
            continue

        with map_file(path) as (buf, size):
            if size < SEGMENT_HEADER_BYTES:
                return fail(index, path, 0, f"segment header truncated ({size} bytes)", is_last)
            try:
                first_seq, seg_prev = decode_segment_header(buf[:SEGMENT_HEADER_BYTES])
            except SegmentHeaderError as exc:
                zero = bytes(buf[:size]).count(0) == size
                return fail(index, path, 0, str(exc), is_last and zero)
            if first_seq != name_seq:
                return fail(index, path, 0, _name_mismatch(first_seq, name_seq), False)
            if index == full_from and index > 0:
                # Trust the header: earlier segments were not read.
                expected_seq, prev = first_seq, seg_prev
            if first_seq != expected_seq:
                return fail(
                    index,
                    path,
                    0,
                    f"segment starts at seq {first_seq} but seq {expected_seq} was expected "
                    "(missing, extra or reordered segment file)",
                    False,
                )
            if seg_prev != prev:
                return fail(
                    index,
                    path,
                    0,
                    "segment prev_hash does not match the previous segment's last record "
                    "(hash chain break between segments)",
                    False,
                )
            # deque(maxlen=1) drains the generator in C and keeps only the newest
            # record; on BadFrame it still holds the last good one.
            newest: deque[Record] = deque(maxlen=1)
            try:
                newest.extend(verify_frames(buf, SEGMENT_HEADER_BYTES, size, first_seq, prev))
            except BadFrame as bad:
                if newest:
                    _keep(result, first_seq, path, bad.offset, newest[0])
                return fail(index, path, bad.offset, bad.reason, is_last and bad.torn)
            if not newest:
                return fail(index, path, 0, "segment holds no records", is_last)
            last = newest[0]
            _keep(result, first_seq, path, size, last)
            expected_seq = last.seq + 1
            prev = last.chain_hash
    return result


def _keep(result: ScanResult, first_seq: int, path: str, size_bytes: int, last: Record) -> None:
    result.segments.append(SegmentInfo(first_seq, path, size_bytes, last.seq))
    result.records += last.seq - first_seq + 1  # seqs inside a segment are verified contiguous
    result.last_seq = last.seq
    result.head_hash = last.chain_hash
    result.last_record = last


def _name_mismatch(first_seq: int, name_seq: int) -> str:
    return f"segment header says first seq {first_seq} but the file name says {name_seq}"
