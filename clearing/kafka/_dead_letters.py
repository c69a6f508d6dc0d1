"""One log line per dead-lettered input, rate-limited so that a flood cannot drown the log.

Each line says why the input was refused (its SPEC reject reason, or ``oversized``), the
detail, where it came from (``kafka:topic:partition:offset``), its size and, for a
rejected input, its seq::

    dead letter kafka:clearing.fills:0:1234 (98 bytes): unknown_market "market 'XRP-PERP'
        has not been created" (seq 1042), sent to clearing.dlq

At most ``burst`` such lines are written per ``interval_s``; the rest are counted, and
one line says how many were not shown (by reason) when the interval ends (at the first
batch after it). ``clearing_dlq_records_total`` and the DLQ topic itself have them all.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Final

from clearing.kafka._batch import (
    HEADER_DETAIL,
    HEADER_REASON,
    HEADER_SEQ,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    OutMessage,
    source_of,
)

__all__ = ["DeadLetterLog", "RateLimiter"]

log = logging.getLogger("clearing.kafka")

DEFAULT_BURST: Final = 20
DEFAULT_INTERVAL_S: Final = 60.0


class RateLimiter:
    """Admits the first ``burst`` events of each ``interval_s`` window and counts the rest.

    Pure: the caller passes the (monotonic) time, so a test can drive it. A window
    starts at the first event after the previous one ended.
    """

    def __init__(self, burst: int = DEFAULT_BURST, interval_s: float = DEFAULT_INTERVAL_S):
        if burst < 1 or interval_s <= 0:
            raise ValueError("burst must be >= 1 and interval_s > 0")
        self.burst = burst
        self.interval_s = interval_s
        self._window_end_s: float | None = None
        self._admitted = 0
        self.suppressed: Counter[str] = Counter()  # in the current window, by kind

    def close_expired(self, now_s: float) -> Counter[str]:
        """End the window if ``now_s`` is past it: returns what it suppressed (then
        forgotten), empty otherwise."""
        if self._window_end_s is None or now_s < self._window_end_s:
            return Counter()
        suppressed, self.suppressed = self.suppressed, Counter()
        self._window_end_s = None
        self._admitted = 0
        return suppressed

    def admit(self, now_s: float, kind: str = "") -> bool:
        """True: show this event. False: it was counted under ``kind`` instead.
        Call ``close_expired`` first, or a window never ends."""
        if self._window_end_s is None:
            self._window_end_s = now_s + self.interval_s
        if self._admitted < self.burst:
            self._admitted += 1
            return True
        self.suppressed[kind] += 1
        return False


def _headers(message: OutMessage) -> dict[str, str]:
    return {name: value.decode(errors="replace") for name, value in message.headers}


class DeadLetterLog:
    """Logs the DLQ records of each committed batch through a ``RateLimiter``."""

    def __init__(self, dlq_topic: str, limiter: RateLimiter | None = None) -> None:
        self.dlq_topic = dlq_topic
        self.limiter = limiter if limiter is not None else RateLimiter()

    def log(self, messages: Iterable[OutMessage], now_s: float) -> None:
        """Call once per committed batch (also with none: it ends a finished window)."""
        limiter = self.limiter
        suppressed = limiter.close_expired(now_s)
        if suppressed:
            self._log_suppressed(suppressed)
        for message in messages:
            headers = _headers(message)
            reason = headers.get(HEADER_REASON, "?")
            if limiter.admit(now_s, reason):
                self._log_one(message, headers, reason)

    def _log_one(self, message: OutMessage, headers: dict[str, str], reason: str) -> None:
        try:
            source = source_of(
                headers[HEADER_SOURCE_TOPIC],
                int(headers[HEADER_SOURCE_PARTITION]),
                int(headers[HEADER_SOURCE_OFFSET]),
            )
        except (KeyError, ValueError):
            source = "kafka:?"
        seq = headers.get(HEADER_SEQ)
        size_bytes = len(message.value) if message.value is not None else 0
        extra: dict[str, object] = {"source": source}
        if seq is not None and seq.isdigit():
            extra["seq"] = int(seq)
        log.info(
            "dead letter %s (%d bytes): %s %r%s, sent to %s",
            source,
            size_bytes,
            reason,
            headers.get(HEADER_DETAIL, ""),  # repr: one line, whatever the input held
            f" (seq {seq})" if seq is not None else "",
            self.dlq_topic,
            extra=extra,
        )

    def _log_suppressed(self, suppressed: Counter[str]) -> None:
        by_reason = ", ".join(f"{reason} {count}" for reason, count in suppressed.most_common())
        log.warning(
            "and %d more dead letters not logged one by one (at most %d per %g s): %s; "
            "every one is in %s",
            sum(suppressed.values()),
            self.limiter.burst,
            self.limiter.interval_s,
            by_reason,
            self.dlq_topic,
        )
