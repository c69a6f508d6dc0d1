"""Pacing the demo on a terminal, so a person can watch the crash happen.

Unpaced, the whole simulated hour is over in a few seconds and the crash is one frame.
Paced, the run takes about ``PACE_S`` of wall time and the few simulated seconds around
the crash get a large share of it, so each crash tick (accepted, held, confirmed) stays
on screen for a moment. Pacing only ever waits: a machine slower than the schedule just
runs at full speed. ``--fast``, ``--no-live`` and a standard output that is not a
terminal turn it off, so tests and pipes never wait.

``Pacer`` maps simulated seconds to wall seconds (pure, ``wall_at``) and waits for them
(``wait``); the clock and the sleep are passed in, so tests need no real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

__all__ = ["CRASH_WALL_SHARE", "PACE_S", "Pacer", "should_pace"]

# Wall seconds a paced run takes: long enough to follow, short enough to sit through.
PACE_S: Final = 30.0
# Simulated seconds around the crash shown in slow motion: from the makers pulling their
# quotes (-5 s) to a few seconds after the confirming tick (+8 s).
CRASH_BEFORE_S: Final = 10.0
CRASH_AFTER_S: Final = 15.0
# Share of the wall time spent on that window: about 12 s for 25 simulated seconds, so
# each crash tick is a couple of seconds apart on screen.
CRASH_WALL_SHARE: Final = 0.4


def should_pace(*, live: bool, fast: bool) -> bool:
    """Pace only a live view (which is only ever on a terminal), unless ``--fast``."""
    return live and not fast


class Pacer:
    """Holds a run back to the wall-time schedule of its simulated clock."""

    def __init__(
        self,
        duration_s: float,
        crash_at_s: float,
        wall_s: float = PACE_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        frame_s: float = 0.25,
    ) -> None:
        self.duration_s = duration_s
        self.wall_s = wall_s
        self.window_start_s = max(0.0, crash_at_s - CRASH_BEFORE_S)
        self.window_end_s = min(duration_s, crash_at_s + CRASH_AFTER_S)
        window_s = max(0.0, self.window_end_s - self.window_start_s)
        calm_s = duration_s - window_s
        self._window_wall_s = wall_s * (CRASH_WALL_SHARE if calm_s > 0 else 1.0)
        self._calm_rate = (wall_s - self._window_wall_s) / calm_s if calm_s > 0 else 0.0
        self._window_rate = self._window_wall_s / window_s if window_s > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._frame_s = frame_s
        self._started: float | None = None
        self._last_frame_wall_s = 0.0

    def start(self) -> None:
        """The run starts now: simulated second 0 is due at once."""
        self._started = self._clock()
        self._last_frame_wall_s = 0.0

    def wall_at(self, sim_s: float) -> float:
        """Wall seconds from the start at which simulated second ``sim_s`` is shown."""
        sim_s = min(max(sim_s, 0.0), self.duration_s)
        before = min(sim_s, self.window_start_s)
        inside = min(max(sim_s - self.window_start_s, 0.0), self.window_end_s - self.window_start_s)
        after = max(sim_s - self.window_end_s, 0.0)
        return (before + after) * self._calm_rate + inside * self._window_rate

    def frame_due(self, sim_s: float) -> bool:
        """Whether the schedule has moved a frame on since the last ``wait``: time to
        submit what is batched and redraw."""
        return self.wall_at(sim_s) - self._last_frame_wall_s >= self._frame_s

    def wait(self, sim_s: float) -> float:
        """Sleep until ``sim_s`` is due on the wall clock; the seconds slept."""
        if self._started is None:
            self.start()
        now = self._clock()
        due = self.wall_at(sim_s)
        self._last_frame_wall_s = due
        ahead_s = self._started + due - now  # type: ignore[operator]
        if ahead_s <= 0:
            return 0.0
        self._sleep(ahead_s)
        return ahead_s
