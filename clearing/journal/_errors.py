"""Exceptions raised by the journal package."""

from __future__ import annotations

import os

__all__ = ["JournalClosed", "JournalCorrupt", "JournalError", "JournalLocked"]


class JournalError(Exception):
    """Base class of every journal error."""


class JournalLocked(JournalError):
    """Another process (or another ``LocalJournal`` object) holds the writer lock."""


class JournalClosed(JournalError):
    """The journal was closed, or a failed write left it unusable until it is reopened."""


class JournalCorrupt(JournalError):
    """The journal failed an integrity check somewhere other than a torn tail.

    ``segment`` is the path of the segment file and ``offset`` the byte offset inside
    it where the first bad record (or the bad segment header, offset 0) starts.
    Nothing is modified when this is raised: the operator decides what to do.
    """

    def __init__(self, directory: str, segment: str, offset: int, reason: str) -> None:
        self.directory = directory
        self.segment = segment
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"journal corrupt: {reason} (segment {segment}, byte offset {offset}). "
            f"Nothing was changed. Inspect with `clearing journal verify {directory}`; "
            f"`clearing journal verify --repair-truncate {directory}` cuts the journal at "
            f"the last good record before this point (records after it are deleted and "
            f"must be re-ingested from their sources)."
        )

    @property
    def segment_name(self) -> str:
        return os.path.basename(self.segment)
