"""Snapshots of the full engine state, tied to a journal position.

The engine state is an opaque byte string here.  A snapshot says "this is the
state after applying journal records 1..journal_seq, whose chain hash is
journal_hash"; recovery loads the newest valid snapshot and replays the journal
from ``journal_seq + 1``, after checking that the journal's chain hash at
``journal_seq`` equals ``journal_hash`` (otherwise the snapshot belongs to another
history and must not be used).

Files
-----
``snapshot-<journal_seq, 20 decimal digits>.snap`` in a snapshot directory
(created with mode 0o700; files are 0o600).  Writers create
``.snapshot-<seq>.snap.<pid>.<random>.tmp`` first; anything not matching the final
name pattern is ignored by readers.  Writing is atomic: temp file in the same
directory, write, fsync, rename over the final name, fsync the directory.  A
crash leaves either the complete new file or no new file (plus, at worst, a
stray temp file, which ``prune`` removes).

Layout (integers big-endian, unsigned)::

    off  size       field
    0    6          magic          b"CLSNAP"
    6    1          format_version 1
    7    1          flags          0 (reserved)
    8    8          journal_seq    last journal record included in the state (0: none)
    16   32         journal_hash   journal chain hash at journal_seq (32 zero bytes for 0)
    48   32         state_sha256   SHA-256 of the state bytes
    80   8          state_len      length of the state in bytes
    88   4          meta_len       length of the metadata in bytes
    92   8          created_ts_ns  wall-clock creation time, ns since the Unix epoch
    100  4          meta_crc       CRC32C of the metadata bytes
    104  4          header_crc     CRC32C of bytes 0..103
    108  meta_len   metadata       UTF-8 JSON object (keys sorted), e.g. engine version
    ...  state_len  state          the engine state, opaque
    EOF must follow the state immediately.

A snapshot is valid when the magic, version and both CRCs match, the file is
exactly ``108 + meta_len + state_len`` bytes, the metadata is a JSON object, the
state's SHA-256 equals ``state_sha256`` and ``journal_seq`` equals the number in
the file name.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import struct
import time
from typing import Any

import crc32c
import msgspec

from clearing.errors import SnapshotError
from clearing.storage import Storage

__all__ = [
    "HEADER_BYTES",
    "Snapshot",
    "SnapshotError",
    "SnapshotInfo",
    "default_snapshot_dir",
    "install_snapshot",
    "list_snapshots",
    "load_latest",
    "parse_snapshot_header",
    "prune",
    "read_snapshot",
    "snapshot_name",
    "write_snapshot",
]

log = logging.getLogger("clearing.snapshot")

MAGIC = b"CLSNAP"
FORMAT_VERSION = 1
HASH_BYTES = 32
# magic, version, flags, journal_seq, journal_hash, state_sha256, state_len, meta_len,
# created_ts_ns, meta_crc  (+ u32 header CRC)
_HEAD = struct.Struct(">6sBBQ32s32sQIQI")
_U32 = struct.Struct(">I")
HEADER_BYTES = _HEAD.size + 4  # 108
DIR_MODE = 0o700
FILE_MODE = 0o600
_NAME_RE = re.compile(r"^snapshot-(\d{20})\.snap$")
_TMP_RE = re.compile(r"^\.snapshot-\d{20}\.snap\..*\.tmp$")


def default_snapshot_dir(journal_dir: str) -> str:
    """Snapshots live beside the journal's segments unless told otherwise."""
    return os.path.join(journal_dir, "snapshots")


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    path: str
    journal_seq: int
    journal_hash: bytes
    state_sha256: bytes
    created_ts_ns: int
    meta: dict[str, Any]
    state: bytes


class SnapshotInfo(msgspec.Struct, frozen=True, gc=False):
    """One snapshot file as listed by ``list_snapshots``.

    ``problem`` is None when the file passed the checks that were run (header,
    size and metadata always; the state hash only with ``verify_state=True``).
    When the header is unreadable, ``journal_seq`` comes from the file name and
    the other fields are zero/empty.
    """

    path: str
    journal_seq: int
    size_bytes: int
    created_ts_ns: int
    journal_hash: bytes
    state_sha256: bytes
    meta: dict[str, Any]
    problem: str | None


class _Header(msgspec.Struct, frozen=True, gc=False):
    journal_seq: int
    journal_hash: bytes
    state_sha256: bytes
    state_len: int
    meta_len: int
    created_ts_ns: int
    meta_crc: int


def snapshot_name(journal_seq: int) -> str:
    return f"snapshot-{journal_seq:020d}.snap"


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _ModuleCalls(Storage):
    """The default storage: this module's functions, looked up when called (the disk
    fault tests patch them)."""

    def write(self, fd: int, data: bytes | memoryview) -> None:
        _write_all(fd, data)

    def fsync_dir(self, directory: str) -> None:
        _fsync_dir(directory)


def write_snapshot(
    directory: str | os.PathLike[str],
    state_bytes: bytes,
    journal_seq: int,
    journal_hash: bytes,
    meta: dict[str, Any] | None = None,
    *,
    created_ts_ns: int | None = None,
    storage: Storage | None = None,
) -> str:
    """Atomically write a snapshot; returns its path.

    ``meta`` must be JSON-serialisable (engine version, config hash, ...).  An
    existing snapshot of the same seq is replaced atomically. The file is written and
    synced through ``storage`` (``clearing.storage.Storage``).
    """
    disk: Storage = storage if storage is not None else _ModuleCalls()
    d = os.fspath(directory)
    if journal_seq < 0:
        raise ValueError("journal_seq must be >= 0")
    if len(journal_hash) != HASH_BYTES:
        raise ValueError(f"journal_hash must be {HASH_BYTES} bytes")
    meta_bytes = msgspec.json.encode(meta if meta is not None else {}, order="sorted")
    state_view = memoryview(state_bytes).cast("B")
    ts_ns = time.time_ns() if created_ts_ns is None else created_ts_ns
    head = _HEAD.pack(
        MAGIC,
        FORMAT_VERSION,
        0,
        journal_seq,
        bytes(journal_hash),
        hashlib.sha256(state_view).digest(),
        len(state_view),
        len(meta_bytes),
        ts_ns,
        crc32c.crc32c(meta_bytes),
    )
    header = head + _U32.pack(crc32c.crc32c(head))

    if not os.path.isdir(d):
        os.makedirs(d, mode=DIR_MODE, exist_ok=True)
        os.chmod(d, DIR_MODE)  # makedirs' mode is filtered by the umask
    final = os.path.join(d, snapshot_name(journal_seq))
    tmp = os.path.join(d, f".{snapshot_name(journal_seq)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = disk.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            # Header and metadata are small; the state is written from the caller's
            # buffer without another copy.
            disk.write(fd, header + meta_bytes)
            disk.write(fd, state_view)
            disk.fsync(fd)
        finally:
            disk.close(fd)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    disk.fsync_dir(d)
    return final


def _parse_header(data: bytes) -> _Header:
    if len(data) < HEADER_BYTES:
        raise SnapshotError(f"file too short for a header ({len(data)} bytes)")
    (
        magic,
        version,
        _flags,
        journal_seq,
        journal_hash,
        state_sha256,
        state_len,
        meta_len,
        created_ts_ns,
        meta_crc,
    ) = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise SnapshotError("bad magic (not a snapshot file)")
    (header_crc,) = _U32.unpack_from(data, _HEAD.size)
    if crc32c.crc32c(data[: _HEAD.size]) != header_crc:
        raise SnapshotError("header CRC mismatch")
    if version != FORMAT_VERSION:
        raise SnapshotError(f"unsupported snapshot format version {version}")
    return _Header(
        journal_seq, journal_hash, state_sha256, state_len, meta_len, created_ts_ns, meta_crc
    )


def _decode_meta(meta_bytes: bytes, header: _Header) -> dict[str, Any]:
    if crc32c.crc32c(meta_bytes) != header.meta_crc:
        raise SnapshotError("metadata CRC mismatch")
    try:
        meta = msgspec.json.decode(meta_bytes)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise SnapshotError("metadata is not a JSON object")
    return meta


def _check_name(path: str, header: _Header) -> None:
    m = _NAME_RE.match(os.path.basename(path))
    if m is None or int(m.group(1)) != header.journal_seq:
        raise SnapshotError(
            f"file name does not match the journal seq {header.journal_seq} in its header"
        )


def read_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read and fully validate one snapshot file; raises ``SnapshotError``."""
    p = os.fspath(path)
    with open(p, "rb") as f:
        size_bytes = os.fstat(f.fileno()).st_size
        header = _parse_header(f.read(HEADER_BYTES))
        expected = HEADER_BYTES + header.meta_len + header.state_len
        if size_bytes != expected:
            raise SnapshotError(f"file is {size_bytes} bytes, header says {expected}")
        _check_name(p, header)
        meta = _decode_meta(f.read(header.meta_len), header)
        state = f.read(header.state_len)
    if len(state) != header.state_len:
        raise SnapshotError("file shrank while being read")
    if hashlib.sha256(state).digest() != header.state_sha256:
        raise SnapshotError("state SHA-256 mismatch")
    return Snapshot(
        path=p,
        journal_seq=header.journal_seq,
        journal_hash=header.journal_hash,
        state_sha256=header.state_sha256,
        created_ts_ns=header.created_ts_ns,
        meta=meta,
        state=state,
    )


def parse_snapshot_header(data: bytes) -> tuple[int, bytes, dict[str, Any]]:
    """``(journal_seq, journal_hash, meta)`` from a snapshot file's bytes (header and
    metadata checked; the state is not)."""
    header = _parse_header(data[:HEADER_BYTES])
    meta = _decode_meta(data[HEADER_BYTES : HEADER_BYTES + header.meta_len], header)
    return header.journal_seq, header.journal_hash, meta


def install_snapshot(directory: str | os.PathLike[str], data: bytes) -> Snapshot:
    """Write a whole snapshot file received as bytes (e.g. from Kafka) into ``directory``
    under its proper name, atomically, and read it back fully validated. A file that
    fails validation is removed again and ``SnapshotError`` raised."""
    d = os.fspath(directory)
    seq, _hash, _meta = parse_snapshot_header(data)
    if not os.path.isdir(d):
        os.makedirs(d, mode=DIR_MODE, exist_ok=True)
        os.chmod(d, DIR_MODE)
    final = os.path.join(d, snapshot_name(seq))
    tmp = os.path.join(d, f".{snapshot_name(seq)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(d)
    try:
        return read_snapshot(final)
    except SnapshotError:
        with contextlib.suppress(OSError):
            os.unlink(final)
        raise


def _snapshot_files(directory: str) -> list[tuple[int, str]]:
    """``(seq from name, path)`` of snapshot files, oldest first."""
    if not os.path.isdir(directory):
        return []
    found: list[tuple[int, str]] = []
    with os.scandir(directory) as it:
        for entry in it:
            m = _NAME_RE.match(entry.name)
            if m is not None:
                found.append((int(m.group(1)), entry.path))
    found.sort()
    return found


def load_latest(directory: str | os.PathLike[str], max_seq: int | None = None) -> Snapshot | None:
    """Newest valid snapshot (with ``journal_seq <= max_seq`` if given), or None.

    Invalid snapshots are skipped with a warning.  Pass ``max_seq=journal.last_seq``
    so that a snapshot newer than the journal (e.g. after ``repair_truncate``) is
    never used.
    """
    d = os.fspath(directory)
    for seq, path in reversed(_snapshot_files(d)):
        if max_seq is not None and seq > max_seq:
            log.warning(
                "snapshot %s is ahead of the journal (seq %d > %d): skipped", path, seq, max_seq
            )
            continue
        try:
            return read_snapshot(path)
        except (SnapshotError, OSError) as exc:
            log.warning("snapshot %s is unusable (%s): falling back to an older one", path, exc)
    return None


def list_snapshots(
    directory: str | os.PathLike[str], verify_state: bool = False
) -> list[SnapshotInfo]:
    """Every snapshot file, oldest first, with what is known about it.

    Reads only headers and metadata unless ``verify_state`` (which hashes every
    state, i.e. reads every file completely).
    """
    d = os.fspath(directory)
    infos: list[SnapshotInfo] = []
    for seq, path in _snapshot_files(d):
        try:
            size_bytes = os.stat(path).st_size
        except OSError as exc:  # deleted meanwhile
            infos.append(SnapshotInfo(path, seq, 0, 0, b"", b"", {}, str(exc)))
            continue
        try:
            if verify_state:
                snap = read_snapshot(path)
                infos.append(
                    SnapshotInfo(
                        path,
                        seq,
                        size_bytes,
                        snap.created_ts_ns,
                        snap.journal_hash,
                        snap.state_sha256,
                        snap.meta,
                        None,
                    )
                )
                continue
            with open(path, "rb") as f:
                header = _parse_header(f.read(HEADER_BYTES))
                expected = HEADER_BYTES + header.meta_len + header.state_len
                if size_bytes != expected:
                    raise SnapshotError(f"file is {size_bytes} bytes, header says {expected}")
                _check_name(path, header)
                meta = _decode_meta(f.read(header.meta_len), header)
            infos.append(
                SnapshotInfo(
                    path,
                    seq,
                    size_bytes,
                    header.created_ts_ns,
                    header.journal_hash,
                    header.state_sha256,
                    meta,
                    None,
                )
            )
        except (SnapshotError, OSError) as exc:
            infos.append(SnapshotInfo(path, seq, size_bytes, 0, b"", b"", {}, str(exc)))
    return infos


def prune(directory: str | os.PathLike[str], keep: int, remove_temp: bool = True) -> list[str]:
    """Keep the ``keep`` newest *valid* snapshots; delete every snapshot file older
    than the oldest one kept.  Returns the deleted paths.

    Invalid files newer than that are left alone for inspection (readers skip
    them).  Validity is checked fully (state hash), newest first, stopping once
    ``keep`` valid ones are found.  With ``remove_temp``, leftover temp files from
    crashed writers are deleted too: do not prune while another process is writing
    a snapshot into the same directory.
    """
    if keep < 1:
        raise ValueError("keep must be >= 1")
    d = os.fspath(directory)
    files = _snapshot_files(d)
    kept = 0
    cut_index: int | None = None  # index in files of the oldest snapshot kept
    for index in range(len(files) - 1, -1, -1):
        try:
            read_snapshot(files[index][1])
        except (SnapshotError, OSError):
            continue
        kept += 1
        if kept == keep:
            cut_index = index
            break
    removed: list[str] = []
    if cut_index is not None:
        for _seq, path in files[:cut_index]:
            os.unlink(path)
            removed.append(path)
    if remove_temp and os.path.isdir(d):
        with os.scandir(d) as it:
            stale = [e.path for e in it if _TMP_RE.match(e.name)]
        for path in stale:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    if removed:
        _fsync_dir(d)
    return removed
