"""A time limit on the lack of progress, not on the total time.

A batch's sends are bounded so that a broker that stopped answering (say, the journal
topic was deleted: aiokafka retries such a produce forever) stops the daemon instead of
hanging it. A bound on the batch's total send time would also stop a healthy batch that
is merely large (one input can emit hundreds of thousands of events): that batch fails
the same way after every restart and the venue stops clearing. So the bound is on the
time since the last progress: a batch that keeps moving completes, whatever its size; a
batch that stops moving trips the bound ``limit_s`` after its last progress.

``ProgressDeadline`` is the rule, on explicit times and counts (no clock: tests drive
it); ``progress_timeout`` applies it to an ``async with`` body like ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Final

__all__ = ["CHECKS_PER_LIMIT", "NoProgress", "ProgressDeadline", "progress_timeout"]

# How often progress is looked at, per limit: a stall is caught between limit_s and
# limit_s * (1 + 1 / CHECKS_PER_LIMIT) after the last progress.
CHECKS_PER_LIMIT: Final = 4


class NoProgress(TimeoutError):
    """The body of ``progress_timeout`` made no progress for its limit."""

    def __init__(self, limit_s: float, progress: int) -> None:
        super().__init__(f"no progress for {limit_s} s (progress so far: {progress})")
        self.limit_s = limit_s
        self.progress = progress


class ProgressDeadline:
    """Expires ``limit_s`` after the start or after the count of progress last grew,
    whichever is later."""

    def __init__(self, limit_s: float, start_s: float) -> None:
        if limit_s <= 0:
            raise ValueError(f"limit_s must be positive, got {limit_s}")
        self.limit_s = limit_s
        self.progress = 0
        self._last_progress_s = start_s

    def observe(self, progress: int, now_s: float) -> None:
        """The count of progress made so far is ``progress`` at ``now_s``: if it grew,
        the limit starts over from ``now_s`` (when it grew is not known more exactly,
        and the later time never trips a body that is still moving)."""
        if progress > self.progress:
            self.progress = progress
            self._last_progress_s = max(self._last_progress_s, now_s)

    @property
    def expires_at_s(self) -> float:
        return self._last_progress_s + self.limit_s

    def expired(self, now_s: float) -> bool:
        return now_s >= self.expires_at_s


@contextlib.asynccontextmanager
async def progress_timeout(limit_s: float, progress: Callable[[], int]) -> AsyncIterator[None]:
    """Cancel the body and raise ``NoProgress`` once ``progress()`` (a count that only
    grows, e.g. of answered sends) has not grown for ``limit_s``.

    ``progress`` is polled ``CHECKS_PER_LIMIT`` times per ``limit_s``, not reported by
    the body: a done callback per send costs microseconds on every one of a batch's
    messages, a poll a few per limit. A ``TimeoutError`` raised inside the body passes
    through unchanged.
    """
    loop = asyncio.get_running_loop()
    deadline = ProgressDeadline(limit_s, loop.time())
    interval_s = limit_s / CHECKS_PER_LIMIT
    # asyncio.Timeout does the cancelling and its undoing; the watchdog only decides when.
    bound = asyncio.timeout(None)
    watchdog: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal watchdog
        now_s = loop.time()
        deadline.observe(progress(), now_s)
        if deadline.expired(now_s):
            bound.reschedule(now_s)
        else:
            watchdog = loop.call_at(min(now_s + interval_s, deadline.expires_at_s), check)

    try:
        async with bound:
            watchdog = loop.call_at(loop.time() + interval_s, check)
            try:
                yield
            finally:
                # Before the Timeout exits: a late check must not touch a finished one.
                if watchdog is not None:
                    watchdog.cancel()
    except TimeoutError as exc:
        if bound.expired():  # ours, not some TimeoutError raised inside the body
            raise NoProgress(limit_s, deadline.progress) from exc
        raise
