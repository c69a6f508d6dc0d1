"""The file-system calls the local journal and the snapshot writer make.

``Storage`` is the real thing. Both writers take one (``LocalJournal(storage=...)``,
``write_snapshot(storage=...)``), so that a test or the fault simulator can pass its own
that fails on purpose (ENOSPC after a prefix, EIO on fdatasync, a crash mid-write), as a
simulator passes its own disk to the code under test instead of patching functions.
Imports nothing of ours.
"""

from __future__ import annotations

import os

__all__ = ["Storage"]

_fdatasync = getattr(os, "fdatasync", os.fsync)


class Storage:
    """Open, write, sync and close files and directories; raises ``OSError`` as the
    kernel does."""

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        # os.write may write less than asked (signals, >2 GiB on Linux); loop until done.
        view = memoryview(data).cast("B")
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def fdatasync(self, fd: int) -> None:
        _fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fsync_dir(self, directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self, fd: int) -> None:
        os.close(fd)
