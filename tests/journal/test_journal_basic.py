"""Round trips, batching, segment rolling, reopening and the write path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from clearing.journal import (
    GENESIS_HASH,
    Journal,
    JournalClosed,
    JournalLocked,
    LocalJournal,
    Record,
    chain_hash,
)

from .helpers import make_records, read_segment, same, segment_paths, write_journal


def test_empty_journal(tmp_path: Path) -> None:
    with LocalJournal(tmp_path / "j") as j:
        assert j.last_seq == 0
        assert j.head_hash == GENESIS_HASH
        assert j.last_record() is None
        assert list(j.read()) == []
        j.append([])  # an empty batch is a no-op
        assert segment_paths(tmp_path / "j") == []


def test_round_trip_odd_payloads(tmp_path: Path) -> None:
    payloads = [
        b'{"ok":1}',
        b"",  # empty input line
        b'{"broken json',  # malformed input is stored exactly as received
        bytes(range(256)),
        '{"name":"Zürich €"}'.encode(),
        b"x" * 70_000,
    ]
    records = [
        Record(i + 1, f"kafka:fills:{i % 2}:{100 + i}", p, b"out" * i)
        for i, p in enumerate(payloads)
    ]
    records.append(Record(len(records) + 1, "file:/tmp/ü.jsonl:1", b"{}"))
    with LocalJournal(tmp_path / "j") as j:
        j.append(records)
        got = list(j.read())
        head = j.head_hash
    assert same(got, records)
    with LocalJournal(tmp_path / "j") as j:
        again = list(j.read())
        assert same(again, records)
        assert j.head_hash == head
        assert j.last_record() == again[-1]
    # The stored chain is the documented one, recomputed from scratch.
    prev = GENESIS_HASH
    for rec in again:
        prev = chain_hash(prev, rec.seq, rec.source.encode(), rec.payload, rec.outputs)
        assert rec.chain_hash == prev
    assert prev == head


def test_independent_reader_agrees(tmp_path: Path) -> None:
    records = make_records(200)
    head = write_journal(tmp_path, records, segment_bytes=2048, batch=13)
    seen: list[Record] = []
    prev = GENESIS_HASH
    expected_first = 1
    for path in segment_paths(tmp_path):
        first_seq, prev_hash, frames = read_segment(path)
        assert first_seq == expected_first
        assert prev_hash == prev
        assert frames, "no empty segments"
        assert os.path.getsize(path) == frames[-1].end
        seen += [Record(f.seq, f.source, f.payload, f.outputs) for f in frames]
        prev = frames[-1].chain_hash
        expected_first = frames[-1].seq + 1
    assert same(seen, records)
    assert prev == head


def test_many_batches_and_ranges(tmp_path: Path) -> None:
    records = make_records(500)
    with LocalJournal(tmp_path, segment_bytes=4096) as j:
        for size in (1, 2, 3, 50, 1, 100, 343):
            start = j.last_seq
            j.append(records[start : start + size])
            assert j.last_seq == start + size
            assert j.last_record() is not None
            assert j.last_record().seq == start + size  # type: ignore[union-attr]
        assert j.last_seq == 500
        assert len(j.segments()) > 5
        for lo, hi in [(1, 500), (1, 1), (37, 38), (100, 399), (499, None), (500, 900)]:
            got = list(j.read(lo, hi))
            want = records[lo - 1 : (hi if hi is not None else 500)]
            assert same(got, want), (lo, hi)
        # Every segment boundary, from both sides.
        for seg in j.segments():
            for lo in (seg.first_seq - 1, seg.first_seq, seg.first_seq + 1):
                if 1 <= lo <= 500:
                    assert same(list(j.read(lo, lo + 2)), records[lo - 1 : lo + 2])
        assert list(j.read(501)) == []
        assert list(j.read(5, 4)) == []
        with pytest.raises(ValueError):
            j.read(0)


def test_read_range_is_frozen_at_call(tmp_path: Path) -> None:
    records = make_records(20)
    with LocalJournal(tmp_path) as j:
        j.append(records[:10])
        it = j.read()
        first = next(it)
        j.append(records[10:])
        rest = list(it)
    assert same([first, *rest], records[:10])


def test_segments_roll_by_size(tmp_path: Path) -> None:
    records = make_records(300, payload_bytes=100)
    segment_bytes = 1500
    write_journal(tmp_path, records, segment_bytes=segment_bytes, batch=40)
    paths = segment_paths(tmp_path)
    assert len(paths) > 10
    next_seq = 1
    for path in paths:
        first_seq, _prev, frames = read_segment(path)
        assert os.path.basename(path) == f"{first_seq:020d}.seg"
        assert first_seq == next_seq
        assert os.path.getsize(path) <= segment_bytes
        # Rolled only because the next record would not have fitted.
        next_seq = frames[-1].seq + 1
    assert next_seq == 301


def test_oversized_record_gets_its_own_segment(tmp_path: Path) -> None:
    small = make_records(3)
    big = Record(4, "file:x:4", b"B" * 5000)
    tail = make_records(2, start_seq=5)
    with LocalJournal(tmp_path, segment_bytes=1000) as j:
        j.append([*small, big, *tail])
        assert same(list(j.read()), [*small, big, *tail])
    sizes = [os.path.getsize(p) for p in segment_paths(tmp_path)]
    assert len(sizes) == 3 and sizes[1] > 5000


def test_reopen_continues_chain(tmp_path: Path) -> None:
    records = make_records(120)
    one_shot = write_journal(tmp_path / "a", records, segment_bytes=900, batch=120)
    for start, stop in [(0, 10), (10, 11), (11, 77), (77, 120)]:
        with LocalJournal(tmp_path / "b", segment_bytes=900) as j:
            assert j.last_seq == start
            j.append(records[start:stop])
    with LocalJournal(tmp_path / "b", segment_bytes=900) as j:
        assert same(list(j.read()), records)
        assert j.head_hash == one_shot
    # Deterministic: the same records and segment size give identical files.
    a = [Path(p).read_bytes() for p in segment_paths(tmp_path / "a")]
    b = [Path(p).read_bytes() for p in segment_paths(tmp_path / "b")]
    assert a == b


@pytest.mark.parametrize("policy", ["batch", "always", "never"])
def test_fsync_policies_store_the_same_bytes(tmp_path: Path, policy: str) -> None:
    records = make_records(60)
    write_journal(tmp_path / "ref", records, segment_bytes=800, batch=9)
    with LocalJournal(tmp_path / "p", segment_bytes=800, fsync=policy) as j:  # type: ignore[arg-type]
        for i in range(0, 60, 9):
            j.append(records[i : i + 9])
        j.sync()
        assert j.fsync_policy == policy
    ref = [Path(p).read_bytes() for p in segment_paths(tmp_path / "ref")]
    got = [Path(p).read_bytes() for p in segment_paths(tmp_path / "p")]
    assert ref == got


def test_group_commit_is_one_write_and_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = make_records(5001)
    with LocalJournal(tmp_path) as j:
        j.append(records[:1])  # segment exists; next batch only appends
        calls = {"write": 0, "fsync": 0}
        real_write, real_fdatasync = os.write, os.fdatasync

        def counting_write(fd: int, data: bytes) -> int:
            calls["write"] += 1
            return real_write(fd, data)

        def counting_fdatasync(fd: int) -> None:
            calls["fsync"] += 1
            real_fdatasync(fd)

        monkeypatch.setattr(os, "write", counting_write)
        monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
        monkeypatch.setattr("clearing.journal._local._fdatasync", counting_fdatasync)
        j.append(records[1:])
        monkeypatch.undo()
        assert calls == {"write": 1, "fsync": 1}
        assert j.last_seq == 5001


def test_append_rejects_bad_records_without_writing(tmp_path: Path) -> None:
    records = make_records(10)
    with LocalJournal(tmp_path) as j:
        j.append(records[:5])
        before = [Path(p).read_bytes() for p in segment_paths(tmp_path)]
        bad_batches: list[list[object]] = [
            [records[5], records[7]],  # gap
            [records[4]],  # duplicate seq
            [records[5], Record(7, "s", "not bytes")],  # type: ignore[arg-type]
            [records[5], "not a record"],
            [Record(6, "s", b"p", b"", b"\x00" * 32)],  # wrong chain hash
            [Record(6, "\ud800", b"p")],  # unencodable source
        ]
        for batch in bad_batches:
            with pytest.raises((ValueError, TypeError)):
                j.append(batch)  # type: ignore[arg-type]
            assert j.last_seq == 5
        assert [Path(p).read_bytes() for p in segment_paths(tmp_path)] == before
        # A correct chain_hash supplied by the caller (e.g. copying a journal) is accepted.
        copy_from = list(j.read())
    with LocalJournal(tmp_path / "copy") as c:
        c.append(copy_from)
        c.append(records[5:])
        assert same(list(c.read()), records)


def test_second_writer_is_locked_out(tmp_path: Path) -> None:
    with LocalJournal(tmp_path) as j:
        j.append(make_records(3))
        with pytest.raises(JournalLocked):
            LocalJournal(tmp_path)
        with LocalJournal(tmp_path, readonly=True) as r:  # readers need no lock
            assert r.last_seq == 3
            with pytest.raises(JournalClosed):
                r.append(make_records(1, start_seq=4))
    with LocalJournal(tmp_path) as j:  # lock released on close
        assert j.last_seq == 3


def test_owner_only_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_journal(tmp_path / "j", make_records(50), segment_bytes=600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "j").st_mode) == 0o700
    for path in [*segment_paths(tmp_path / "j"), str(tmp_path / "j" / "LOCK")]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_closed_and_failed_journal_refuse_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = make_records(10)
    j = LocalJournal(tmp_path)
    j.append(records[:3])

    def failing_write(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError):
        j.append(records[3:6])
    monkeypatch.undo()
    with pytest.raises(JournalClosed):
        j.append(records[3:6])
    j.close()
    j.close()  # idempotent
    with pytest.raises(JournalClosed):
        j.append(records[3:6])
    with LocalJournal(tmp_path) as j2:
        assert j2.last_seq == 3
        j2.append(records[3:])
        assert same(list(j2.read()), records)


def test_satisfies_protocol(tmp_path: Path) -> None:
    with LocalJournal(tmp_path) as j:
        assert isinstance(j, Journal)


def test_tail_scan_open(tmp_path: Path) -> None:
    records = make_records(200)
    head = write_journal(tmp_path, records, segment_bytes=1024)
    with LocalJournal(tmp_path, scan_mode="tail") as j:
        assert j.last_seq == 200 and j.head_hash == head
        j.append(make_records(5, start_seq=201))
        assert same(list(j.read(150)), [*records, *make_records(5, start_seq=201)][149:])


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalJournal(tmp_path, segment_bytes=10)
    with pytest.raises(ValueError):
        LocalJournal(tmp_path, fsync="sometimes")  # type: ignore[arg-type]
