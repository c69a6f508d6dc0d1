"""A disk that fails on purpose, for the fault simulator and the disk fault tests.

``FaultyStorage`` is a ``clearing.storage.Storage``: the code under test (the local
journal, the snapshot writer) is handed one instead of the real disk, as a deterministic
simulator hands its own storage to the system it tests, and nothing is patched. It
behaves as the real disk until ``arm``-ed with a fault; the next call the fault applies
to then fails (once), drawing whatever it needs from the caller's ``random.Random``, so
a seed decides every cut.
"""

from __future__ import annotations

import errno
import os
import random
from typing import Final, Literal

from clearing.storage import Storage

__all__ = ["FAULTS", "Fault", "FaultyStorage", "SimulatedCrash"]

Fault = Literal[
    "crash_in_write",  # a random prefix of the write lands, then the process dies
    "enospc_in_write",  # a random prefix lands, then ENOSPC (or EDQUOT, drawn at arm)
    "eio_in_write",  # a random prefix lands, then EIO
    "fsync_eio",  # fdatasync fails with EIO
    "erofs_on_segment_create",  # creating a journal segment fails: read-only file system
    "write_enospc",  # a write fails with ENOSPC before writing anything (snapshots)
]
FAULTS: Final[tuple[Fault, ...]] = (
    "crash_in_write",
    "enospc_in_write",
    "eio_in_write",
    "fsync_eio",
    "erofs_on_segment_create",
    "write_enospc",
)
_EDQUOT_SHARE: Final = 0.3  # of the ENOSPC faults: a quota, not a full disk
_SEGMENT_SUFFIX: Final = ".seg"


class SimulatedCrash(BaseException):
    """Raised inside a write: the process 'dies' there (nothing in the code under test
    catches a BaseException that is not its own)."""


class FaultyStorage(Storage):
    """The real disk, except for one armed fault at a time."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._armed: Fault | None = None
        self._errno = 0
        self.fired = False  # the armed fault acted (some faults find no call to act on)

    def arm(self, fault: Fault | None) -> None:
        """Make ``fault`` happen at the next call it applies to (None: disarm)."""
        self._armed = fault
        self.fired = False
        self._errno = {"enospc_in_write": errno.ENOSPC, "eio_in_write": errno.EIO}.get(
            fault or "", 0
        )
        if fault == "enospc_in_write" and self._rng.random() < _EDQUOT_SHARE:
            self._errno = errno.EDQUOT

    def disarm(self) -> None:
        self._armed = None

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:
        if (
            self._armed == "erofs_on_segment_create"
            and flags & os.O_CREAT
            and str(path).endswith(_SEGMENT_SUFFIX)
        ):
            self._fire()
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return super().open(path, flags, mode)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        armed = self._armed
        if armed == "write_enospc":
            self._fire()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if armed not in ("crash_in_write", "enospc_in_write", "eio_in_write"):
            super().write(fd, data)
            return
        self._fire()
        cut = self._rng.randrange(len(data) + 1)
        super().write(fd, memoryview(data)[:cut])
        if armed == "crash_in_write":
            raise SimulatedCrash
        raise OSError(self._errno, os.strerror(self._errno))

    def fdatasync(self, fd: int) -> None:
        if self._armed == "fsync_eio":
            self._fire()
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fdatasync(fd)

    def _fire(self) -> None:
        self.fired = True
        # Once: the process reacts (breaks, crashes, retries a snapshot later).
        self._armed = None
