"""Test helpers, including an independent reader written from the format docstring."""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import crc32c
import msgspec

from clearing.journal import LocalJournal, Record

SEG_HEADER_BYTES = 52
FRAME_HEADER_BYTES = 14


def make_records(count: int, start_seq: int = 1, payload_bytes: int = 40) -> list[Record]:
    out = []
    for seq in range(start_seq, start_seq + count):
        body = b'{"n":%d,"pad":"' % seq
        payload = body + b"x" * max(0, payload_bytes - len(body) - 2) + b'"}'
        outputs = b"" if seq % 3 else b"out-%d" % seq
        out.append(Record(seq, f"file:/in.jsonl:{seq}", payload, outputs))
    return out


def write_journal(
    directory: str | os.PathLike[str],
    records: list[Record],
    segment_bytes: int = 1024,
    batch: int = 7,
) -> bytes:
    with LocalJournal(directory, segment_bytes=segment_bytes) as journal:
        for i in range(0, len(records), batch):
            journal.append(records[i : i + batch])
        return journal.head_hash


def same(a: list[Record], b: list[Record]) -> bool:
    return [(r.seq, r.source, r.payload, r.outputs) for r in a] == [
        (r.seq, r.source, r.payload, r.outputs) for r in b
    ]


def segment_paths(directory: str | os.PathLike[str]) -> list[str]:
    names = sorted(n for n in os.listdir(directory) if n.endswith(".seg"))
    return [os.path.join(directory, n) for n in names]


@dataclass
class Frame:
    offset: int
    end: int
    seq: int
    source: str
    payload: bytes
    outputs: bytes
    chain_hash: bytes


def read_segment(path: str) -> tuple[int, bytes, list[Frame]]:
    """Independent auditor's reader: ``(first_seq, prev_hash, frames)`` of one segment,
    asserting every documented invariant except the cross-segment links."""
    data = Path(path).read_bytes()
    magic, version, flags, first_seq, prev_hash = struct.unpack_from(">6sBBQ32s", data, 0)
    (crc,) = struct.unpack_from(">I", data, 48)
    assert (magic, version, flags) == (b"CLJSEG", 1, 0)
    assert crc == crc32c.crc32c(data[:48])
    assert os.path.basename(path) == f"{first_seq:020d}.seg"
    frames = []
    off = SEG_HEADER_BYTES
    seq = first_seq
    prev = prev_hash
    while off < len(data):
        magic_b, version_b, body_len, body_len_check, body_crc = struct.unpack_from(
            ">BBIII", data, off
        )
        assert (magic_b, version_b) == (0xC1, 1)
        assert body_len ^ body_len_check == 0xFFFFFFFF
        body = data[off + 14 : off + 14 + body_len]
        assert len(body) == body_len and crc32c.crc32c(body) == body_crc
        fields = msgspec.msgpack.decode(body)  # generic decode: a plain list
        assert isinstance(fields, list) and len(fields) == 5
        r_seq, source, payload, outputs, digest = fields
        assert r_seq == seq
        src = source.encode()
        expected = hashlib.sha256(
            prev
            + struct.pack(">QIII", seq, len(src), len(payload), len(outputs))
            + src
            + payload
            + outputs
        ).digest()
        assert digest == expected
        frames.append(Frame(off, off + 14 + body_len, seq, source, payload, outputs, digest))
        prev = digest
        off += 14 + body_len
        seq += 1
    return first_seq, prev_hash, frames
