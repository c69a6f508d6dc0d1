"""Invariant checks and snapshots in a forked child, so the daemon never stalls for them.

A full check of a large ledger (both SPEC invariants plus the liquidation index) takes
seconds, and so does serialising it: at 100k accounts holding 600k positions the check
alone is ~2.8 s, at 1M accounts a snapshot ~10 s. Done on the event loop, every check
and every snapshot was a pause in consumption that SREs would see as lag spikes.

``os.fork`` gives the child a copy-on-write image of the state exactly as of the last
committed batch: it checks it, writes the snapshot if one is due, reports one short
message through a pipe and leaves with ``os._exit`` (no Python clean-up, nothing of the
parent's sockets or event loop touched). The parent keeps consuming and learns the
result when the child exits. A violation found by the child stops the daemon exactly as
one found on the event loop would. Memory: pages the parent changes while the child
runs are copied, so at worst the ledger's memory doubles for the seconds a child lives.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from collections.abc import Callable
from typing import Final, NoReturn

from clearing.engine import EngineCore, InvariantViolation

__all__ = ["BackgroundJob", "BackgroundResult", "start_background_job"]

EXIT_CHECKED: Final = 0
EXIT_VIOLATION: Final = 3
EXIT_CRASHED: Final = 4
EXIT_SNAPSHOT_FAILED: Final = 5
_PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>
# One write below PIPE_BUF never blocks, so the child can always finish and be reaped.
_MESSAGE_MAX_BYTES: Final = 4000


class BackgroundResult:
    """What a child found: a ``violation`` (the ledger is broken), an ``error`` (the check
    itself failed: a bug), a ``snapshot_error`` (the state checked out but could not be
    written, e.g. a full disk), ``interrupted`` (a signal ended it: a service stop, the
    OOM killer; nothing was learnt), or all clear, with ``snapshot_path`` when it wrote
    one."""

    __slots__ = (
        "error",
        "interrupted",
        "seconds",
        "seq",
        "snapshot_error",
        "snapshot_path",
        "violation",
    )

    def __init__(
        self,
        seq: int,
        seconds: float,
        snapshot_path: str | None = None,
        violation: str | None = None,
        error: str | None = None,
        snapshot_error: str | None = None,
        interrupted: str | None = None,
    ) -> None:
        self.seq = seq
        self.seconds = seconds
        self.snapshot_path = snapshot_path
        self.violation = violation
        self.error = error
        self.snapshot_error = snapshot_error
        self.interrupted = interrupted


class BackgroundJob:
    """A running child. ``wait()`` reaps it and returns its result (once)."""

    __slots__ = ("_read_fd", "_started", "pid", "seq", "wants_snapshot")

    def __init__(self, pid: int, read_fd: int, seq: int, wants_snapshot: bool) -> None:
        self.pid = pid
        self.seq = seq
        self.wants_snapshot = wants_snapshot
        self._read_fd = read_fd
        self._started = time.perf_counter()

    async def wait(self) -> BackgroundResult:
        loop = asyncio.get_running_loop()
        _, status = await loop.run_in_executor(None, os.waitpid, self.pid, 0)
        return self._result(status)

    def kill(self) -> None:
        """Stop the child now (shutdown) and reap it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        finally:
            self._close()

    def _result(self, status: int) -> BackgroundResult:
        seconds = time.perf_counter() - self._started
        try:
            message = os.read(self._read_fd, _MESSAGE_MAX_BYTES + 1).decode("utf-8", "replace")
        finally:
            self._close()
        code = os.waitstatus_to_exitcode(status)
        if code == EXIT_CHECKED:
            return BackgroundResult(self.seq, seconds, snapshot_path=message or None)
        if code == EXIT_VIOLATION:
            return BackgroundResult(self.seq, seconds, violation=message)
        if code == EXIT_SNAPSHOT_FAILED:
            return BackgroundResult(self.seq, seconds, snapshot_error=message)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
            return BackgroundResult(self.seq, seconds, interrupted=f"killed by {name}")
        return BackgroundResult(self.seq, seconds, error=message or f"exit status {code}")

    def _close(self) -> None:
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1


def start_background_job(
    engine: EngineCore, write_snapshot: Callable[[EngineCore], str] | None
) -> BackgroundJob:
    """Fork a child that checks ``engine`` and, with ``write_snapshot``, snapshots it.

    Call only between batches, when the engine holds exactly the committed state.
    """
    read_fd, write_fd = os.pipe()
    parent_pid = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        _die_with(parent_pid)
        _child(engine, write_snapshot, write_fd)
    os.close(write_fd)
    return BackgroundJob(pid, read_fd, engine.seq, write_snapshot is not None)


def _die_with(parent_pid: int) -> None:
    """Have the kernel kill this child when the daemon dies (Linux), so a daemon killed
    with -9 leaves no child behind to finish an old snapshot next to its successor."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the child finishes its (still consistent) work and exits
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(EXIT_CRASHED)


def _child(
    engine: EngineCore, write_snapshot: Callable[[EngineCore], str] | None, write_fd: int
) -> NoReturn:
    code, message = EXIT_CRASHED, ""
    try:
        # The parent's handlers write to its event loop's wakeup socket, which this copy
        # shares: a SIGTERM for the whole service must simply end the child.
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        try:
            engine.check_invariants()
        except InvariantViolation as exc:
            code, message = EXIT_VIOLATION, str(exc)
        else:
            code, message = EXIT_CHECKED, ""
            if write_snapshot is not None:
                try:
                    message = write_snapshot(engine)
                except OSError as exc:
                    code, message = EXIT_SNAPSHOT_FAILED, str(exc)
    except BaseException as exc:
        code, message = EXIT_CRASHED, repr(exc)
    try:
        os.write(write_fd, message.encode("utf-8", "replace")[:_MESSAGE_MAX_BYTES])
    finally:
        os._exit(code)
