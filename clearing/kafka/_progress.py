"""A time limit on the lack of progress, not on the total time.

A batch's sends are bounded so that a broker that stopped answering (say, the journal
topic was deleted: aiokafka retries such a produce forever) stops the daemon instead of
hanging it. A bound on the batch's total send time would also stop a healthy batch that
is merely large (one input can emit hundreds of thousands of events): that batch fails
the same way after every restart and the venue stops clearing. So the bound is on the
time since the last acknowledged send: a batch that keeps moving completes, whatever its
size; a batch that stops moving trips the bound ``limit_s`` after its last progress.

``ProgressDeadline`` is the rule, on explicit times (no clock: tests drive it);
``progress_timeout`` applies it to an ``async with`` body like ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["NoProgress", "ProgressDeadline", "progress_timeout"]


class NoProgress(TimeoutError):
    """The body of ``progress_timeout`` made no progress for its limit."""

    def __init__(self, limit_s: float, progress_count: int) -> None:
        super().__init__(f"no progress for {limit_s} s (after {progress_count} steps)")
        self.limit_s = limit_s
        self.progress_count = progress_count


class ProgressDeadline:
    """Expires ``limit_s`` after the start or after the last progress, whichever is later."""

    def __init__(self, limit_s: float, start_s: float) -> None:
        if limit_s <= 0:
            raise ValueError(f"limit_s must be positive, got {limit_s}")
        self.limit_s = limit_s
        self._last_progress_s = start_s
        self.progress_count = 0

    def progress(self, now_s: float) -> None:
        """Something moved at ``now_s``: the limit starts over from there."""
        self.progress_count += 1
        # Callbacks can report out of order; never move the deadline backwards.
        self._last_progress_s = max(self._last_progress_s, now_s)

    @property
    def expires_at_s(self) -> float:
        return self._last_progress_s + self.limit_s

    def expired(self, now_s: float) -> bool:
        return now_s >= self.expires_at_s


@contextlib.asynccontextmanager
async def progress_timeout(limit_s: float) -> AsyncIterator[ProgressDeadline]:
    """Cancel the body and raise ``NoProgress`` once it made no progress for ``limit_s``.

    The body reports progress on the yielded deadline (``deadline.progress(loop.time())``,
    typically from futures' done callbacks). Progress only records a time: the watchdog
    wakes once per ``limit_s`` at most, so reporting millions of acknowledgements costs
    no timer churn. A ``TimeoutError`` raised inside the body passes through unchanged.
    """
    loop = asyncio.get_running_loop()
    deadline = ProgressDeadline(limit_s, loop.time())
    # asyncio.Timeout does the cancelling and its undoing; the watchdog only decides when.
    bound = asyncio.timeout(None)
    watchdog: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal watchdog
        if deadline.expired(loop.time()):
            bound.reschedule(loop.time())
        else:
            watchdog = loop.call_at(deadline.expires_at_s, check)

    try:
        async with bound:
            watchdog = loop.call_at(deadline.expires_at_s, check)
            try:
                yield deadline
            finally:
                # Before the Timeout exits: a late check must not touch a finished one.
                if watchdog is not None:
                    watchdog.cancel()
    except TimeoutError as exc:
        if bound.expired():  # ours, not some TimeoutError raised inside the body
            raise NoProgress(limit_s, deadline.progress_count) from exc
        raise
