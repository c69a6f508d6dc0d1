"""The journal package's errors (defined in ``clearing.errors``, re-exported here)."""

from __future__ import annotations

from clearing.errors import JournalClosed, JournalCorrupt, JournalError, JournalLocked

__all__ = ["JournalClosed", "JournalCorrupt", "JournalError", "JournalLocked"]
