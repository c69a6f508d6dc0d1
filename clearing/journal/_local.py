"""``LocalJournal``: the journal as segment files in a local directory.

The byte layout is documented in ``clearing.journal._format``.

Durability (``fsync`` policy)
-----------------------------
Every ``append(records)`` call is one group commit: all frames of the batch are
encoded in memory first (so a bad record is rejected before anything is written),
then written with a single ``write`` per segment touched (normally exactly one).

* ``"batch"`` (default): after the write, one ``fdatasync`` of the segment (and
  an ``fsync`` of the directory when the batch created a segment).  When
  ``append`` returns, the whole batch survives power loss.  If a batch spans a
  segment roll, the older segment is synced before the newer one is created, so a
  crash can only ever tear the last segment.
* ``"always"``: one ``write`` + ``fdatasync`` per record.  Each record is durable
  before the next is written; slower, and no stronger for acknowledged data than
  ``"batch"``.  Meant for diagnostics and very low-volume deployments.
* ``"never"``: no fsync; data is handed to the OS page cache on every ``append``
  (so it survives a crash of this process, not of the machine).  ``sync()`` makes
  it durable.  After an OS crash the journal may need ``repair_truncate``.

``sync()`` always fsyncs whatever is not yet durable, under every policy; call it
before writing a snapshot if the policy is ``"never"``.

A crash in the middle of ``append`` can leave a prefix of the batch plus a torn
record at the end of the last segment.  The next open truncates the torn record
(logging a warning naming the segment, offset and bytes dropped); the caller
then sees which prefix survived via ``last_seq`` / ``last_record()`` and must
re-submit the rest (the ``source`` field identifies it).

Segments
--------
A segment is closed when the next record would push it past ``segment_bytes``
(a record larger than that gets a segment of its own); a batch that crosses the
limit continues in a new segment within the same ``append``.

Concurrency
-----------
One writer per directory (enforced by the lock).  Within a process, ``append``,
``sync`` and ``close`` must come from one thread at a time; iterators returned by
``read`` only touch files and a frozen copy of the segment list, so they may run
in other threads while appends continue.

Open
----
The directory is created (mode 0o700) if missing; an exclusive ``flock`` on
``LOCK`` keeps a second writer out (``JournalLocked``).  ``scan="full"`` (default)
verifies every CRC, seq and the whole hash chain before the journal is usable;
``scan="tail"`` checks only segment headers plus the complete last segment, and
leaves the rest of the chain to be checked as ``read`` passes over it.  Anything
wrong other than a torn tail raises ``JournalCorrupt`` and changes nothing.
"""

from __future__ import annotations

import bisect
import fcntl
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

from clearing.storage import Storage

from ._errors import JournalClosed, JournalCorrupt, JournalLocked
from ._format import (
    SEGMENT_HEADER_BYTES,
    BadFrame,
    Record,
    SegmentHeaderError,
    chain_hash,
    decode_segment_header,
    encode_frame,
    encode_segment_header,
    native_scan_fits,
    read_frame,
    segment_name,
    segment_rules_version,
    skip_frames,
    verify_frames,
)
from ._protocol import hash_at
from ._rules import RulesVersionConflict, settle_rules_version
from ._scan import ScanMode, ScanResult, SegmentInfo, map_file, scan

__all__ = ["DEFAULT_SEGMENT_BYTES", "FrameWindow", "FsyncPolicy", "LocalJournal"]

log = logging.getLogger("clearing.journal")

FsyncPolicy = Literal["batch", "always", "never"]
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
LOCK_NAME = "LOCK"
DIR_MODE = 0o700
FILE_MODE = 0o600

_fdatasync = getattr(os, "fdatasync", os.fsync)


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    # os.write may write less than asked (signals, >2 GiB on Linux); loop until done.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _ModuleCalls(Storage):
    """The default storage: this module's functions, looked up when called (the disk
    fault tests patch them)."""

    def write(self, fd: int, data: bytes | memoryview) -> None:
        write_all(fd, data)  # type: ignore[arg-type]

    def fdatasync(self, fd: int) -> None:
        _fdatasync(fd)

    def fsync_dir(self, directory: str) -> None:
        fsync_dir(directory)


def acquire_lock(directory: str) -> int:
    """Exclusive non-blocking flock on ``directory/LOCK``; returns the fd to keep open."""
    fd = os.open(
        os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalLocked(f"journal {directory} is locked by another writer") from None
    return fd


def cut_at(result: ScanResult) -> tuple[int, list[str]]:
    """Cut the journal at ``result.problem``: truncate that segment to the problem's
    offset (delete it if no record remains) and delete every later segment.

    Returns ``(bytes_dropped, deleted_paths)``.  Later segments go first so that
    a crash part-way leaves the problem at the tail, where a rerun finishes the job.
    """
    problem = result.problem
    assert problem is not None
    dropped_bytes = 0
    deleted: list[str] = []
    for path in reversed(result.all_paths[result.problem_index + 1 :]):
        dropped_bytes += os.stat(path).st_size
        os.unlink(path)
        deleted.append(path)
    size = os.stat(problem.segment).st_size
    if problem.offset <= SEGMENT_HEADER_BYTES:
        dropped_bytes += size
        os.unlink(problem.segment)
        deleted.append(problem.segment)
    else:
        dropped_bytes += size - problem.offset
        os.truncate(problem.segment, problem.offset)
        fd = os.open(problem.segment, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(result.directory)
    deleted.reverse()
    return dropped_bytes, deleted


@dataclass(slots=True)
class _Chunk:
    """Frames planned for one segment within one ``append`` call."""

    first_seq: int  # of the segment
    new: bool  # the segment must be created (parts[0] is its header)
    parts: list[bytes] = field(default_factory=list)
    last: Record | None = None


class LocalJournal:
    """Append-only, hash-chained journal in a directory of segment files.

    ``readonly=True`` takes no lock, never creates or modifies anything, and
    ignores (with a warning) a torn tail instead of truncating it; ``append`` and
    ``sync`` then raise ``JournalClosed``. Appends and syncs go through ``storage``
    (``clearing.storage.Storage``; the fault simulator passes one that fails).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: FsyncPolicy = "batch",
        *,
        scan_mode: ScanMode = "full",
        readonly: bool = False,
        storage: Storage | None = None,
        rules_version: int | None = None,
    ) -> None:
        """``rules_version``: the ledger's rules (SPEC §9) for a journal that has no
        segment yet (default 1); a journal that has one keeps the version it recorded,
        and asking for another raises ValueError."""
        if segment_bytes <= SEGMENT_HEADER_BYTES:
            raise ValueError(f"segment_bytes must exceed {SEGMENT_HEADER_BYTES}")
        if fsync not in ("batch", "always", "never"):
            raise ValueError(f"unknown fsync policy {fsync!r}")
        self._dir = os.fspath(directory)
        self._segment_bytes = segment_bytes
        self._fsync: FsyncPolicy = fsync
        self._readonly = readonly
        self._storage: Storage = storage if storage is not None else _ModuleCalls()
        self._lock_fd: int | None = None
        self._fd: int | None = None  # active (last) segment, append-only
        self._unsynced: list[str] = []  # closed segments written since the last sync
        self._active_unsynced = False
        self._dir_unsynced = False
        self._failed: BaseException | None = None
        self._closed = False

        if not readonly:
            if not os.path.isdir(self._dir):
                os.makedirs(self._dir, mode=DIR_MODE, exist_ok=True)
                os.chmod(self._dir, DIR_MODE)  # makedirs mode is filtered by the umask
            self._lock_fd = acquire_lock(self._dir)
        try:
            result = self._open_scan(scan_mode)
            self._segments: list[SegmentInfo] = result.segments
            self._last_seq = result.last_seq
            self._head_hash = result.head_hash
            self._last_record = result.last_record
            self._rules_version = self._recorded_rules(rules_version)
            if self._segments and not readonly:
                self._fd = os.open(
                    self._segments[-1].path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
                )
        except BaseException:
            self._release()
            raise

    def _open_scan(self, scan_mode: ScanMode) -> ScanResult:
        result = scan(self._dir, scan_mode)
        problem = result.problem
        if problem is None:
            return result
        if not problem.torn:
            raise JournalCorrupt(self._dir, problem.segment, problem.offset, problem.reason)
        if self._readonly:
            log.warning(
                "journal %s: ignoring torn tail in segment %s at byte offset %d (%s); "
                "it will be truncated when the journal is next opened for writing",
                self._dir,
                problem.segment,
                problem.offset,
                problem.reason,
            )
            return result
        dropped_bytes, _deleted = cut_at(result)
        log.warning(
            "journal %s: torn tail in segment %s at byte offset %d (%s): truncated, "
            "dropped %d bytes",
            self._dir,
            problem.segment,
            problem.offset,
            problem.reason,
            dropped_bytes,
        )
        result = scan(self._dir, scan_mode)
        if result.problem is not None:
            p = result.problem
            raise JournalCorrupt(self._dir, p.segment, p.offset, p.reason)
        return result

    def _recorded_rules(self, requested: int | None) -> int:
        recorded = None
        if self._segments:
            with open(self._segments[0].path, "rb") as first:
                recorded = segment_rules_version(first.read(SEGMENT_HEADER_BYTES))
        try:
            return settle_rules_version(recorded, requested)
        except RulesVersionConflict as conflict:
            raise ValueError(
                f"journal {self._dir} records rules version {conflict.recorded}, not "
                f"{conflict.requested}; a ledger's rules version is fixed when it is created"
            ) from None

    # -- properties ---------------------------------------------------------------

    @property
    def rules_version(self) -> int:
        """The ledger's rules version, as recorded in its segment headers (SPEC §9)."""
        return self._rules_version

    @property
    def directory(self) -> str:
        return self._dir

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def head_hash(self) -> bytes:
        return self._head_hash

    @property
    def segment_bytes(self) -> int:
        return self._segment_bytes

    @property
    def fsync_policy(self) -> FsyncPolicy:
        return self._fsync

    def segments(self) -> list[SegmentInfo]:
        """Copies of the segment descriptors, oldest first."""
        return [replace(s) for s in self._segments]

    def last_record(self) -> Record | None:
        return self._last_record

    def hash_at(self, seq: int) -> bytes:
        """Chain hash of record ``seq`` (``GENESIS_HASH`` for 0); ValueError outside."""
        return hash_at(self, seq)

    # -- writing ------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise JournalClosed(f"journal {self._dir} is closed")
        if self._readonly:
            raise JournalClosed(f"journal {self._dir} was opened read-only")
        if self._failed is not None:
            raise JournalClosed(
                f"journal {self._dir} failed on an earlier write ({self._failed!r}); reopen it"
            )

    def _plan(self, records: Iterable[Record]) -> list[_Chunk]:
        """Validate and encode a batch; split it where segments roll.  Writes nothing."""
        seq = self._last_seq
        prev = self._head_hash
        active = self._segments[-1] if self._segments else None
        cur_size = active.size_bytes if active is not None else None
        chunks: list[_Chunk] = []
        chunk: _Chunk | None = None
        limit = self._segment_bytes
        for rec in records:
            seq += 1
            if not isinstance(rec, Record):
                raise TypeError(f"expected Record, got {type(rec).__name__}")
            if rec.seq != seq:
                raise ValueError(f"record seq {rec.seq} appended where seq {seq} was expected")
            if not isinstance(rec.source, str):
                raise TypeError(f"record seq {seq}: source must be str")
            if not isinstance(rec.payload, bytes) or not isinstance(rec.outputs, bytes):
                raise TypeError(f"record seq {seq}: payload and outputs must be bytes")
            digest = chain_hash(prev, seq, rec.source.encode(), rec.payload, rec.outputs)
            if rec.chain_hash and rec.chain_hash != digest:
                raise ValueError(f"record seq {seq}: chain_hash does not match the journal")
            stored = Record(seq, rec.source, rec.payload, rec.outputs, digest)
            frame = encode_frame(stored)
            # Roll before a record that would overflow, but never leave a segment empty.
            if cur_size is None or (
                cur_size > SEGMENT_HEADER_BYTES and cur_size + len(frame) > limit
            ):
                header = encode_segment_header(seq, prev, self._rules_version)
                chunk = _Chunk(first_seq=seq, new=True, parts=[header])
                chunks.append(chunk)
                cur_size = len(header)
            elif chunk is None:
                assert active is not None
                chunk = _Chunk(first_seq=active.first_seq, new=False)
                chunks.append(chunk)
            chunk.parts.append(frame)
            chunk.last = stored
            cur_size += len(frame)
            prev = digest
        return chunks

    def append(self, records: Iterable[Record]) -> None:
        """Append one batch: one write (per segment touched) and, under ``"batch"``,
        one fdatasync.  Raises ``ValueError``/``TypeError`` before writing anything
        if a record is invalid."""
        self._check_writable()
        chunks = self._plan(records)
        for chunk in chunks:
            try:
                self._write_chunk(chunk)
            except BaseException as exc:
                # Part of the batch may be on disk: refuse further writes until a reopen
                # re-establishes the true tail.
                self._failed = exc
                raise

    def _write_chunk(self, chunk: _Chunk) -> None:
        storage = self._storage
        if chunk.new:
            if self._fd is not None:
                if self._active_unsynced:
                    self._unsynced.append(self._segments[-1].path)
                storage.close(self._fd)
                self._fd = None
            path = os.path.join(self._dir, segment_name(chunk.first_seq))
            self._fd = storage.open(
                path,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                FILE_MODE,
            )
            self._segments.append(SegmentInfo(chunk.first_seq, path, 0, chunk.first_seq - 1))
            self._dir_unsynced = True
        fd = self._fd
        assert fd is not None
        seg = self._segments[-1]
        if self._fsync == "always":
            # The segment header goes out with the first frame.
            parts = chunk.parts
            if chunk.new:
                parts = [parts[0] + parts[1], *parts[2:]]
            for part in parts:
                storage.write(fd, part)
                storage.fdatasync(fd)
                if self._dir_unsynced:
                    self._storage.fsync_dir(self._dir)
                    self._dir_unsynced = False
            data_bytes = sum(len(p) for p in parts)
        else:
            data = b"".join(chunk.parts)
            storage.write(fd, data)
            data_bytes = len(data)
            if self._fsync == "batch":
                storage.fdatasync(fd)
                if self._dir_unsynced:
                    self._storage.fsync_dir(self._dir)
                    self._dir_unsynced = False
            else:
                self._active_unsynced = True
        last = chunk.last
        assert last is not None
        seg.size_bytes += data_bytes
        seg.last_seq = last.seq
        self._last_seq = last.seq
        self._head_hash = last.chain_hash
        self._last_record = last

    def sync(self) -> None:
        """fsync everything written so far (a no-op unless the policy is ``"never"``)."""
        self._check_writable()
        storage = self._storage
        for path in self._unsynced:
            fd = storage.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                storage.fsync(fd)
            finally:
                storage.close(fd)
        self._unsynced.clear()
        if self._fd is not None and self._active_unsynced:
            storage.fdatasync(self._fd)
            self._active_unsynced = False
        if self._dir_unsynced:
            self._storage.fsync_dir(self._dir)
            self._dir_unsynced = False

    # -- reading ------------------------------------------------------------------

    def read(self, from_seq: int = 1, until_seq: int | None = None) -> Iterator[Record]:
        if from_seq < 1:
            raise ValueError("from_seq must be >= 1")
        if self._closed:
            raise JournalClosed(f"journal {self._dir} is closed")
        last = self._last_seq if until_seq is None else min(until_seq, self._last_seq)
        if from_seq > last:
            return iter(())
        # Freeze the segment list and sizes now: appends during iteration are not seen.
        segs = [(s.first_seq, s.path, s.size_bytes) for s in self._segments]
        return self._iter(segs, from_seq, last)

    def _iter(self, segs: list[tuple[int, str, int]], from_seq: int, last: int) -> Iterator[Record]:
        for window in self._windows(segs, from_seq, last):
            yield from window.scan()

    def frame_windows(
        self, from_seq: int = 1, until_seq: int | None = None
    ) -> Iterator[FrameWindow]:
        """The records ``from_seq..until_seq`` as raw frame windows, one per segment, for a
        verifier that checks frames itself (``read`` is the same walk, verified here).

        Each window's frames must all be verified (``FrameWindow.advance`` after checking
        them elsewhere, ``read_record`` / ``scan`` here) before the next window is asked
        for: the journal checks each segment's start against where the last one ended.
        A window's buffer is valid only until then. Same range rules as ``read``.
        """
        if from_seq < 1:
            raise ValueError("from_seq must be >= 1")
        if self._closed:
            raise JournalClosed(f"journal {self._dir} is closed")
        last = self._last_seq if until_seq is None else min(until_seq, self._last_seq)
        if from_seq > last:
            return iter(())
        segs = [(s.first_seq, s.path, s.size_bytes) for s in self._segments]
        return self._windows(segs, from_seq, last)

    def _windows(
        self, segs: list[tuple[int, str, int]], from_seq: int, last: int
    ) -> Iterator[FrameWindow]:
        firsts = [s[0] for s in segs]
        index = bisect.bisect_right(firsts, from_seq) - 1
        prev_hash: bytes | None = None
        prev_seq: int | None = None
        for first_seq, path, size in segs[index:]:
            if first_seq > last:
                return
            with map_file(path) as (buf, file_size):
                if file_size < size:
                    raise JournalCorrupt(
                        self._dir, path, file_size, f"segment shrank to {file_size} of {size} bytes"
                    )
                try:
                    head_seq, seg_prev = decode_segment_header(buf[:SEGMENT_HEADER_BYTES])
                except SegmentHeaderError as exc:
                    raise JournalCorrupt(self._dir, path, 0, str(exc)) from None
                if head_seq != first_seq:
                    raise JournalCorrupt(
                        self._dir, path, 0, f"segment header says first seq {head_seq}"
                    )
                if prev_seq is not None and first_seq != prev_seq + 1:
                    raise JournalCorrupt(
                        self._dir,
                        path,
                        0,
                        f"segment starts at seq {first_seq}, expected "
                        f"{prev_seq + 1} (missing or reordered segment)",
                    )
                if prev_hash is not None and seg_prev != prev_hash:
                    raise JournalCorrupt(self._dir, path, 0, "hash chain break between segments")
                try:
                    offset, seq, prev = skip_frames(
                        buf, size, first_seq, seg_prev, max(from_seq, first_seq)
                    )
                except BadFrame as bad:
                    raise JournalCorrupt(self._dir, path, bad.offset, bad.reason) from None
                window = FrameWindow(self._dir, path, buf, offset, size, seq, prev, last)
                yield window
                if not window.finished:
                    raise RuntimeError(f"frame window of {path} left before all its frames")
                prev_seq, prev_hash = window.seq - 1, window.prev_hash

    # -- lifecycle ----------------------------------------------------------------

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the fd drops the flock
            self._lock_fd = None

    def close(self) -> None:
        """Close files and release the lock.  Does not fsync under ``"never"``: call
        ``sync()`` first for a durable clean shutdown."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def __enter__(self) -> LocalJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LocalJournal({self._dir!r}, last_seq={self._last_seq}, "
            f"segments={len(self._segments)}, fsync={self._fsync!r})"
        )


class FrameWindow:
    """The frames of one segment still to verify: bytes ``offset..end`` of ``buf``, whose
    first frame must be record ``seq`` chained to ``prev_hash``; records after
    ``stop_seq`` are not asked for.

    A verifier checks frames (as ``_format`` documents them) from the cursor on and moves
    it with ``advance``; at a frame it refuses, ``read_record`` reads that one frame with
    the journal's own checks, which raise the classified ``JournalCorrupt`` (or return a
    record whose encoding only the reference decoder takes).
    """

    __slots__ = ("_directory", "_path", "buf", "end", "offset", "prev_hash", "seq", "stop_seq")

    def __init__(
        self,
        directory: str,
        path: str,
        buf: bytes,
        offset: int,
        end: int,
        seq: int,
        prev_hash: bytes,
        stop_seq: int,
    ) -> None:
        self._directory = directory
        self._path = path
        self.buf = buf
        self.offset = offset
        self.end = end
        self.seq = seq
        self.prev_hash = prev_hash
        self.stop_seq = stop_seq

    @property
    def finished(self) -> bool:
        """Whether every frame asked for has been verified."""
        return self.offset >= self.end or self.seq > self.stop_seq

    @property
    def native_scan_fits(self) -> bool:
        """Whether a native frame scan may read this window (see ``_format``)."""
        return native_scan_fits(self.buf, self.end, self.seq, self.prev_hash)

    def advance(self, offset: int, seq: int, prev_hash: bytes) -> None:
        """Move the cursor past frames a verifier has checked: ``offset`` is the next
        frame's, ``seq`` its record's and ``prev_hash`` the chain hash before it."""
        if not (self.offset <= offset <= self.end and seq >= self.seq):
            raise ValueError(f"frame window of {self._path}: cannot move back or past its end")
        self.offset, self.seq, self.prev_hash = offset, seq, prev_hash

    def read_record(self) -> Record:
        """Verify the frame at the cursor here and move past it."""
        try:
            record, self.offset = read_frame(
                self.buf, self.offset, self.end, self.seq, self.prev_hash
            )
        except BadFrame as bad:
            raise JournalCorrupt(self._directory, self._path, bad.offset, bad.reason) from None
        self.seq += 1
        self.prev_hash = record.chain_hash
        return record

    def scan(self) -> Iterator[Record]:
        """Verify here and yield the rest of the window's records."""
        try:
            self.offset, self.seq, self.prev_hash = yield from verify_frames(
                self.buf, self.offset, self.end, self.seq, self.prev_hash, self.stop_seq
            )
        except BadFrame as bad:
            raise JournalCorrupt(self._directory, self._path, bad.offset, bad.reason) from None
