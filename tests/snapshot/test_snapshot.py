"""Snapshots: round trip, atomicity, corruption fallback, retention."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import struct
from pathlib import Path

import pytest

from clearing.snapshot import (
    HEADER_BYTES,
    SnapshotError,
    list_snapshots,
    load_latest,
    prune,
    read_snapshot,
    snapshot_name,
    write_snapshot,
)


def jhash(seq: int) -> bytes:
    return hashlib.sha256(b"journal %d" % seq).digest()


def state(seq: int) -> bytes:
    return b"state-%d-" % seq * 100


def write_many(directory: Path, seqs: list[int]) -> list[str]:
    return [
        write_snapshot(directory, state(s), s, jhash(s), {"engine": "v1", "seq": s}) for s in seqs
    ]


def test_round_trip(tmp_path: Path) -> None:
    path = write_snapshot(
        tmp_path,
        b"\x00state\xff",
        42,
        jhash(42),
        {"engine_version": "1.2", "n": 3},
        created_ts_ns=123,
    )
    assert os.path.basename(path) == snapshot_name(42) == "snapshot-00000000000000000042.snap"
    snap = load_latest(tmp_path)
    assert snap is not None
    assert snap.path == path
    assert snap.state == b"\x00state\xff"
    assert snap.journal_seq == 42 and snap.journal_hash == jhash(42)
    assert snap.state_sha256 == hashlib.sha256(b"\x00state\xff").digest()
    assert snap.meta == {"engine_version": "1.2", "n": 3}
    assert snap.created_ts_ns == 123
    assert read_snapshot(path) == snap


def test_documented_layout(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path, b"abc", 7, jhash(7), None, created_ts_ns=99)
    data = Path(path).read_bytes()
    fields = struct.unpack_from(">6sBBQ32s32sQIQI", data, 0)
    magic, version, flags, seq, jh, sh, state_len, meta_len, ts_ns, _meta_crc = fields
    assert (magic, version, flags, seq, jh) == (b"CLSNAP", 1, 0, 7, jhash(7))
    assert sh == hashlib.sha256(b"abc").digest() and ts_ns == 99
    assert data[HEADER_BYTES : HEADER_BYTES + meta_len] == b"{}"
    assert data[HEADER_BYTES + meta_len :] == b"abc" and state_len == 3


def test_empty_state_and_genesis(tmp_path: Path) -> None:
    write_snapshot(tmp_path, b"", 0, bytes(32))
    snap = load_latest(tmp_path)
    assert snap is not None and snap.state == b"" and snap.journal_seq == 0


def test_no_snapshots(tmp_path: Path) -> None:
    assert load_latest(tmp_path) is None
    assert load_latest(tmp_path / "missing") is None
    assert list_snapshots(tmp_path / "missing") == []


def test_newest_wins(tmp_path: Path) -> None:
    write_many(tmp_path, [5, 100, 20])
    snap = load_latest(tmp_path)
    assert snap is not None and snap.journal_seq == 100 and snap.state == state(100)


def test_max_seq_skips_snapshots_ahead_of_journal(tmp_path: Path) -> None:
    write_many(tmp_path, [5, 100, 20])
    snap = load_latest(tmp_path, max_seq=50)
    assert snap is not None and snap.journal_seq == 20


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_snapshot(tmp_path, b"s", 1, b"short")
    with pytest.raises(ValueError):
        write_snapshot(tmp_path, b"s", -1, jhash(1))
    with pytest.raises(TypeError):
        write_snapshot(tmp_path, b"s", 1, jhash(1), {"x": object()})
    with pytest.raises(ValueError):
        prune(tmp_path, keep=0)


def test_owner_only_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_snapshot(tmp_path / "snaps", b"s", 1, jhash(1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "snaps").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_leftover_temp_file_is_ignored(tmp_path: Path) -> None:
    write_many(tmp_path, [10])
    # A writer crashed after creating (part of) its temp file for seq 20.
    good = Path(write_snapshot(tmp_path / "other", state(20), 20, jhash(20))).read_bytes()
    stray = tmp_path / f".{snapshot_name(20)}.1234.abcd.tmp"
    stray.write_bytes(good[: len(good) // 2])
    snap = load_latest(tmp_path)
    assert snap is not None and snap.journal_seq == 10
    assert [i.journal_seq for i in list_snapshots(tmp_path)] == [10]
    removed = prune(tmp_path, keep=1)
    assert removed == [str(stray)] and not stray.exists()


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_many(tmp_path, [10])

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_snapshot(tmp_path, state(20), 20, jhash(20))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [snapshot_name(10)]


def test_overwrite_same_seq_is_atomic_replace(tmp_path: Path) -> None:
    write_snapshot(tmp_path, b"first", 3, jhash(3))
    write_snapshot(tmp_path, b"second", 3, jhash(3))
    snap = load_latest(tmp_path)
    assert snap is not None and snap.state == b"second"
    assert os.listdir(tmp_path) == [snapshot_name(3)]


def _corrupt(path: str, how: str) -> None:
    data = bytearray(Path(path).read_bytes())
    if how == "magic":
        data[0:6] = b"XXXXXX"
    elif how == "truncated":
        del data[-10:]
    elif how == "state":
        data[-1] ^= 0x01
    elif how == "header":
        data[20] ^= 0x01  # inside journal_hash: header CRC catches it
    elif how == "meta":
        data[HEADER_BYTES] ^= 0x01
    elif how == "trailing":
        data += b"junk"
    elif how == "empty":
        data = bytearray()
    Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize(
    "how", ["magic", "truncated", "state", "header", "meta", "trailing", "empty"]
)
def test_corrupt_newest_falls_back(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    paths = write_many(tmp_path, [10, 20, 30])
    _corrupt(paths[-1], how)
    with pytest.raises(SnapshotError):
        read_snapshot(paths[-1])
    with caplog.at_level(logging.WARNING, logger="clearing.snapshot"):
        snap = load_latest(tmp_path)
    assert snap is not None and snap.journal_seq == 20 and snap.state == state(20)
    assert any(os.path.basename(paths[-1]) in r.getMessage() for r in caplog.records)


def test_renamed_snapshot_is_rejected(tmp_path: Path) -> None:
    paths = write_many(tmp_path, [10, 20])
    os.rename(paths[0], tmp_path / snapshot_name(99))
    snap = load_latest(tmp_path)
    assert snap is not None and snap.journal_seq == 20


def test_all_corrupt_gives_none(tmp_path: Path) -> None:
    for path in write_many(tmp_path, [1, 2]):
        _corrupt(path, "state")
    assert load_latest(tmp_path) is None


def test_list_snapshots(tmp_path: Path) -> None:
    paths = write_many(tmp_path, [3, 1, 2])
    _corrupt(paths[0], "state")  # seq 3: only a full check sees this
    _corrupt(paths[1], "magic")  # seq 1
    infos = list_snapshots(tmp_path)
    assert [i.journal_seq for i in infos] == [1, 2, 3]
    assert infos[0].problem is not None and "magic" in infos[0].problem
    assert infos[1].problem is None and infos[1].meta == {"engine": "v1", "seq": 2}
    assert infos[1].journal_hash == jhash(2)
    assert infos[1].size_bytes == os.path.getsize(paths[2])
    assert infos[2].problem is None
    full = list_snapshots(tmp_path, verify_state=True)
    assert full[2].problem is not None and "SHA-256" in full[2].problem
    assert full[1].problem is None


def test_prune_keeps_newest(tmp_path: Path) -> None:
    write_many(tmp_path, [1, 2, 3, 4, 5])
    removed = prune(tmp_path, keep=2)
    assert sorted(os.path.basename(p) for p in removed) == [snapshot_name(s) for s in (1, 2, 3)]
    assert [i.journal_seq for i in list_snapshots(tmp_path)] == [4, 5]
    assert prune(tmp_path, keep=2) == []
    assert prune(tmp_path, keep=10) == []


def test_prune_counts_only_valid_snapshots(tmp_path: Path) -> None:
    paths = write_many(tmp_path, [1, 2, 3, 4, 5])
    _corrupt(paths[-1], "state")
    prune(tmp_path, keep=2)
    # 5 is corrupt (kept for inspection), 4 and 3 are the two valid ones kept.
    assert [i.journal_seq for i in list_snapshots(tmp_path)] == [3, 4, 5]
    snap = load_latest(tmp_path)
    assert snap is not None and snap.journal_seq == 4


def test_prune_with_too_few_valid_deletes_nothing(tmp_path: Path) -> None:
    paths = write_many(tmp_path, [1, 2, 3])
    _corrupt(paths[1], "state")
    assert prune(tmp_path, keep=3) == []
    assert len(list_snapshots(tmp_path)) == 3
