"""The journal's largest fund loss over one horizon: where the report's back-test looks.

The rule, generic (it knows nothing of the demo's script): follow the insurance fund's
equity after every input, less what was paid into it from outside (deposits to the fund
net of withdrawals: a top-up is not a gain and must not hide a loss). For every input
``s``, the horizon after it is the inputs after ``s`` stamped at most one horizon after
it (the newest ``ts`` seen so far stands for an input without one), and the loss over it
is the fund's net equity after ``s`` minus that after the last of them: what
``clearing risk`` would have called the fund's equity loss had it been asked about the
ledger at ``s``. The input with the largest such loss (the latest of equals) starts the
episode; the ledger at that seq is the one "just before" it.

One pass, memory bounded by the inputs of one horizon (a queue of the starts whose
horizon is still open). Pure: fed by the report's replay (``_collect``).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

__all__ = ["DrawdownTracker", "LossEpisode"]


@dataclass(frozen=True)
class LossEpisode:
    start_seq: int  # the ledger just before the loss: the back-test asks about it
    start_ts_ns: int  # the newest input stamp at or before it
    end_seq: int  # the last input of the horizon after it
    loss_e16: int  # the fund's net equity after start_seq minus after end_seq (> 0)
    paid_in_e16: int = 0  # deposits to the fund less withdrawals, in (start_seq, end_seq]


class DrawdownTracker:
    """The largest loss of the fund's net equity over one horizon seen so far (``worst``)."""

    def __init__(self, horizon_ns: int) -> None:
        self.horizon_ns = horizon_ns
        self.paid_in_e16 = 0  # deposits to the fund less withdrawals from it, so far
        self.worst: LossEpisode | None = None
        # (seq, stamp, net equity, paid in so far) of each start whose horizon is open
        self._open: collections.deque[tuple[int, int, int, int]] = collections.deque()
        # (seq, net equity, paid in so far) of the previous input
        self._last: tuple[int, int, int] | None = None
        self._ts_ns: int | None = None  # the newest stamp so far

    def pay_in(self, amount_e16: int) -> None:
        """Money paid into the fund from outside (negative: taken out)."""
        self.paid_in_e16 += amount_e16

    def observe(self, seq: int, ts_ns: int | None, fund_equity_e16: int) -> None:
        """The fund's equity after input ``seq`` (after any ``pay_in`` it made) and its
        stamp, if it has one."""
        if ts_ns is not None and (self._ts_ns is None or ts_ns > self._ts_ns):
            self._ts_ns = ts_ns
        if self._ts_ns is None:
            return  # no clock yet: no horizon can be measured
        self._close(self._ts_ns - self.horizon_ns)
        net_e16 = fund_equity_e16 - self.paid_in_e16
        self._open.append((seq, self._ts_ns, net_e16, self.paid_in_e16))
        self._last = (seq, net_e16, self.paid_in_e16)

    def finish(self) -> LossEpisode | None:
        """The journal ended: the horizons still open end at its last input."""
        self._close(None)
        return self.worst

    def _close(self, before_ns: int | None) -> None:
        """End the horizons of the starts stamped before ``before_ns`` (None: all) at the
        previous input."""
        if self._last is None:
            return
        end_seq, end_e16, end_paid_in_e16 = self._last
        while self._open and (before_ns is None or self._open[0][1] < before_ns):
            seq, ts_ns, net_e16, paid_in_e16 = self._open.popleft()
            loss_e16 = net_e16 - end_e16
            # Of equal losses the latest start wins: the ledger closest to the fall.
            if loss_e16 > 0 and (self.worst is None or loss_e16 >= self.worst.loss_e16):
                paid_in_over_e16 = end_paid_in_e16 - paid_in_e16
                self.worst = LossEpisode(seq, ts_ns, end_seq, loss_e16, paid_in_over_e16)
