"""verify / info / export."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from clearing.journal import (
    GENESIS_HASH,
    JournalCorrupt,
    LocalJournal,
    Record,
    export_jsonl,
    export_payloads,
    info,
    verify,
)

from .helpers import make_records, read_segment, segment_paths, write_journal


def test_verify_clean(tmp_path: Path) -> None:
    records = make_records(100)
    head = write_journal(tmp_path, records, segment_bytes=1500)
    report = verify(tmp_path)
    assert report.ok and report.problem is None
    assert report.records == 100 and report.first_seq == 1 and report.last_seq == 100
    assert report.head_hash == head
    assert report.segments == len(segment_paths(tmp_path))
    assert (
        report.size_bytes
        == report.valid_bytes
        == sum(os.path.getsize(p) for p in segment_paths(tmp_path))
    )


def test_verify_empty_and_missing(tmp_path: Path) -> None:
    LocalJournal(tmp_path / "j").close()
    report = verify(tmp_path / "j")
    assert report.ok and report.records == 0 and report.first_seq == 0
    assert report.head_hash == GENESIS_HASH
    with pytest.raises(FileNotFoundError):
        verify(tmp_path / "nope")


def test_verify_reports_first_problem_without_changing_anything(tmp_path: Path) -> None:
    records = make_records(100)
    write_journal(tmp_path, records, segment_bytes=1500)
    paths = segment_paths(tmp_path)
    _f, _p, frames = read_segment(paths[1])
    with open(paths[1], "r+b") as f:
        f.seek(frames[3].offset + 20)
        f.write(b"\xff")
    before = Path(paths[1]).read_bytes()
    report = verify(tmp_path)
    assert not report.ok
    assert report.problem is not None
    assert report.problem.segment == paths[1] and report.problem.offset == frames[3].offset
    assert not report.problem.torn
    assert report.last_seq == frames[3].seq - 1 == report.records
    assert Path(paths[1]).read_bytes() == before


def test_verify_reports_torn_tail(tmp_path: Path) -> None:
    write_journal(tmp_path, make_records(30), segment_bytes=1500)
    last = segment_paths(tmp_path)[-1]
    os.truncate(last, os.path.getsize(last) - 3)
    report = verify(tmp_path)
    assert report.problem is not None and report.problem.torn
    assert report.last_seq == 29


def test_info(tmp_path: Path) -> None:
    head = write_journal(tmp_path, make_records(100), segment_bytes=1500)
    summary = info(tmp_path)
    assert summary.last_seq == 100 and summary.records == 100 and summary.head_hash == head
    assert summary.problem is None
    assert summary.segments[0].first_seq == 1
    assert summary.segments[-1].last_seq == 100
    for a, b in zip(summary.segments, summary.segments[1:], strict=False):
        assert b.first_seq == a.last_seq + 1


def test_export(tmp_path: Path) -> None:
    records = make_records(50)
    write_journal(tmp_path, records, segment_bytes=1500)
    assert list(export_payloads(tmp_path)) == [r.payload for r in records]
    assert list(export_payloads(tmp_path, 10, 12)) == [r.payload for r in records[9:12]]
    out = io.BytesIO()
    assert export_jsonl(tmp_path, out) == 50
    assert out.getvalue().split(b"\n")[:-1] == [r.payload for r in records]


def test_export_refuses_newline_payload(tmp_path: Path) -> None:
    with LocalJournal(tmp_path) as j:
        j.append([Record(1, "s:1", b"{}"), Record(2, "s:2", b"{\n}")])
    with pytest.raises(ValueError, match="seq 2"):
        export_jsonl(tmp_path, io.BytesIO())


def test_export_detects_corruption(tmp_path: Path) -> None:
    write_journal(tmp_path, make_records(100), segment_bytes=1500)
    paths = segment_paths(tmp_path)
    with open(paths[0], "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x00")
    with pytest.raises(JournalCorrupt):
        list(export_payloads(tmp_path))


def test_lazy_read_check_in_tail_mode(tmp_path: Path) -> None:
    """A tail scan does not read early segments; ``read`` still refuses bad data."""
    write_journal(tmp_path, make_records(100), segment_bytes=1500)
    paths = segment_paths(tmp_path)
    with open(paths[0], "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x00")
    with LocalJournal(tmp_path, scan_mode="tail") as j:
        assert j.last_seq == 100
        with pytest.raises(JournalCorrupt) as info_:
            list(j.read())
        assert info_.value.segment == paths[0]


def test_hash_at(tmp_path: Path) -> None:
    from clearing.journal import hash_at

    records = make_records(40)
    write_journal(tmp_path, records, segment_bytes=900)
    with LocalJournal(tmp_path) as j:
        assert hash_at(j, 0) == GENESIS_HASH
        assert hash_at(j, 40) == j.head_hash
        stored = list(j.read())
        for seq in (1, 17, 39):
            assert hash_at(j, seq) == stored[seq - 1].chain_hash
        with pytest.raises(ValueError):
            hash_at(j, 41)


def test_tail_scan_with_torn_empty_last_segment(tmp_path: Path) -> None:
    """A crash right after a segment roll leaves a last segment with no complete
    record; tail scans must still find the head in the segment before it."""
    records = make_records(60)
    head = write_journal(tmp_path, records, segment_bytes=900)
    before = segment_paths(tmp_path)
    with LocalJournal(tmp_path, segment_bytes=900) as j:
        j.append([Record(61, "s", b"z" * 2000)])  # larger than a segment: forces a roll
    newest = segment_paths(tmp_path)[-1]
    assert newest not in before
    os.truncate(newest, os.path.getsize(newest) - 100)
    summary = info(tmp_path)
    assert summary.problem is not None and summary.problem.torn
    assert summary.last_seq == 60 and summary.head_hash == head
    with LocalJournal(tmp_path, readonly=True, scan_mode="tail") as r:
        assert r.last_seq == 60 and r.head_hash == head
        assert [rec.seq for rec in r.read(59)] == [59, 60]
    assert os.path.exists(newest)  # read-only: untouched
    with LocalJournal(tmp_path, scan_mode="tail", segment_bytes=900) as j:
        assert j.last_seq == 60 and j.head_hash == head
    assert not os.path.exists(newest)
