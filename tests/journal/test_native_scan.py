"""The native frame scanner (``clearing_native.scan_frames``) behind ``iter_frames``.

The pure-Python loop is the reference: with and without the native path, ``iter_frames``
must yield the same records, return the same ``(last_seq, last_hash)`` and raise the same
``BadFrame`` (offset, reason, torn), whatever the bytes.
"""

from __future__ import annotations

import mmap
import os
import random
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import crc32c
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.journal import GENESIS_HASH, LocalJournal, Record, _format, chain_hash
from clearing.journal._format import (
    FRAME_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
    BadFrame,
    decode_segment_header,
    encode_frame,
    encode_segment_header,
    iter_frames,
)

from .helpers import segment_paths

# CI installs the extension, so there these tests never skip.
pytestmark = pytest.mark.skipif(
    _format._native_scan_frames is None and not os.environ.get("CI"),
    reason="clearing_native.scan_frames is not installed",
)

# What one iter_frames run gives: the records, then either its return value or the
# BadFrame it raised, as (offset, reason, torn).
Outcome = tuple[list[Record], tuple[int, bytes] | tuple[int, str, bool]]

SOURCES = ("file:/in.jsonl", "kafka:fills:3", "файл:/données/ünïcødé.jsonl", "✓→€", "")


def random_records(rng: random.Random, count: int, start_seq: int = 1) -> list[Record]:
    """Records of every shape the encodings distinguish: empty and 1-byte fields, fixstr,
    str8 and str16 sources (non-ASCII too), bin8, bin16 and bin32 payloads."""
    out = []
    for seq in range(start_seq, start_seq + count):
        kind = rng.random()
        if kind < 0.01:
            payload_len = rng.randint(65_536, 80_000)  # bin32
        elif kind < 0.1:
            payload_len = rng.randint(256, 4_000)  # bin16
        else:
            payload_len = rng.randint(0, 255)
        source = rng.choice(SOURCES) * rng.choice((1, 1, 3, 40))
        outputs = b"" if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 300))
        out.append(Record(seq, source, rng.randbytes(payload_len), outputs))
    return out


def write(directory: Path, records: list[Record], segment_bytes: int) -> None:
    with LocalJournal(directory, segment_bytes=segment_bytes) as journal:
        for i in range(0, len(records), 50):
            journal.append(records[i : i + 50])


def run(
    buf: bytes | mmap.mmap,
    end: int,
    start_seq: int | None = None,
    stop_seq: int | None = None,
) -> Outcome:
    """Drain ``iter_frames`` over one segment held in ``buf``."""
    first_seq, prev = decode_segment_header(bytes(buf[:SEGMENT_HEADER_BYTES]))
    gen = iter_frames(buf, end, first_seq, prev, start_seq or first_seq, stop_seq)
    records: list[Record] = []
    try:
        while True:
            records.append(next(gen))
    except StopIteration as stop:
        return records, stop.value
    except BadFrame as bad:
        return records, (bad.offset, bad.reason, bad.torn)


def both(
    monkeypatch: pytest.MonkeyPatch,
    buf: bytes | mmap.mmap,
    end: int,
    start_seq: int | None = None,
    stop_seq: int | None = None,
) -> Outcome:
    """The native path's outcome, checked against the pure-Python reference's."""
    native = run(buf, end, start_seq, stop_seq)
    with monkeypatch.context() as patch:
        patch.setattr(_format, "_native_scan_frames", None)
        reference = run(buf, end, start_seq, stop_seq)
    assert native == reference
    return native


@contextmanager
def mapped(path: str) -> Iterator[mmap.mmap]:
    """A segment mapped as replay maps it."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        yield mm


# -- good journals ------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_records_as_the_python_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    records = random_records(rng, 2_500)
    write(tmp_path / "j", records, segment_bytes=rng.choice((200_000, 1 << 20)))
    monkeypatch.setattr(_format, "_NATIVE_BATCH", rng.choice((1, 3, 1024)))
    monkeypatch.setattr(_format, "_NATIVE_BATCH_BYTES", rng.choice((1, 5_000, 1 << 20)))
    read: list[Record] = []
    for path in segment_paths(tmp_path / "j"):
        with mapped(path) as mm:
            size = len(mm)
            got, result = both(monkeypatch, mm, size)
            assert result == (got[-1].seq, got[-1].chain_hash)
            read.extend(got)
            # Skipping into the segment, and stopping inside it.
            first, last = got[0].seq, got[-1].seq
            for _ in range(3):
                start = rng.randint(first, last)
                stop = rng.choice((None, rng.randint(start - 1, last + 1)))
                both(monkeypatch, mm, size, start, stop)
    assert [(r.seq, r.source, r.payload, r.outputs) for r in read] == [
        (r.seq, r.source, r.payload, r.outputs) for r in records
    ]


def test_journal_read_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    write(tmp_path / "j", random_records(rng, 3_000), segment_bytes=300_000)

    def read(from_seq: int = 1, until_seq: int | None = None) -> list[Record]:
        with LocalJournal(tmp_path / "j", readonly=True, scan_mode="tail") as journal:
            return list(journal.read(from_seq, until_seq))

    cases = [
        (1, None),
        (1, 1),
        (2, 1024),
        (1000, 2049),
        (2_999, None),
        (rng.randint(1, 3000), None),
    ]
    native = [read(*case) for case in cases]
    monkeypatch.setattr(_format, "_native_scan_frames", None)
    assert [read(*case) for case in cases] == native
    assert len(native[0]) == 3_000


def test_scan_frames_contract() -> None:
    """The call itself: batches chain on, and arguments outside the buffer are refused."""
    scan = _format._native_scan_frames
    assert scan is not None
    records = random_records(random.Random(5), 20)
    buf, _frames = segment_bytes(records)
    last = chain_of(records)
    for kind in (bytes, bytearray, memoryview):
        data = kind(buf)
        got, off, seq, prev, problem = scan(
            data, SEGMENT_HEADER_BYTES, len(buf), 1, GENESIS_HASH, 5, 99
        )
        assert (len(got), seq, problem) == (5, 6, False)
        assert got[4] == (5, records[4].source, records[4].payload, records[4].outputs, last[4])
        assert prev == last[4]
        got, off, seq, prev, problem = scan(data, off, len(buf), seq, prev, 2**64 - 1, 99)
        assert (len(got), off, seq, prev, problem) == (15, len(buf), 21, last[19], False)
    # The wrong previous hash: the first frame is refused, nothing is consumed.
    assert scan(buf, SEGMENT_HEADER_BYTES, len(buf), 1, b"\1" * 32, 99, 99) == (
        [],
        SEGMENT_HEADER_BYTES,
        1,
        b"\1" * 32,
        True,
    )
    # A byte bound: the batch ends after the frame that reaches it.
    got, off, seq, prev, problem = scan(
        buf, SEGMENT_HEADER_BYTES, len(buf), 1, GENESIS_HASH, 99, 99, 1
    )
    assert (len(got), seq, prev, problem) == (1, 2, last[0], False)
    bad_args = ((0, len(buf) + 1, 9, 9), (60, 59, 9, 9), (52, len(buf), 0, 9), (52, len(buf), 9, 0))
    for off, end, max_records, max_bytes in bad_args:
        with pytest.raises(ValueError):
            scan(buf, off, end, 1, GENESIS_HASH, 99, max_records, max_bytes)


# -- hand-made segments: encodings and seq limits ------------------------------------


def chain_of(records: list[Record], prev: bytes = GENESIS_HASH) -> list[bytes]:
    out = []
    for r in records:
        prev = chain_hash(prev, r.seq, r.source.encode(), r.payload, r.outputs)
        out.append(prev)
    return out


def segment_bytes(
    records: list[Record], bodies: list[bytes] | None = None, prev: bytes = GENESIS_HASH
) -> tuple[bytes, list[int]]:
    """A segment of ``records`` (or of the given raw bodies) and its frame offsets."""
    if bodies is None:
        hashes = chain_of(records, prev)
        frames = [
            encode_frame(Record(r.seq, r.source, r.payload, r.outputs, h))
            for r, h in zip(records, hashes, strict=True)
        ]
    else:
        frames = [
            struct.pack(">BBIII", 0xC1, 1, len(b), len(b) ^ 0xFFFFFFFF, crc32c.crc32c(b)) + b
            for b in bodies
        ]
    data = encode_segment_header(records[0].seq, prev)
    offsets = []
    for frame in frames:
        offsets.append(len(data))
        data += frame
    return data, offsets


def wide_body(seq: int, source: str, payload: bytes, outputs: bytes, digest: bytes) -> bytes:
    """The widest MessagePack encodings (array32, uint64, str32, bin32)."""
    src = source.encode()
    out = b"\xdd" + struct.pack(">I", 5) + b"\xcf" + struct.pack(">Q", seq)
    out += b"\xdb" + struct.pack(">I", len(src)) + src
    for field in (payload, outputs, digest):
        out += b"\xc6" + struct.pack(">I", len(field)) + field
    return out


def test_wide_encodings_and_extra_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide encodings are read natively; a 6-element array (msgspec ignores the extra
    element, the scanner refuses it) goes through the Python path and is still read."""
    records = random_records(random.Random(11), 12)
    hashes = chain_of(records)
    bodies = [
        wide_body(r.seq, r.source, r.payload, r.outputs, h)
        for r, h in zip(records, hashes, strict=True)
    ]
    extra = msgspec.msgpack.encode(
        [4, records[3].source, records[3].payload, records[3].outputs, hashes[3], 0]
    )
    bodies[3] = extra
    data, _offsets = segment_bytes(records, bodies)
    got, result = both(monkeypatch, data, len(data))
    assert [(r.seq, r.payload, r.chain_hash) for r in got] == [
        (r.seq, r.payload, h) for r, h in zip(records, hashes, strict=True)
    ]
    assert result == (12, hashes[-1])


def odd_bodies(r: Record, digest: bytes) -> dict[str, bytes]:
    """Bodies for record ``r``: valid ones in unusual encodings, and ones that fail a
    check after the CRC (which the Python path must classify)."""
    src = r.source.encode()
    enc = msgspec.msgpack.encode
    tail = b"".join(enc(f) for f in (r.payload, r.outputs, digest))  # bytes encode as bin
    rest = enc(r.source) + tail
    return {
        "shortest": enc([r.seq, r.source, r.payload, r.outputs, digest]),
        "widest": wide_body(r.seq, r.source, r.payload, r.outputs, digest),
        "int8 seq": b"\x95\xd0" + bytes([r.seq]) + rest,
        "int64 seq": b"\x95\xd3" + struct.pack(">q", r.seq) + rest,
        "array16": b"\xdc\x00\x05" + enc(r.seq) + rest,
        "six elements": enc([r.seq, r.source, r.payload, r.outputs, digest, None]),
        "four elements": enc([r.seq, r.source, r.payload, r.outputs]),
        "three elements": enc([r.seq, r.source, r.payload]),
        "trailing byte": enc([r.seq, r.source, r.payload, r.outputs, digest]) + b"\x00",
        "short body": enc([r.seq, r.source, r.payload, r.outputs, digest])[:-1],
        "negative seq": b"\x95\xff" + rest,
        "wrong seq": enc([r.seq + 1, r.source, r.payload, r.outputs, digest]),
        "float seq": enc([float(r.seq), r.source, r.payload, r.outputs, digest]),
        "bin source": enc([r.seq, src, r.payload, r.outputs, digest]),
        "str payload": b"\x95"
        + enc(r.seq)
        + enc(r.source)
        + enc(r.payload.decode("latin-1"))
        + enc(r.outputs)
        + enc(digest),
        "nil outputs": enc([r.seq, r.source, r.payload, None, digest]),
        "bad utf-8": b"\x95" + enc(r.seq) + b"\xa2\xc3\x28" + tail,
        "surrogate": b"\x95" + enc(r.seq) + b"\xa3\xed\xa0\x80" + tail,
        "short hash": enc([r.seq, r.source, r.payload, r.outputs, digest[:31]]),
        "long hash": enc([r.seq, r.source, r.payload, r.outputs, digest + b"\0"]),
        "wrong hash": enc([r.seq, r.source, r.payload, r.outputs, bytes(32)]),
        "map": enc({"seq": r.seq}),
        "empty": b"",
        "nil": b"\xc0",
    }


def test_odd_bodies_read_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each body as the third frame of a segment (with a right CRC): both paths read the
    valid ones and fail the others the same way."""
    records = [Record(seq, f"src-{seq}", b"pay-%d" % seq, b"out") for seq in range(1, 6)]
    hashes = chain_of(records)
    good = [
        encode_frame(Record(r.seq, r.source, r.payload, r.outputs, h))[14:]
        for r, h in zip(records, hashes, strict=True)
    ]
    outcomes = {}
    for name, body in odd_bodies(records[2], hashes[2]).items():
        data, offsets = segment_bytes(records, [*good[:2], body, *good[3:]])
        got, result = both(monkeypatch, data, len(data))
        outcomes[name] = result if isinstance(result[1], str) else len(got)
    readable = {"shortest", "widest", "int8 seq", "int64 seq", "array16", "six elements"}
    assert {name for name, outcome in outcomes.items() if outcome == 5} == readable
    assert all(o[0] == offsets[2] for n, o in outcomes.items() if n not in readable)


def test_seq_at_the_top_of_u64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records up to seq 2**64-1 read natively; the frame after them fails as in Python."""
    top = 2**64 - 1
    records = [Record(top - 1, "a", b"1"), Record(top, "b", b"2"), Record(top, "c", b"3")]
    prev = b"\7" * 32
    data, offsets = segment_bytes(records, prev=prev)
    got, result = both(monkeypatch, data, len(data))
    assert [r.seq for r in got] == [top - 1, top]
    assert result == (offsets[2], f"record has seq {top} where {top + 1} was expected", False)
    assert both(monkeypatch, data, offsets[2])[1] == (top, chain_of(records[:2], prev)[1])


# -- damage ---------------------------------------------------------------------------


def _damage_base() -> tuple[bytes, list[int]]:
    rng = random.Random(3)
    records = random_records(rng, 40)
    records[17] = Record(18, "big", rng.randbytes(70_000), b"")  # a bin32 body
    return segment_bytes(records)


DAMAGE_BASE, DAMAGE_OFFSETS = _damage_base()

# "edit" changes a body byte and fixes up the frame's CRC, as a deliberate edit would:
# only the decode, seq and hash chain checks can catch it.
KINDS = ("xor", "edit", "zero-tail", "truncate", "noise")


def damaged(kind: str, at: int, mask: int, length: int, seed: int) -> bytes:
    data = bytearray(DAMAGE_BASE)
    if kind in ("xor", "edit"):
        data[at] ^= mask
        frame = max(o for o in DAMAGE_OFFSETS if o <= at)
        body_start = frame + FRAME_HEADER_BYTES
        if kind == "edit" and at >= body_start:
            (body_len,) = struct.unpack_from(">I", data, frame + 2)
            body_crc = crc32c.crc32c(data[body_start : body_start + body_len])
            struct.pack_into(">I", data, frame + 10, body_crc)
    elif kind == "zero-tail":
        data[at:] = bytes(len(data) - at)
    elif kind == "truncate":
        del data[at:]
    else:
        data[at : at + length] = random.Random(seed).randbytes(length)
    return bytes(data)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(KINDS),
    # Mostly near frame starts (the headers and small bodies), sometimes anywhere.
    where=st.one_of(
        st.tuples(st.sampled_from(range(len(DAMAGE_OFFSETS))), st.integers(0, 40)),
        st.tuples(st.just(-1), st.integers(SEGMENT_HEADER_BYTES, len(DAMAGE_BASE) - 1)),
    ),
    mask=st.integers(1, 255),
    length=st.integers(1, 64),
    seed=st.integers(0, 2**32),
    start_seq=st.one_of(st.none(), st.integers(1, 41)),
    stop_seq=st.one_of(st.none(), st.integers(0, 41)),
)
def test_damage_is_reported_alike(
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    where: tuple[int, int],
    mask: int,
    length: int,
    seed: int,
    start_seq: int | None,
    stop_seq: int | None,
) -> None:
    index, delta = where
    at = DAMAGE_OFFSETS[index] + delta if index >= 0 else delta
    at = min(max(at, SEGMENT_HEADER_BYTES), len(DAMAGE_BASE) - 1)
    data = damaged(kind, at, mask, length, seed)
    both(monkeypatch, data, len(data), start_seq, stop_seq)


def test_damage_everywhere_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every offset of the first frames, and a seeded sample of the rest: the same
    outcome both ways, every record before the damage read and none from it on."""
    rng = random.Random(2024)
    offsets = list(range(SEGMENT_HEADER_BYTES, DAMAGE_OFFSETS[4]))
    offsets += rng.sample(range(DAMAGE_OFFSETS[4], len(DAMAGE_BASE)), 300)
    frame_ends = [*DAMAGE_OFFSETS[1:], len(DAMAGE_BASE)]
    for at in offsets:
        intact = sum(end <= at for end in frame_ends)
        for kind in ("xor", "edit", "truncate"):
            data = damaged(kind, at, rng.randint(1, 255), 1, 0)
            records, result = both(monkeypatch, data, len(data))
            assert len(records) == intact
            # Cutting at a frame boundary leaves a shorter, valid segment.
            clean_cut = kind == "truncate" and at in DAMAGE_OFFSETS
            assert isinstance(result[1], bytes) == clean_cut, f"{kind} at {at}: {result}"


def test_damaged_journal_raises_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through LocalJournal: the same JournalCorrupt (or torn-tail repair) either way."""
    rng = random.Random(99)
    write(tmp_path / "j", random_records(rng, 600), segment_bytes=100_000)
    paths = segment_paths(tmp_path / "j")
    for trial in range(20):
        directory = tmp_path / f"d{trial}"
        directory.mkdir()
        for path in paths:
            (directory / os.path.basename(path)).write_bytes(Path(path).read_bytes())
        victim = directory / os.path.basename(rng.choice(paths))
        data = bytearray(victim.read_bytes())
        data[rng.randrange(SEGMENT_HEADER_BYTES, len(data))] ^= rng.randint(1, 255)
        victim.write_bytes(bytes(data))

        def outcome(directory: Path = directory) -> object:
            try:
                with LocalJournal(directory, readonly=True, scan_mode="tail") as journal:
                    return list(journal.read())
            except Exception as exc:  # compare type and text, whatever the failure
                return type(exc), str(exc)

        native = outcome()
        with monkeypatch.context() as patch:
            patch.setattr(_format, "_native_scan_frames", None)
            assert outcome() == native
