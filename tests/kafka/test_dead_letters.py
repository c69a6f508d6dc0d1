"""Dead letters in the log: one line each with reason, source, size and seq, at most
``burst`` per interval, then one "and K more" line. No broker needed: the plan is pure."""

from __future__ import annotations

import logging

import pytest

from clearing.engine import Engine
from clearing.kafka import InputRecord, JournalChain, plan_batch
from clearing.kafka._dead_letters import DeadLetterLog, RateLimiter

MARKET = b'{"type":"market","market":"M","imr":"0.5","mmr":"0.1","liq_fee":"0"}'
MAX_MESSAGE_BYTES = 200


def test_limiter_admits_the_burst_then_counts_until_the_window_ends() -> None:
    limiter = RateLimiter(burst=3, interval_s=10.0)
    admitted = [limiter.admit(100.0 + i, "a" if i % 2 else "b") for i in range(7)]
    assert admitted == [True, True, True, False, False, False, False]
    assert limiter.close_expired(109.9) == {}  # still inside the window opened at 100
    assert limiter.close_expired(110.0) == {"a": 2, "b": 2}
    assert limiter.close_expired(110.0) == {}  # reported once
    # A new window opens with the next event: the burst is available again.
    assert [limiter.admit(500.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.close_expired(510.0) == {"": 1}


def test_limiter_rejects_a_useless_setting() -> None:
    with pytest.raises(ValueError):
        RateLimiter(burst=0)
    with pytest.raises(ValueError):
        RateLimiter(interval_s=0)


def _plan(values: list[bytes | None], topic: str = "fills") -> list:  # type: ignore[type-arg]
    records = [
        InputRecord(topic, 2, 40 + i, 1_000 + i, None, value) for i, value in enumerate(values)
    ]
    plan = plan_batch(
        Engine(), JournalChain(), records, journal_topic="j", events_topic="e",
        dlq_topic="dlq", ledger_id="L", max_message_bytes=MAX_MESSAGE_BYTES,
    )  # fmt: skip
    return plan.dlq


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "clearing.kafka"]


def test_each_dead_letter_is_one_line_with_reason_source_size_and_seq(
    caplog: pytest.LogCaptureFixture,
) -> None:
    big = b"x" * (MAX_MESSAGE_BYTES + 1)
    dlq = _plan([MARKET, b"{not json\nsecond line", big])
    caplog.set_level(logging.INFO, "clearing.kafka")
    DeadLetterLog("dlq").log(dlq, now_s=0.0)
    lines = [r.getMessage() for r in _lines(caplog)]
    assert len(lines) == 2, lines
    oversized = next(line for line in lines if "oversized" in line)
    assert oversized.startswith("dead letter kafka:fills:2:42 (201 bytes): oversized '201 bytes")
    assert "seq" not in oversized  # never sequenced
    rejected = next(line for line in lines if "malformed" in line)
    assert rejected.startswith("dead letter kafka:fills:2:41 (21 bytes): malformed '")
    assert rejected.endswith("(seq 2), sent to dlq")
    assert all("\n" not in line for line in lines)
    record = next(r for r in _lines(caplog) if "malformed" in r.getMessage())
    assert (record.seq, record.source) == (2, "kafka:fills:2:41")  # type: ignore[attr-defined]


def test_a_flood_logs_the_burst_then_one_summary_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "clearing.kafka")
    dead_letters = DeadLetterLog("dlq", RateLimiter(burst=5, interval_s=60.0))
    flood = _plan([b"bad %d" % i for i in range(40)] + [b"y" * (MAX_MESSAGE_BYTES + 5)] * 3)
    assert len(flood) == 43
    dead_letters.log(flood[:20], now_s=0.0)
    dead_letters.log(flood[20:], now_s=30.0)
    assert len(_lines(caplog)) == 5
    dead_letters.log([], now_s=61.0)  # the next batch after the window: the summary
    lines = [r.getMessage() for r in _lines(caplog)]
    assert len(lines) == 6
    assert lines[-1] == (
        "and 38 more dead letters not logged one by one (at most 5 per 60 s): "
        "malformed 38; every one is in dlq"
    )
    dead_letters.log([], now_s=200.0)
    assert len(_lines(caplog)) == 6  # nothing more to say
