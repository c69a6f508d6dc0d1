"""The daemon's exit codes (documented in the README and the SPEC's operations section)
and ``DaemonExit``, the one way any part of the daemon stops it with one of them."""

from __future__ import annotations

from typing import Final

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_FENCED",
    "EXIT_OK",
    "EXIT_RECOVERY",
    "EXIT_SHUTDOWN_TIMEOUT",
    "DaemonExit",
]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1  # a batch failed or something unexpected: restart, recovery rebuilds
EXIT_CONFIG: Final = 2  # bad configuration, wrong credentials or missing ACLs: fix, then start
EXIT_FENCED: Final = 3  # a newer instance with the same ledger id took over
EXIT_RECOVERY: Final = 4  # refused to start (topics, journal, snapshots): a person must look
EXIT_SHUTDOWN_TIMEOUT: Final = 5  # stop requested, but the bound passed: open txn aborted


class DaemonExit(Exception):
    """Stop the daemon with ``code``; ``message`` is the log line that says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
