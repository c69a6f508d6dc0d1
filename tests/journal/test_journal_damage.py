"""Torn tails are truncated; every other kind of damage is refused, never read silently."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.journal import JournalCorrupt, LocalJournal, Record, repair_truncate, verify

from .helpers import make_records, read_segment, same, segment_paths, write_journal

SEGMENT_BYTES = 1024


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Record]]:
    """A journal of several segments."""
    records = make_records(60)
    directory = tmp_path / "j"
    write_journal(directory, records, segment_bytes=SEGMENT_BYTES)
    assert len(segment_paths(directory)) >= 4
    return directory, records


def open_records(directory: Path) -> list[Record]:
    with LocalJournal(directory, segment_bytes=SEGMENT_BYTES) as j:
        return list(j.read())


def flip(path: str, offset: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def torn_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "torn tail" in r.getMessage()]


# -- torn tails ----------------------------------------------------------------------


def test_torn_tail_at_every_offset_of_last_record(
    written: tuple[Path, list[Record]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory, records = written
    last = segment_paths(directory)[-1]
    _first, _prev, frames = read_segment(last)
    assert len(frames) >= 2
    start, end = frames[-1].offset, frames[-1].end
    for cut in range(start, end):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(directory, work)
        os.truncate(work / os.path.basename(last), cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="clearing.journal"):
            got = open_records(work)
        assert same(got, records[:-1]), cut
        messages = torn_warnings(caplog)
        if cut == start:
            assert messages == []  # a clean record boundary: nothing torn
        else:
            assert len(messages) == 1
            assert os.path.basename(last) in messages[0]
            assert f"offset {start}" in messages[0]
            assert f"dropped {cut - start} bytes" in messages[0]
        assert os.path.getsize(work / os.path.basename(last)) == start
        # The journal is writable again and the chain continues.
        with LocalJournal(work, segment_bytes=SEGMENT_BYTES) as j:
            j.append([records[-1]])
        assert same(open_records(work), records)
        shutil.rmtree(work)


def test_torn_first_record_of_new_segment_drops_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = make_records(40)
    directory = tmp_path / "j"
    write_journal(directory, records, segment_bytes=SEGMENT_BYTES, batch=1)
    last = segment_paths(directory)[-1]
    _first, _prev, frames = read_segment(last)
    keep = records[: frames[0].seq - 1]  # everything before the last segment
    for cut in range(0, frames[0].end):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(directory, work)
        os.truncate(work / os.path.basename(last), cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="clearing.journal"):
            got = open_records(work)
        assert same(got, keep), cut
        assert len(torn_warnings(caplog)) == 1
        assert not (work / os.path.basename(last)).exists()
        shutil.rmtree(work)


def test_zero_filled_tail_is_torn(written: tuple[Path, list[Record]]) -> None:
    directory, records = written
    last = segment_paths(directory)[-1]
    with open(last, "ab") as f:
        f.write(bytes(4096))
    assert same(open_records(directory), records)


def test_crc_mismatch_in_final_record_is_torn(
    written: tuple[Path, list[Record]], caplog: pytest.LogCaptureFixture
) -> None:
    directory, records = written
    last = segment_paths(directory)[-1]
    _first, _prev, frames = read_segment(last)
    flip(last, frames[-1].end - 3)
    with caplog.at_level(logging.WARNING, logger="clearing.journal"):
        assert same(open_records(directory), records[:-1])
    assert len(torn_warnings(caplog)) == 1


def test_readonly_open_leaves_torn_tail_alone(written: tuple[Path, list[Record]]) -> None:
    directory, records = written
    last = segment_paths(directory)[-1]
    size = os.path.getsize(last)
    os.truncate(last, size - 5)
    with LocalJournal(directory, readonly=True) as r:
        assert same(list(r.read()), records[:-1])
    assert os.path.getsize(last) == size - 5


# -- corruption ----------------------------------------------------------------------


def test_flipped_byte_in_middle_record(written: tuple[Path, list[Record]]) -> None:
    directory, _records = written
    paths = segment_paths(directory)
    middle = paths[len(paths) // 2]
    _first, _prev, frames = read_segment(middle)
    target = frames[len(frames) // 2]
    flip(middle, target.offset + 20)
    with pytest.raises(JournalCorrupt) as info:
        open_records(directory)
    err = info.value
    assert err.segment == middle and err.offset == target.offset
    text = str(err)
    assert os.path.basename(middle) in text and f"offset {target.offset}" in text
    assert "clearing journal verify" in text and "--repair-truncate" in text


def test_crc_mismatch_in_last_record_of_non_final_segment(
    written: tuple[Path, list[Record]],
) -> None:
    directory, _records = written
    first = segment_paths(directory)[0]
    _f, _p, frames = read_segment(first)
    flip(first, frames[-1].end - 1)
    with pytest.raises(JournalCorrupt) as info:
        open_records(directory)
    assert info.value.segment == first and info.value.offset == frames[-1].offset


def test_deleted_middle_segment(written: tuple[Path, list[Record]]) -> None:
    directory, _records = written
    paths = segment_paths(directory)
    os.unlink(paths[1])
    with pytest.raises(JournalCorrupt) as info:
        open_records(directory)
    assert info.value.segment == paths[2] and info.value.offset == 0


def test_deleted_first_segment(written: tuple[Path, list[Record]]) -> None:
    directory, _records = written
    paths = segment_paths(directory)
    os.unlink(paths[0])
    with pytest.raises(JournalCorrupt) as info:
        open_records(directory)
    assert info.value.segment == paths[1]


def test_swapped_segments(written: tuple[Path, list[Record]]) -> None:
    directory, _records = written
    paths = segment_paths(directory)
    a, b = paths[1], paths[2]
    os.rename(a, a + ".x")
    os.rename(b, a)
    os.rename(a + ".x", b)
    with pytest.raises(JournalCorrupt) as info:
        open_records(directory)
    assert info.value.segment == a and info.value.offset == 0
    assert "file name" in info.value.reason


def test_reordered_records_within_a_segment(written: tuple[Path, list[Record]]) -> None:
    """Swapping two intact frames keeps every CRC valid; seq and chain catch it."""
    directory, _records = written
    first = segment_paths(directory)[0]
    _f, _p, frames = read_segment(first)
    a, b = frames[1], frames[2]
    data = Path(first).read_bytes()
    swapped = data[: a.offset] + data[b.offset : b.end] + data[a.offset : a.end] + data[b.end :]
    Path(first).write_bytes(swapped)
    with pytest.raises(JournalCorrupt) as info:
        open_records(directory)
    assert info.value.segment == first and info.value.offset == a.offset


def test_forged_segment_header_breaks_the_chain(written: tuple[Path, list[Record]]) -> None:
    """Deleting a segment and relabelling the next one (header and name) to close the
    gap still fails: its prev_hash and records' chain do not match."""
    import crc32c

    directory, _records = written
    paths = segment_paths(directory)
    _f, _p, frames1 = read_segment(paths[1])
    data = bytearray(Path(paths[2]).read_bytes())
    data[8:16] = frames1[0].seq.to_bytes(8, "big")
    data[48:52] = crc32c.crc32c(bytes(data[:48])).to_bytes(4, "big")
    os.unlink(paths[1])
    os.unlink(paths[2])
    Path(paths[1]).write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as info:
        open_records(directory)
    assert info.value.segment == paths[1]


def test_truncated_middle_segment(written: tuple[Path, list[Record]]) -> None:
    directory, _records = written
    paths = segment_paths(directory)
    _f, _p, frames = read_segment(paths[1])
    for cut in (frames[-1].offset, frames[-1].offset + 7):  # at a boundary, and mid-record
        work = directory.parent / f"t{cut}"
        shutil.copytree(directory, work)
        os.truncate(work / os.path.basename(paths[1]), cut)
        with pytest.raises(JournalCorrupt) as info:
            open_records(work)
        # Either the truncated segment (mid-record) or its successor (gap) is named.
        assert os.path.basename(info.value.segment) in {
            os.path.basename(paths[1]),
            os.path.basename(paths[2]),
        }


def test_extra_segment_after_the_end(written: tuple[Path, list[Record]]) -> None:
    directory, _records = written
    last = segment_paths(directory)[-1]
    shutil.copy(last, directory / f"{99999:020d}.seg")
    with pytest.raises(JournalCorrupt) as info:
        open_records(directory)
    assert info.value.segment.endswith(f"{99999:020d}.seg")


def test_edited_record_with_fixed_crc_breaks_the_chain(
    written: tuple[Path, list[Record]],
) -> None:
    """A deliberate edit that also recomputes the CRC is caught by the hash chain."""
    import crc32c
    import msgspec

    directory, _records = written
    first = segment_paths(directory)[0]
    _f, _p, frames = read_segment(first)
    target = frames[2]
    data = bytearray(Path(first).read_bytes())
    body = data[target.offset + 14 : target.end]
    fields = msgspec.msgpack.decode(bytes(body))
    fields[2] = fields[2].replace(b"x", b"y", 1)  # same length payload edit
    new_body = msgspec.msgpack.encode(fields)
    assert len(new_body) == len(body)
    data[target.offset + 14 : target.end] = new_body
    data[target.offset + 10 : target.offset + 14] = crc32c.crc32c(new_body).to_bytes(4, "big")
    Path(first).write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as info:
        open_records(directory)
    assert "chain" in info.value.reason and info.value.offset == target.offset


def test_corrupt_journal_is_not_modified(written: tuple[Path, list[Record]]) -> None:
    directory, _records = written
    paths = segment_paths(directory)
    flip(paths[1], 60)
    before = {p: Path(p).read_bytes() for p in paths}
    with pytest.raises(JournalCorrupt):
        open_records(directory)
    assert {p: Path(p).read_bytes() for p in segment_paths(directory)} == before


# -- random damage (property) ---------------------------------------------------------


_PRISTINE: dict[str, bytes] = {}
_RECORDS = make_records(25, payload_bytes=30)


def _pristine() -> dict[str, bytes]:
    if not _PRISTINE:
        with tempfile.TemporaryDirectory() as d:
            write_journal(d, _RECORDS, segment_bytes=700, batch=4)
            for path in segment_paths(d):
                _PRISTINE[os.path.basename(path)] = Path(path).read_bytes()
        assert len(_PRISTINE) >= 3
    return _PRISTINE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_damage_never_reads_different_data(data: st.DataObject) -> None:
    files = _pristine()
    names = sorted(files)
    name = data.draw(st.sampled_from(names), label="segment")
    position = data.draw(st.integers(0, len(files[name]) - 1), label="offset")
    mask = data.draw(st.integers(1, 255), label="xor mask")
    last_name = names[-1]
    _f, _p, last_frames = read_segment_bytes(files[last_name])
    final_record_start = last_frames[-1][0]

    with tempfile.TemporaryDirectory() as d:
        for n, content in files.items():
            Path(d, n).write_bytes(content)
        flip(os.path.join(d, name), position, mask)
        handler = _ListHandler()
        logger = logging.getLogger("clearing.journal")
        logger.addHandler(handler)
        try:
            with LocalJournal(d, segment_bytes=700) as j:
                got = list(j.read())
        except JournalCorrupt as exc:
            assert os.path.basename(exc.segment) in names
            assert exc.offset >= 0
            return
        finally:
            logger.removeHandler(handler)
    # Opened: the damage must have been classified as a torn final record.
    assert name == last_name and position >= final_record_start, (name, position)
    assert same(got, _RECORDS[: len(got)])
    assert len(got) == len(_RECORDS) - 1
    assert any("torn tail" in m for m in handler.messages)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def read_segment_bytes(data: bytes) -> tuple[int, bytes, list[tuple[int, int]]]:
    with tempfile.TemporaryDirectory() as d:
        first_seq = int.from_bytes(data[8:16], "big")
        path = os.path.join(d, f"{first_seq:020d}.seg")
        Path(path).write_bytes(data)
        f, p, frames = read_segment(path)
        return f, p, [(fr.offset, fr.end) for fr in frames]


# -- repair --------------------------------------------------------------------------


def test_repair_truncate_cuts_at_first_bad_record(written: tuple[Path, list[Record]]) -> None:
    directory, records = written
    paths = segment_paths(directory)
    _f, _p, frames = read_segment(paths[1])
    target = frames[1]
    flip(paths[1], target.offset + 16)
    report = repair_truncate(directory)
    assert report.problem is not None and report.problem.segment == paths[1]
    assert report.problem.offset == target.offset
    assert report.deleted_segments == paths[2:]
    assert report.last_seq == target.seq - 1
    assert os.path.getsize(paths[1]) == target.offset
    assert same(open_records(directory), records[: target.seq - 1])
    assert verify(directory).ok
    # Re-ingesting the lost records continues the chain.
    with LocalJournal(directory, segment_bytes=SEGMENT_BYTES) as j:
        j.append(records[target.seq - 1 :])
    assert same(open_records(directory), records)


def test_repair_truncate_bad_first_record_of_segment_deletes_it(
    written: tuple[Path, list[Record]],
) -> None:
    directory, records = written
    paths = segment_paths(directory)
    _f, _p, frames = read_segment(paths[2])
    flip(paths[2], frames[0].offset + 30)
    report = repair_truncate(directory)
    assert report.deleted_segments == paths[2:]
    assert same(open_records(directory), records[: frames[0].seq - 1])


def test_repair_truncate_on_missing_segment(written: tuple[Path, list[Record]]) -> None:
    directory, records = written
    paths = segment_paths(directory)
    os.unlink(paths[2])
    report = repair_truncate(directory)
    assert report.problem is not None and report.problem.segment == paths[3]
    _f, _p, frames = read_segment(paths[1])
    assert same(open_records(directory), records[: frames[-1].seq])


def test_repair_truncate_clean_journal_is_a_no_op(written: tuple[Path, list[Record]]) -> None:
    directory, records = written
    before = {p: Path(p).read_bytes() for p in segment_paths(directory)}
    report = repair_truncate(directory)
    assert report.problem is None and report.bytes_dropped == 0
    assert report.last_seq == len(records)
    assert {p: Path(p).read_bytes() for p in segment_paths(directory)} == before


def test_repair_truncate_refuses_while_journal_open(written: tuple[Path, list[Record]]) -> None:
    from clearing.journal import JournalLocked

    directory, _records = written
    with LocalJournal(directory), pytest.raises(JournalLocked):
        repair_truncate(directory)
