"""``LocalJournal.frame_windows``: raw frame windows for a verifier that checks frames
itself. Verified window by window (here, or by the native scanner with ``advance``),
they give exactly ``read``'s records and ``read``'s errors, and the journal still checks
each segment's start against where the previous window ended."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clearing.journal import FrameWindow, JournalCorrupt, LocalJournal, Record, _format

from .helpers import make_records, segment_paths, write_journal

Verifier = Callable[[FrameWindow], Iterator[Record]]


def _here(window: FrameWindow) -> Iterator[Record]:
    """Every frame read by the journal's own check, one at a time."""
    while not window.finished:
        yield window.read_record()


def _native(window: FrameWindow) -> Iterator[Record]:
    """The native scanner as the outside verifier: it checks a batch, the cursor moves
    past it, and a frame it refuses is read by the journal's check."""
    scan = _format._native_scan_frames
    assert scan is not None
    while not window.finished:
        batch, offset, seq, prev, problem = scan(
            window.buf, window.offset, window.end, window.seq, window.prev_hash,
            window.stop_seq, 5, 1 << 20,
        )  # fmt: skip
        window.advance(offset, seq, prev)
        yield from (Record(*fields) for fields in batch)
        if problem:
            yield window.read_record()


VERIFIERS = [_here]
if _format._native_scan_frames is not None:
    VERIFIERS.append(_native)


def _through_windows(
    journal: LocalJournal, verify: Verifier, from_seq: int, until: int | None
) -> list[Record]:
    out: list[Record] = []
    for window in journal.frame_windows(from_seq, until):
        out.extend(verify(window))
    return out


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Record]]:
    records = make_records(300, payload_bytes=60)
    write_journal(tmp_path / "j", records, segment_bytes=2048)
    assert len(segment_paths(tmp_path / "j")) > 5
    return tmp_path / "j", records


@pytest.mark.parametrize("verify", VERIFIERS)
def test_windows_give_the_records_read_gives(
    written: tuple[Path, list[Record]], verify: Verifier
) -> None:
    directory, _ = written
    with LocalJournal(directory, readonly=True) as journal:
        for from_seq, until in ((1, None), (1, 1), (37, 180), (299, None), (300, 300)):
            want = list(journal.read(from_seq, until))
            assert _through_windows(journal, verify, from_seq, until) == want
        assert list(journal.frame_windows(301)) == []


@pytest.mark.parametrize("verify", VERIFIERS)
def test_windows_raise_what_read_raises(
    written: tuple[Path, list[Record]], verify: Verifier
) -> None:
    directory, _ = written
    rng = random.Random(16)
    segments = [Path(p) for p in segment_paths(directory)]
    pristine = {path: path.read_bytes() for path in segments}
    for _ in range(40):
        path = rng.choice(segments[:-1])
        data = bytearray(pristine[path])
        data[rng.randrange(52, len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        with LocalJournal(directory, readonly=True, scan_mode="tail") as journal:
            with pytest.raises(JournalCorrupt) as read_error:
                list(journal.read())
            with pytest.raises(JournalCorrupt) as window_error:
                _through_windows(journal, verify, 1, None)
        assert str(window_error.value) == str(read_error.value)
        path.write_bytes(pristine[path])


def test_a_window_must_be_verified_before_the_next(written: tuple[Path, list[Record]]) -> None:
    directory, _ = written
    with LocalJournal(directory, readonly=True) as journal:
        windows = journal.frame_windows()
        first = next(windows)
        first.read_record()
        with pytest.raises(RuntimeError, match="left before all its frames"):
            next(windows)
        window = next(iter(journal.frame_windows(10)))
        assert window.seq == 10
        with pytest.raises(ValueError, match="cannot move back"):
            window.advance(window.offset - 1, window.seq, window.prev_hash)
        with pytest.raises(ValueError, match="past its end"):
            window.advance(window.end + 1, window.seq + 1, window.prev_hash)


def test_encode_frames_is_encode_frame_back_to_back() -> None:
    """The bulk framing (frame windows of decoded records) writes ``encode_frame``'s
    bytes, and each frame's end offset."""
    records = [
        Record(r.seq, r.source, r.payload, r.outputs, bytes([r.seq % 251]) * 32)
        for r in make_records(300, payload_bytes=90)
    ]
    buf, ends = _format.encode_frames(records)
    frames = [_format.encode_frame(record) for record in records]
    assert buf == b"".join(frames)
    assert ends == [sum(len(f) for f in frames[: i + 1]) for i in range(len(frames))]
    assert _format.encode_frames([]) == (b"", [])
