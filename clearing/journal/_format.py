"""On-disk format of the local journal: records, frames, segment headers, the hash chain.

This module is the single place that knows the byte layout; everything below is
normative (an auditor can write an independent reader from it).  All integers are
big-endian and unsigned.

Directory
---------
A journal is a directory of segment files named ``<first seq, 20 decimal digits>.seg``
(e.g. ``00000000000000000001.seg``), plus a ``LOCK`` file used only for the writer's
``flock``.  Other names are ignored.  Segments, sorted by the number in their name,
hold consecutive, gap-free runs of records; the first segment starts at seq 1.

Segment file
------------
A 52-byte segment header, then one or more frames back to back, up to EOF::

    off  size  field
    0    6     magic          b"CLJSEG"
    6    1     format_version 1
    7    1     rules          the ledger's rules version (SPEC §9); 0 = version 1
                                 (every segment written before versions existed)
    8    8     first_seq      seq of the first record in this segment (== file name)
    16   32    prev_hash      chain hash of record first_seq-1 (32 zero bytes for seq 1)
    48   4     header_crc     CRC32C (Castagnoli) of bytes 0..47

``rules`` is written into every segment of a journal with the same value, fixed when
the journal's first segment is created; a reader takes the first segment's. Version 1
writes 0, so version-1 journals are byte-identical to those written before the field.

``prev_hash`` lets a reader verify the chain starting at any segment without
reading the previous ones, and ties the segments together: deleting, reordering
or renaming a segment breaks ``first_seq``/``prev_hash`` continuity.

Frame (one record)::

    off  size  field
    0    1     magic          0xC1
    1    1     frame_version  1
    2    4     body_len       length of the body in bytes
    6    4     body_len_check body_len XOR 0xFFFFFFFF
    10   4     body_crc       CRC32C of the body
    14   body_len  body

``body_len_check`` makes the length trustworthy on its own (any damage to either
copy is caught without reading the body), so a damaged length in the middle of
the log cannot masquerade as a torn (short) final record.  A valid record needs:
magic, version and the length check right, the body inside the file, the CRC
right, the body decodable, its seq the expected one and its chain hash right.

Body: a MessagePack array of exactly 5 elements (msgspec ``Record``, ``array_like``)::

    [seq: uint, source: str (UTF-8), payload: bin, outputs: bin, chain_hash: bin(32)]

(msgspec writes the shortest encodings; a reader should accept any valid MessagePack
encoding of these types, since nothing is hashed over the MessagePack bytes.)

Hash chain (SHA-256)::

    chain_hash(seq) = SHA-256( prev_hash                (32 bytes)
                             || u64(seq)
                             || u32(len(source_utf8)) || u32(len(payload)) || u32(len(outputs))
                             || source_utf8 || payload || outputs )

with ``prev_hash`` = chain_hash(seq-1), and 32 zero bytes for seq 1.  The hash
input is a fixed length-prefixed layout (not the MessagePack bytes), so the head
hash depends only on the logical records: another implementation (e.g. the Kafka
journal) that stores the same records arrives at the same head hash.

Torn tail (only at the end of the last segment): fewer than 14 bytes left for a
frame header; or a valid header whose body runs past EOF; or a valid header whose
body ends exactly at EOF but fails its CRC; or a bad header followed only by zero
bytes up to EOF; or a last segment with a short/zero-filled header or no record.
Everything else that fails a check is corruption.

Why SHA-256 rather than BLAKE2b: it is available everywhere an auditor might look
(``sha256sum``, OpenSSL, every language's standard library, HSMs, FIPS lists), and
CPython's OpenSSL-backed SHA-256 uses the SHA-NI / ARMv8 crypto instructions: on the
development machine it hashes at ~1.7 GB/s against ~0.9 GB/s for ``hashlib.blake2b``,
and for ~200-byte records the two cost the same (~1 us, dominated by call overhead).

Detection: a record's CRC catches random damage; the chain catches deliberate
edits (a fixed-up CRC still breaks the chain, and recomputing every later hash
changes ``head_hash``), deletions and reordering; the ``seq`` in each body and the
segment headers catch gaps and shuffled files.  A
truncation of the *last* segment at a record boundary, or deletion of the whole
last segment, is indistinguishable from a shorter log: anchor ``head_hash``
elsewhere (snapshots record seq + chain hash) to detect that.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable, Generator, Sequence
from itertools import accumulate, chain, repeat, starmap
from operator import add, xor

import crc32c
import msgspec

# clearing_native.scan_frames(buf, offset, end, seq, prev_hash, stop_seq, max_records,
# max_bytes) -> (records, next_offset, next_seq, last_hash, problem); see ``iter_frames``.
_ScanFrames = Callable[
    [bytes, int, int, int, bytes, int, int, int],
    tuple[list[tuple[int, str, bytes, bytes, bytes]], int, int, bytes, bool],
]
_native_scan_frames: _ScanFrames | None
try:  # the compiled extension (`pip install ./native`); the Python loop is the fallback
    from clearing_native import scan_frames as _native_scan_frames
except ImportError:  # pragma: no cover - exercised only where it is not installed
    _native_scan_frames = None

__all__ = [
    "FRAME_HEADER_BYTES",
    "GENESIS_HASH",
    "HASH_BYTES",
    "SEGMENT_HEADER_BYTES",
    "Record",
    "chain_hash",
    "encode_frame",
    "encode_frames",
    "segment_name",
    "segment_rules_version",
]

HASH_BYTES = 32
GENESIS_HASH = bytes(HASH_BYTES)

SEGMENT_MAGIC = b"CLJSEG"
SEGMENT_VERSION = 1
# magic, version, flags, first_seq, prev_hash  (+ u32 CRC appended separately)
_SEG_HEAD = struct.Struct(">6sBBQ32s")
_U32 = struct.Struct(">I")
SEGMENT_HEADER_BYTES = _SEG_HEAD.size + 4  # 52

FRAME_MAGIC = 0xC1
FRAME_VERSION = 1
_FRAME_MAGIC_VERSION = (FRAME_MAGIC << 8) | FRAME_VERSION  # first two bytes as a u16
# magic+version, body_len, body_len_check, body_crc
_FRAME = struct.Struct(">HIII")
FRAME_HEADER_BYTES = _FRAME.size  # 14
MAX_BODY_BYTES = 0xFFFFFFFF
_LEN_MASK = 0xFFFFFFFF

_SEG_NAME_RE = re.compile(r"^(\d{20})\.seg$")

_HASH_LENGTHS = struct.Struct(">QIII")  # seq, len(source), len(payload), len(outputs)

# Records per native scan call: enough to amortise the call, few enough that the batch's
# objects and bytes stay in cache until consumed (4096 measured ~1.5x slower than 1024);
# and a byte bound, so a batch of large records cannot hold much memory at once.
_NATIVE_BATCH = 1024
_NATIVE_BATCH_BYTES = 1 << 20
_U64_MAX = (1 << 64) - 1


class Record(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """One journal record.

    ``chain_hash`` is filled in by the journal on read.  On append it may be left
    empty (the journal computes it); if given it must equal the computed value,
    which lets a caller copy one journal into another and have the chain checked.
    """

    seq: int
    source: str
    payload: bytes
    outputs: bytes = b""
    chain_hash: bytes = b""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Record)


def chain_hash(
    prev_hash: bytes, seq: int, source_utf8: bytes, payload: bytes, outputs: bytes
) -> bytes:
    """SHA-256 chain hash of one record given the previous record's hash."""
    return hashlib.sha256(
        b"".join(
            (
                prev_hash,
                _HASH_LENGTHS.pack(seq, len(source_utf8), len(payload), len(outputs)),
                source_utf8,
                payload,
                outputs,
            )
        )
    ).digest()


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.seg"


def parse_segment_name(name: str) -> int | None:
    m = _SEG_NAME_RE.match(name)
    return int(m.group(1)) if m else None


def encode_segment_header(first_seq: int, prev_hash: bytes, rules_version: int = 1) -> bytes:
    rules_byte = 0 if rules_version == 1 else rules_version
    head = _SEG_HEAD.pack(SEGMENT_MAGIC, SEGMENT_VERSION, rules_byte, first_seq, prev_hash)
    return head + _U32.pack(crc32c.crc32c(head))


def segment_rules_version(data: bytes) -> int:
    """The rules version a valid segment header records (its byte 7; 0 is version 1)."""
    decode_segment_header(data)  # raises on a damaged header
    return data[7] or 1


class SegmentHeaderError(ValueError):
    """Raised by ``decode_segment_header`` with a human-readable reason."""


def decode_segment_header(data: bytes) -> tuple[int, bytes]:
    """Return ``(first_seq, prev_hash)`` of a 52-byte segment header."""
    if len(data) < SEGMENT_HEADER_BYTES:
        raise SegmentHeaderError(f"segment header short ({len(data)} bytes)")
    magic, version, _flags, first_seq, prev_hash = _SEG_HEAD.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise SegmentHeaderError("bad segment magic")
    (crc,) = _U32.unpack_from(data, _SEG_HEAD.size)
    if crc32c.crc32c(data[: _SEG_HEAD.size]) != crc:
        raise SegmentHeaderError("segment header CRC mismatch")
    if version != SEGMENT_VERSION:
        raise SegmentHeaderError(f"unsupported segment format version {version}")
    return first_seq, prev_hash


def encode_frame(record: Record) -> bytes:
    """Frame header + MessagePack body of a record whose chain_hash is already set."""
    body = _ENCODER.encode(record)
    body_len = len(body)
    if body_len > MAX_BODY_BYTES:
        raise ValueError(f"record seq {record.seq} is too large ({body_len} bytes)")
    header = _FRAME.pack(_FRAME_MAGIC_VERSION, body_len, body_len ^ _LEN_MASK, crc32c.crc32c(body))
    return header + body


def encode_frames(records: Sequence[Record]) -> tuple[bytes, list[int]]:
    """``encode_frame`` of each record, back to back, and the offset each frame ends at.

    The same bytes, built by C-level maps over the window rather than by one Python
    call per record (a third of the cost, where records are framed by the million)."""
    bodies = list(map(_ENCODER.encode, records))
    lengths = list(map(len, bodies))
    if lengths and max(lengths) > MAX_BODY_BYTES:
        index = next(i for i, length in enumerate(lengths) if length > MAX_BODY_BYTES)
        raise ValueError(f"record seq {records[index].seq} is too large ({lengths[index]} bytes)")
    headers = map(
        _FRAME.pack,
        repeat(_FRAME_MAGIC_VERSION),
        lengths,
        map(xor, lengths, repeat(_LEN_MASK)),
        map(crc32c.crc32c, bodies),
    )
    ends = list(accumulate(map(add, lengths, repeat(FRAME_HEADER_BYTES))))
    return b"".join(chain.from_iterable(zip(headers, bodies, strict=True))), ends


class BadFrame(Exception):
    """Internal: the frame at ``offset`` failed a check.

    ``torn`` says the damage looks like an interrupted write (see the module
    docstring); it only matters when the segment is the last one.
    """

    def __init__(self, offset: int, reason: str, torn: bool) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.torn = torn


def _zero_tail_within(buf: bytes, off: int, frame_end: int, end: int) -> bool:
    """True if everything from some point inside this frame (before ``frame_end``) to EOF
    is zero: the sectors of an interrupted write that never landed. Damage followed by
    any non-zero byte is corruption, not a torn write. Only called on a bad frame."""
    tail = bytes(buf[off:end])
    zero_start = off + len(tail.rstrip(b"\0"))
    return zero_start < min(frame_end, end)


def _bad_header(buf: bytes, off: int, end: int) -> BadFrame:
    return BadFrame(
        off,
        "bad record header (magic, version or length check)",
        _zero_tail_within(buf, off, off + FRAME_HEADER_BYTES, end),
    )


def _frame_at(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """Check the frame header at ``off``; return ``(body_end, body_crc)``."""
    if end - off < FRAME_HEADER_BYTES:
        raise BadFrame(
            off, f"record header truncated ({end - off} of {FRAME_HEADER_BYTES} bytes)", True
        )
    magic_version, body_len, body_len_check, body_crc = _FRAME.unpack_from(buf, off)
    if magic_version != _FRAME_MAGIC_VERSION or body_len ^ body_len_check != _LEN_MASK:
        raise _bad_header(buf, off, end)
    body_end = off + FRAME_HEADER_BYTES + body_len
    if body_end > end:
        raise BadFrame(off, f"record body truncated ({end - off} of {body_end - off} bytes)", True)
    return body_end, body_crc


def skip_frames(
    buf: bytes, end: int, first_seq: int, prev_hash: bytes, start_seq: int
) -> tuple[int, int, bytes]:
    """Pass over the frames of a segment before ``start_seq`` without hashing them.

    Returns ``(offset, seq, prev_hash)`` of the frame to read next: the stored hash of
    record ``start_seq - 1`` (its CRC checked) becomes the chain start. Raises
    ``BadFrame`` for a damaged frame on the way.
    """
    off = SEGMENT_HEADER_BYTES
    seq = first_seq
    prev = prev_hash
    while seq < start_seq and off < end:
        body_end, body_crc = _frame_at(buf, off, end)
        if seq == start_seq - 1:
            body = buf[off + FRAME_HEADER_BYTES : body_end]
            if crc32c.crc32c(body) != body_crc:
                raise BadFrame(
                    off,
                    "record body CRC mismatch",
                    body_end == end or _zero_tail_within(buf, off, body_end, end),
                )
            rec = _decode_checked(body, off, seq)
            prev = rec.chain_hash
        off = body_end
        seq += 1
    return off, seq, prev


def read_frame(buf: bytes, off: int, end: int, seq: int, prev: bytes) -> tuple[Record, int]:
    """Verify the frame at ``off`` as record ``seq`` following chain hash ``prev``: the
    reference check of one frame (header, CRC, body, seq, chain hash).

    Returns the record and the offset after it; raises the classified ``BadFrame``.
    """
    hdr = FRAME_HEADER_BYTES
    if end - off < hdr:
        _frame_at(buf, off, end)  # raises with the right classification
    mv, body_len, body_len_check, body_crc = _FRAME.unpack_from(buf, off)
    body_end = off + hdr + body_len
    if mv != _FRAME_MAGIC_VERSION or body_len ^ body_len_check != _LEN_MASK or body_end > end:
        _frame_at(buf, off, end)  # raises
    body = buf[off + hdr : body_end]
    if crc32c.crc32c(body) != body_crc:
        raise BadFrame(
            off,
            "record body CRC mismatch",
            body_end == end or _zero_tail_within(buf, off, body_end, end),
        )
    try:
        rec = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise BadFrame(off, f"undecodable record body ({exc})", False) from None
    if rec.seq != seq:
        raise BadFrame(off, f"record has seq {rec.seq} where {seq} was expected", False)
    src = rec.source.encode()
    payload = rec.payload
    outputs = rec.outputs
    digest = hashlib.sha256(
        b"".join(
            (
                prev,
                _HASH_LENGTHS.pack(seq, len(src), len(payload), len(outputs)),
                src,
                payload,
                outputs,
            )
        )
    ).digest()
    if digest != rec.chain_hash:
        raise BadFrame(off, f"hash chain break at seq {seq}", False)
    return rec, body_end


def native_scan_fits(buf: bytes, end: int, seq: int, prev: bytes) -> bool:
    """Whether a native frame scan may read this window: it reads ``buf`` through the
    buffer protocol and takes u64 seqs; odd inputs stay on the Python path, whose
    behaviour is the reference."""
    return end <= len(buf) and type(prev) is bytes and 0 <= seq <= _U64_MAX


def iter_frames(
    buf: bytes,
    end: int,
    first_seq: int,
    prev_hash: bytes,
    start_seq: int,
    stop_seq: int | None = None,
) -> Generator[Record, None, tuple[int, bytes]]:
    """Verify and yield the records of one segment held in ``buf`` (bytes or mmap).

    Frames are read from after the segment header up to ``end``.  Records with
    seq < ``start_seq`` are skipped without hashing (``skip_frames``).  Stops after
    ``stop_seq``.  Returns ``(last_seq, last_hash)`` of the records passed over, and
    raises ``BadFrame`` at the first problem.

    This is the hot loop of reading: one unpack, one CRC, one decode and one hash per
    record, no syscalls.  When ``clearing_native`` is available its ``scan_frames``
    runs it in batches; it only tells good frames from bad ones, and ``read_frame``
    still reads (and classifies) every frame it refuses.
    """
    off, seq, prev = skip_frames(buf, end, first_seq, prev_hash, start_seq)
    _off, seq, prev = yield from verify_frames(buf, off, end, seq, prev, stop_seq)
    return seq - 1, prev


def verify_frames(
    buf: bytes, off: int, end: int, seq: int, prev: bytes, stop_seq: int | None = None
) -> Generator[Record, None, tuple[int, int, bytes]]:
    """Verify and yield the records from the frame at ``off`` (record ``seq``, chained to
    ``prev``) up to ``end`` or ``stop_seq``. Returns ``(offset, seq, prev_hash)`` of the
    frame after the last one read; raises ``BadFrame`` at the first problem."""
    stop = stop_seq if stop_seq is not None else 1 << 64
    native = _native_scan_frames if native_scan_fits(buf, end, seq, prev) else None
    while off < end and seq <= stop:
        if native is not None and seq <= _U64_MAX:
            batch, off, seq, prev, problem = native(
                buf, off, end, seq, prev, min(stop, _U64_MAX), _NATIVE_BATCH, _NATIVE_BATCH_BYTES
            )
            yield from starmap(Record, batch)
            if not problem:
                continue
            # The frame at ``off`` failed a native check: ``read_frame`` raises the
            # classified BadFrame (or returns it, for an encoding only msgspec takes).
        rec, off = read_frame(buf, off, end, seq, prev)
        yield rec
        prev = rec.chain_hash
        seq += 1
    return off, seq, prev


def _decode_checked(body: bytes, off: int, seq: int) -> Record:
    try:
        rec = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise BadFrame(off, f"undecodable record body ({exc})", False) from None
    if rec.seq != seq:
        raise BadFrame(off, f"record has seq {rec.seq} where {seq} was expected", False)
    if len(rec.chain_hash) != HASH_BYTES:
        raise BadFrame(off, "record has a malformed chain hash", False)
    return rec
