"""``testkit.storage.FaultyStorage``: the disk the simulator hands to the journal and the
snapshot writer. Unarmed it is the real disk; armed, the one call it targets fails."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

from clearing.journal import JournalClosed, LocalJournal, Record
from clearing.snapshot import list_snapshots, write_snapshot
from testkit.storage import FaultyStorage, SimulatedCrash


def _record(seq: int) -> Record:
    return Record(seq, f"test:{seq}", b'{"type":"deposit","account":"a","amount":"1"}')


def test_unarmed_it_is_the_real_disk(tmp_path: Path) -> None:
    disk = FaultyStorage(random.Random(1))
    with LocalJournal(tmp_path / "j", fsync="batch", storage=disk) as journal:
        journal.append([_record(1), _record(2)])
    with LocalJournal(tmp_path / "j", readonly=True) as journal:
        assert [r.seq for r in journal.read()] == [1, 2]
    assert not disk.fired


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("eio_in_write", errno.EIO),
        ("fsync_eio", errno.EIO),
        ("erofs_on_segment_create", errno.EROFS),
    ],
)
def test_an_armed_fault_fails_the_journal_once_and_it_refuses_more(
    tmp_path: Path, fault: str, code: int
) -> None:
    disk = FaultyStorage(random.Random(2))
    with LocalJournal(tmp_path / "j", fsync="batch", storage=disk) as journal:
        disk.arm(fault)  # type: ignore[arg-type]
        with pytest.raises(OSError) as failed:
            journal.append([_record(1)])
        assert failed.value.errno == code and disk.fired
        with pytest.raises(JournalClosed):
            journal.append([_record(1)])


def test_a_crash_in_write_leaves_a_prefix_that_reopens_as_a_torn_tail(tmp_path: Path) -> None:
    disk = FaultyStorage(random.Random(3))
    journal = LocalJournal(tmp_path / "j", fsync="never", storage=disk)
    journal.append([_record(1)])
    disk.arm("crash_in_write")
    with pytest.raises(SimulatedCrash):
        journal.append([_record(2), _record(3)])
    journal._release()  # the process died: the kernel closes its files
    with LocalJournal(tmp_path / "j") as reopened:
        assert 1 <= reopened.last_seq <= 3
        assert [r.seq for r in reopened.read()] == list(range(1, reopened.last_seq + 1))


def test_a_snapshot_write_fails_with_enospc_and_leaves_no_snapshot(tmp_path: Path) -> None:
    disk = FaultyStorage(random.Random(4))
    disk.arm("write_enospc")
    with pytest.raises(OSError) as failed:
        write_snapshot(tmp_path, b"state", 1, b"\0" * 32, storage=disk)
    assert failed.value.errno == errno.ENOSPC
    assert list_snapshots(str(tmp_path)) == []
    # Fired once: the next snapshot is written.
    write_snapshot(tmp_path, b"state", 1, b"\0" * 32, storage=disk)
    assert [(i.journal_seq, i.problem) for i in list_snapshots(str(tmp_path))] == [(1, None)]
