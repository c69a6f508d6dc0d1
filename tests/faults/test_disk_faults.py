"""Disk faults: a full disk, a read-only file system, torn writes, bit flips in segments and
snapshots, failed fsyncs. Each must end in exact recovery (the state after exactly the
journaled inputs, every acknowledged input among them) or a clear refusal, never in a
ledger that differs from a replay. Tests run as root, so "read-only" is simulated by
refusing write opens (``os.open``/``os.mkdir`` raising EROFS), and "disk full" by an
``os.write`` with a byte budget for the files under the test directory: both go through
the real code paths of the journal, the sequencer and the snapshot writer."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import clearing.journal._local as journal_local
import clearing.snapshot._snapshot as snapshot_impl
from clearing.cli import main
from clearing.engine.persist import dump_state
from clearing.journal import JournalCorrupt, JournalError, LocalJournal, verify
from clearing.sequencer import RecoveryError, Sequencer, SequencerBroken
from clearing.snapshot import list_snapshots

from .conftest import drop, feed, journal_sources, open_sequencer, resume_position, state_after


class Disk:
    """``os.write`` for files under ``root`` with ``free`` bytes left: a write that does not
    fit writes what fits, then fails with ENOSPC, as a full file system does."""

    def __init__(self, root: Path, free: int) -> None:
        self.root = str(root)
        self.free = free
        self.real = os.write

    def write(self, fd: int, data: Any) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(self.root):
            return self.real(fd, data)
        view = memoryview(data).cast("B")
        if len(view) <= self.free:
            self.free -= len(view)
            return self.real(fd, view)
        if self.free:
            written = self.real(fd, view[: self.free])
            self.free -= written
            return written  # a short write; the next call raises
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


_STATES: dict[tuple[int, int], bytes] = {}


def expected_state(lines: list[bytes], count: int) -> bytes:
    key = (id(lines), count)  # `lines` is the session's one stream
    if key not in _STATES:
        _STATES[key] = state_after(lines[:count])
    return _STATES[key]


def expect_exact(root: Path, lines: list[bytes], acked: int, sent: int) -> Sequencer:
    """Reopen; the journal must hold every acknowledged input and only inputs that were
    sent, in order, and the recovered state must be theirs exactly."""
    sequencer, _ = open_sequencer(root)
    last = sequencer.journal.last_seq
    assert acked <= last <= sent
    assert journal_sources(root) == [f"line:{i}" for i in range(1, last + 1)]
    assert dump_state(sequencer.engine) == expected_state(lines, last)
    assert verify(root / "journal").ok
    return sequencer


# -- a full disk -----------------------------------------------------------------------


@pytest.mark.parametrize("free", [0, 30, 52, 53, 66, 400, 1500, 4000, 9000])
def test_disk_full_refuses_then_recovers_exactly(
    tmp_path: Path, lines: list[bytes], free: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(tmp_path, free)
    monkeypatch.setattr(os, "write", disk.write)
    sequencer, _ = open_sequencer(tmp_path, fsync="batch")
    acked = 0
    with pytest.raises(OSError) as failure:
        while True:
            acked = feed(sequencer, lines, acked, acked + 7, 7)
    assert failure.value.errno == errno.ENOSPC
    with pytest.raises(SequencerBroken, match="failed"):
        sequencer.submit([("line:x", lines[0])])
    with contextlib.suppress(JournalError):  # close() cannot sync a failed journal
        sequencer.close()

    # Still full: the torn tail is cut (that frees space), the state is exact, and the next
    # write fails the same clear way.
    sequencer = expect_exact(tmp_path, lines, acked, acked + 7)
    position = resume_position(sequencer)
    if disk.free == 0:
        with pytest.raises(OSError):
            feed(sequencer, lines, position, position + 3, 3)
        with contextlib.suppress(JournalError):
            sequencer.close()
    else:
        drop(sequencer)

    # Space freed: resume from the journal's last source; nothing lost, nothing twice.
    disk.free = 10**9
    sequencer = expect_exact(tmp_path, lines, acked, acked + 7)
    feed(sequencer, lines, resume_position(sequencer), len(lines), 11)
    sequencer.close()
    expect_exact(tmp_path, lines, len(lines), len(lines)).close()


def test_full_disk_while_writing_a_snapshot_loses_nothing(
    tmp_path: Path, lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    sequencer, _ = open_sequencer(tmp_path, snapshot_every=50)
    feed(sequencer, lines, 0, 120, 10)
    assert len(list_snapshots(str(tmp_path / "snapshots"))) == 2

    def no_space(fd: int, data: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(snapshot_impl, "_write_all", no_space)
    # A snapshot is due at 150 and fails: logged, the batches still go through (a
    # snapshot is only an optimisation), and so does close's final snapshot attempt.
    feed(sequencer, lines, 120, 160, 10)
    sequencer.close()
    monkeypatch.undo()
    assert not [p for p in os.listdir(tmp_path / "snapshots") if p.endswith(".tmp")]
    assert len(list_snapshots(str(tmp_path / "snapshots"))) == 2
    expect_exact(tmp_path, lines, 160, 160).close()


def test_a_failed_snapshot_inside_submit_is_not_a_silent_half_failure(
    tmp_path: Path, lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    sequencer, _ = open_sequencer(tmp_path, snapshot_every=5)
    feed(sequencer, lines, 0, 4, 4)

    def no_space(fd: int, data: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(snapshot_impl, "_write_all", no_space)
    batch = [(f"line:{i + 1}", lines[i]) for i in range(4, 8)]
    try:
        sequencer.submit(batch)
    except OSError:
        # Told "failed", the caller retries: that must be refused, not applied again.
        with pytest.raises(SequencerBroken):
            sequencer.submit(batch)
    sequencer.close(snapshot=False)
    assert journal_sources(tmp_path) == [f"line:{i}" for i in range(1, 9)]


# -- a read-only file system -----------------------------------------------------------


@contextlib.contextmanager
def read_only(root: Path) -> Iterator[None]:
    """Refuse every write open and mkdir under ``root`` with EROFS."""
    real_open, real_mkdir = os.open, os.mkdir
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded(path: Any) -> None:
        if os.path.abspath(os.fspath(path)).startswith(str(root)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
        if flags & writes:
            guarded(path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def mkdir(path: Any, mode: int = 0o777, *, dir_fd: Any = None) -> None:
        guarded(path)
        real_mkdir(path, mode, dir_fd=dir_fd)

    os.open, os.mkdir = open_, mkdir  # type: ignore[assignment]
    try:
        yield
    finally:
        os.open, os.mkdir = real_open, real_mkdir  # type: ignore[assignment]


def test_read_only_file_system_refuses_clearly(tmp_path: Path, lines: list[bytes]) -> None:
    # A new journal on a read-only file system: refused, nothing created.
    with read_only(tmp_path), pytest.raises(OSError) as new:
        Sequencer.open_local(str(tmp_path / "new" / "journal"), str(tmp_path / "new" / "snaps"))
    assert new.value.errno == errno.EROFS and "new" in str(new.value)
    assert not (tmp_path / "new").exists()

    sequencer, _ = open_sequencer(tmp_path, snapshot_every=100)
    feed(sequencer, lines, 0, 150, 10)
    sequencer.close()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with read_only(tmp_path):
        # Existing journal: the writer refuses at the lock, naming the file.
        with pytest.raises(OSError) as existing:
            open_sequencer(tmp_path)
        assert existing.value.errno == errno.EROFS and "LOCK" in str(existing.value)
        # The operator's read-only tools still work.
        assert verify(tmp_path / "journal").ok
        assert main(["journal", "verify", str(tmp_path / "journal")]) == 0
        with LocalJournal(tmp_path / "journal", readonly=True) as journal:
            assert journal.last_seq == 150
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_file_system_turns_read_only_at_a_segment_roll(tmp_path: Path, lines: list[bytes]) -> None:
    sequencer, _ = open_sequencer(tmp_path, segment_bytes=2048)
    acked = feed(sequencer, lines, 0, 40, 8)
    segments = len(sequencer.journal.segments())  # type: ignore[attr-defined]
    with read_only(tmp_path / "journal"), pytest.raises(OSError) as failure:
        while True:
            acked = feed(sequencer, lines, acked, acked + 8, 8)
    assert failure.value.errno == errno.EROFS
    assert len(sequencer.journal.segments()) == segments  # type: ignore[attr-defined]
    with pytest.raises(SequencerBroken):
        sequencer.submit([])
    with contextlib.suppress(JournalError):
        sequencer.close()
    sequencer = expect_exact(tmp_path, lines, acked, acked + 8)
    feed(sequencer, lines, resume_position(sequencer), 200, 8)
    sequencer.close()
    expect_exact(tmp_path, lines, 200, 200).close()


# -- failed fsync ----------------------------------------------------------------------


def test_failed_fsync_breaks_the_sequencer_then_recovers_exactly(
    tmp_path: Path, lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    sequencer, _ = open_sequencer(tmp_path, fsync="batch")
    acked = feed(sequencer, lines, 0, 30, 6)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(journal_local, "_fdatasync", eio)
    with pytest.raises(OSError):
        feed(sequencer, lines, acked, acked + 6, 6)
    monkeypatch.undo()
    with pytest.raises(SequencerBroken):
        sequencer.submit([])
    drop(sequencer)
    # The written (not known durable) batch may or may not be there; the state is exact.
    expect_exact(tmp_path, lines, acked, acked + 6).close()


# -- torn writes -----------------------------------------------------------------------


class Killed(BaseException):
    """The process dies inside the write."""


@pytest.fixture(scope="module")
def base_journal(tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]) -> Path:
    """60 acknowledged inputs over several segments, with snapshots at 20 and 40."""
    root = tmp_path_factory.mktemp("base")
    sequencer, _ = open_sequencer(root, snapshot_every=20)
    feed(sequencer, lines, 0, 60, 5)
    drop(sequencer)
    return root


def _cut_write(limit: int) -> Callable[[int, bytes], None]:
    """A write_all that lets ``limit`` bytes of this append through, then dies."""
    real = journal_local.write_all
    left = [limit]

    def write_all(fd: int, data: bytes) -> None:
        if len(data) <= left[0]:
            left[0] -= len(data)
            real(fd, data)
            return
        real(fd, data[: left[0]])
        raise Killed

    return write_all


def test_torn_write_at_every_offset_recovers_exactly(
    base_journal: Path, tmp_path: Path, lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Measure the bytes the final 6-input batch writes (it crosses a segment roll).
    probe = tmp_path / "probe"
    shutil.copytree(base_journal, probe)
    sizes = sum(p.stat().st_size for p in (probe / "journal").glob("*.seg"))
    sequencer, _ = open_sequencer(probe)
    feed(sequencer, lines, 60, 66, 6)
    total = sum(p.stat().st_size for p in (probe / "journal").glob("*.seg")) - sizes
    drop(sequencer)
    assert total > 600

    rng = random.Random(1)
    cuts = sorted({*range(0, 70), *range(total - 20, total + 1), *rng.sample(range(total), 50)})
    seen: set[int] = set()
    for cut in cuts:
        work = tmp_path / f"cut{cut}"
        shutil.copytree(base_journal, work)
        sequencer, _ = open_sequencer(work)
        monkeypatch.setattr(journal_local, "write_all", _cut_write(cut))
        with contextlib.suppress(Killed):
            feed(sequencer, lines, 60, 66, 6)
        monkeypatch.undo()
        drop(sequencer)
        sequencer = expect_exact(work, lines, 60, 66)
        seen.add(sequencer.journal.last_seq)
        if cut % 8 == 0:  # ... and the journal is writable again: the rest goes in once
            feed(sequencer, lines, resume_position(sequencer), 80, 7)
            drop(sequencer)
            sequencer = expect_exact(work, lines, 80, 80)
        drop(sequencer)
        shutil.rmtree(work)
    assert seen == set(range(60, 67))  # every prefix of the batch was reached


def test_zeros_after_the_last_record_are_a_torn_tail(base_journal: Path, tmp_path: Path) -> None:
    work = tmp_path / "zeros"
    shutil.copytree(base_journal, work)
    last = sorted((work / "journal").glob("*.seg"))[-1]
    with open(last, "ab") as f:
        f.write(bytes(700))  # the file grew, the data never landed
    sequencer, _ = open_sequencer(work)
    assert sequencer.journal.last_seq == 60
    drop(sequencer)


def test_a_batch_whose_last_sectors_never_landed_is_a_torn_tail(
    base_journal: Path, tmp_path: Path, lines: list[bytes]
) -> None:
    work = tmp_path / "sectors"
    shutil.copytree(base_journal, work)
    last = sorted((work / "journal").glob("*.seg"))[-1]
    before = last.stat().st_size
    sequencer, _ = open_sequencer(work, segment_bytes=1 << 20)
    feed(sequencer, lines, 60, 70, 10)
    drop(sequencer)
    data = bytearray(last.read_bytes())
    boundary = (before // 512 + 1) * 512  # the first sector the batch wrote in full
    assert boundary < len(data)
    data[boundary:] = bytes(len(data) - boundary)
    last.write_bytes(bytes(data))
    expect_exact(work, lines, 60, 70).close()


# -- bit flips -------------------------------------------------------------------------


def test_bit_flips_in_segments_are_refused_or_only_cut_the_unfinished_tail(
    base_journal: Path, tmp_path: Path, lines: list[bytes]
) -> None:
    """A flipped bit anywhere is JournalCorrupt (naming segment and offset), except in the
    final record, which cannot be told from a torn write and is cut: documented, and a
    snapshot at the head turns even that into a refusal (next test)."""
    segments = sorted((base_journal / "journal").glob("*.seg"))
    last_start = _last_frame_offset(segments[-1])
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    for trial in range(120):
        segment = rng.choice(segments)
        offset = rng.randrange(segment.stat().st_size)
        work = tmp_path / f"flip{trial}"
        shutil.copytree(base_journal, work)
        shutil.rmtree(work / "snapshots")  # only the journal decides here
        target = work / "journal" / segment.name
        data = bytearray(target.read_bytes())
        data[offset] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
        try:
            sequencer, _ = open_sequencer(work)
        except JournalCorrupt as exc:
            assert segment.name in str(exc) and "byte offset" in str(exc)
            outcomes["corrupt"] = outcomes.get("corrupt", 0) + 1
        else:
            # Only a flip in the body of the very last record reads as a torn tail.
            assert segment == segments[-1] and offset >= last_start + 14, (segment, offset)
            assert sequencer.journal.last_seq == 59
            assert dump_state(sequencer.engine) == expected_state(lines, 59)
            outcomes["last_record_cut"] = outcomes.get("last_record_cut", 0) + 1
            drop(sequencer)
        shutil.rmtree(work)
    assert outcomes["corrupt"] > 80


def test_damaged_last_record_behind_a_snapshot_is_refused(
    tmp_path: Path, lines: list[bytes]
) -> None:
    sequencer, _ = open_sequencer(tmp_path, snapshot_every=10)
    feed(sequencer, lines, 0, 30, 10)  # the snapshot at 30 anchors the head
    drop(sequencer)
    last = sorted((tmp_path / "journal").glob("*.seg"))[-1]
    data = bytearray(last.read_bytes())
    data[-5] ^= 0x10
    last.write_bytes(bytes(data))
    with pytest.raises(RecoveryError, match="journal records were lost"):
        open_sequencer(tmp_path)


def _last_frame_offset(segment: Path) -> int:
    data = segment.read_bytes()
    offset = 52
    while True:
        length = int.from_bytes(data[offset + 2 : offset + 6], "big")
        end = offset + 14 + length
        if end >= len(data):
            return offset
        offset = end


def test_bit_flips_in_snapshots_fall_back_and_stay_exact(
    base_journal: Path, tmp_path: Path, lines: list[bytes]
) -> None:
    snaps = sorted((base_journal / "snapshots").glob("*.snap"))
    assert [s.name[9:29] for s in snaps] == [f"{20:020d}", f"{40:020d}", f"{60:020d}"]
    newest = snaps[-1]
    size = newest.stat().st_size
    rng = random.Random(3)
    offsets = sorted({*range(0, 110, 3), *rng.sample(range(size), 60), size - 1})
    expected = expected_state(lines, 60)
    for offset in offsets:
        work = tmp_path / f"snap{offset}"
        shutil.copytree(base_journal, work)
        target = work / "snapshots" / newest.name
        data = bytearray(target.read_bytes())
        data[offset] ^= 1 << (offset % 8)
        target.write_bytes(bytes(data))
        sequencer, recovery = open_sequencer(work)
        assert recovery.snapshot_path is not None
        assert os.path.basename(recovery.snapshot_path) == snaps[-2].name, offset
        assert recovery.replayed == 20
        assert dump_state(sequencer.engine) == expected, offset
        drop(sequencer)
        shutil.rmtree(work)
    # Every snapshot damaged: a full replay, still exact.
    work = tmp_path / "all"
    shutil.copytree(base_journal, work)
    for snap in (work / "snapshots").glob("*.snap"):
        data = bytearray(snap.read_bytes())
        data[len(data) // 2] ^= 0x40
        snap.write_bytes(bytes(data))
    sequencer, recovery = open_sequencer(work)
    assert recovery.snapshot_path is None and recovery.replayed == 60
    assert dump_state(sequencer.engine) == expected
    drop(sequencer)


# -- permissions -----------------------------------------------------------------------


@pytest.mark.usefixtures("umask_zero")
def test_journal_and_snapshot_files_are_owner_only_whatever_the_umask(
    tmp_path: Path, lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    temp_modes: list[int] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        temp_modes.append(stat.S_IMODE(os.stat(src).st_mode))  # the temp file, before rename
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    journal_dir = tmp_path / "deep" / "journal"
    snapshot_dir = tmp_path / "deep" / "snaps"
    sequencer, _ = Sequencer.open_local(
        str(journal_dir), str(snapshot_dir), snapshot_every_inputs=40
    )
    feed(sequencer, lines, 0, 100, 10)
    sequencer.close()

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(journal_dir) == 0o700
    assert mode(snapshot_dir) == 0o700
    files = [*journal_dir.iterdir(), *snapshot_dir.iterdir()]
    assert any(p.suffix == ".seg" for p in files) and any(p.suffix == ".snap" for p in files)
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert temp_modes and set(temp_modes) == {0o600}
