"""The snapshot topic's chunk format and the install of a received snapshot file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clearing.kafka._snapshot_topic import _decode_chunk, encode_chunk, snapshot_chunks
from clearing.snapshot import (
    SnapshotError,
    install_snapshot,
    list_snapshots,
    parse_snapshot_header,
    write_snapshot,
)


def snapshot_bytes(tmp_path: Path, seq: int = 7) -> bytes:
    path = write_snapshot(tmp_path / "src", b"state" * 1000, seq, b"h" * 32, {"k": 1})
    return Path(path).read_bytes()


def test_chunks_join_back_to_the_file_and_each_is_checked(tmp_path: Path) -> None:
    data = snapshot_bytes(tmp_path)
    pieces = snapshot_chunks(data, 1024)
    assert len(pieces) == -(-len(data) // 1024) and b"".join(pieces) == data
    encoded = [encode_chunk(7, i, p) for i, p in enumerate(pieces)]
    assert b"".join(_decode_chunk(v, 7, i) for i, v in enumerate(encoded)) == data
    flipped = encoded[1][:-1] + bytes([encoded[1][-1] ^ 1])
    with pytest.raises(ValueError, match="CRC32C"):
        _decode_chunk(flipped, 7, 1)
    with pytest.raises(ValueError, match="not chunk 2"):
        _decode_chunk(encoded[1], 7, 2)  # right bytes, wrong place
    with pytest.raises(ValueError, match="missing"):
        _decode_chunk(None, 7, 0)  # a tombstone


def test_install_writes_a_valid_file_and_refuses_a_damaged_one(tmp_path: Path) -> None:
    data = snapshot_bytes(tmp_path)
    seq, journal_hash, meta = parse_snapshot_header(data)
    assert (seq, journal_hash, meta) == (7, b"h" * 32, {"k": 1})
    cache = tmp_path / "cache"
    installed = install_snapshot(cache, data)
    assert installed.journal_seq == 7 and Path(installed.path).read_bytes() == data
    damaged = data[:-1] + bytes([data[-1] ^ 1])  # the state's SHA-256 no longer matches
    empty = tmp_path / "empty"
    with pytest.raises(SnapshotError, match="SHA-256"):
        install_snapshot(empty, damaged)
    assert list_snapshots(str(empty)) == [] and os.listdir(empty) == []
