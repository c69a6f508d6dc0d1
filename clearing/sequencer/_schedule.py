"""When the sequencer's upkeep is due: a full invariant check every so many inputs, a
snapshot every so many more. One schedule for every writer: the embedded sequencer runs
the work inline after a batch, the Kafka daemon in a forked child between transactions
(``clearing.kafka._upkeep``); both ask this object what is due and tell it what ran.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "DEFAULT_INVARIANT_CHECK_INPUTS",
    "DEFAULT_KEEP_SNAPSHOTS",
    "DEFAULT_SNAPSHOT_EVERY_INPUTS",
    "Due",
    "UpkeepSchedule",
]

# A full invariant check is O(accounts); every 100k inputs keeps it well under 1% of time.
DEFAULT_INVARIANT_CHECK_INPUTS: Final = 100_000
DEFAULT_SNAPSHOT_EVERY_INPUTS: Final = 1_000_000
DEFAULT_KEEP_SNAPSHOTS: Final = 3


class Due(NamedTuple):
    snapshot: bool
    check: bool


class UpkeepSchedule:
    """Counts inputs since the last invariant check and the last snapshot attempt.

    ``snapshot_every_inputs=None``: this writer has nowhere to write snapshots.
    """

    __slots__ = ("invariant_check_inputs", "last_check_seq", "last_snapshot_seq",
                 "snapshot_every_inputs")  # fmt: skip

    def __init__(
        self,
        seq: int,
        *,
        snapshot_every_inputs: int | None = DEFAULT_SNAPSHOT_EVERY_INPUTS,
        invariant_check_inputs: int = DEFAULT_INVARIANT_CHECK_INPUTS,
        last_snapshot_seq: int | None = None,
    ) -> None:
        self.snapshot_every_inputs = snapshot_every_inputs
        self.invariant_check_inputs = invariant_check_inputs
        self.last_check_seq = seq
        self.last_snapshot_seq = seq if last_snapshot_seq is None else last_snapshot_seq

    def snapshot_due(self, seq: int) -> bool:
        every = self.snapshot_every_inputs
        return every is not None and seq - self.last_snapshot_seq >= every

    def check_due(self, seq: int) -> bool:
        return seq - self.last_check_seq >= self.invariant_check_inputs

    def due(self, seq: int) -> Due:
        return Due(self.snapshot_due(seq), self.check_due(seq))

    def checked(self, seq: int) -> None:
        """A full invariant check ran (or was started) at ``seq``."""
        self.last_check_seq = seq

    def snapshot_attempted(self, seq: int) -> None:
        """A snapshot at ``seq`` was written or failed: the next one is due only after
        another interval either way (a snapshot only shortens recovery)."""
        self.last_snapshot_seq = seq
