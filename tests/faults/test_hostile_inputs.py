"""Hostile input, CI-sized: the fuzzer of testkit/fuzz.py on a few tens of thousands of inputs
(the full run is ``python tools/fuzz_inputs.py --count 1000000``; see RELIABILITY.md)."""

from __future__ import annotations

import random

import pytest

from clearing.engine import REJECT_REASONS, Engine
from testkit.fuzz import MIB, current_rss_bytes, run_fuzz
from testkit.hostile import HostileGenerator, StreamModel, state_bytes


def test_fuzz_run_crashes_nothing_and_rejects_cleanly() -> None:
    report = run_fuzz(16_000, seed=20_240, epoch=8_000, oversized_every=4_000)
    assert report.crashes == 0, report.failures
    assert report.mismatches == 0, report.failures
    assert report.state_changed_by_reject == 0, report.failures
    assert report.invariant_failures == 0, report.failures
    # Every reject was compared with the state before it, and every SPEC reason came up.
    assert report.rejects_state_checked == sum(report.by_reason.values()) > 10_000
    assert set(report.by_reason) == set(REJECT_REASONS)
    # The valid part of the mix reaches the whole waterfall.
    for output in ("Liquidation", "FundDraw", "Clawback", "BadDebt", "OracleHeld", "Withdrawal"):
        assert report.outputs_by_type[output] > 0, output
    kinds = set(report.by_kind)
    wanted = ["deep_nesting", "lone_surrogate", "invalid_utf8", "bom", "nan_inf", "huge_number"]
    wanted += ["duplicate_fill", "out_of_order", "replay_fill", "truncated", "byte_flip"]
    assert set(wanted) <= kinds, set(wanted) - kinds
    assert any(kind.startswith("oversized") for kind in kinds)
    assert report.largest_input >= 1 * MIB
    assert report.rss_growth < 48 * MIB


def test_memory_does_not_grow_with_rejects() -> None:
    """20,000 hostile inputs into one engine: RSS after the first 5,000 stays flat."""
    rng = random.Random(5)
    engine = Engine()
    generator = HostileGenerator(rng, StreamModel(rng), valid_share=0.0)
    for case in generator.genesis():
        engine.apply(case.raw)
    baseline = 0
    for index in range(20_000):
        engine.apply(generator.next_case().raw)
        if index == 5_000:
            baseline = current_rss_bytes()
    # Accepted byte flips may add a few accounts; rejects must add nothing.
    assert current_rss_bytes() - baseline < 8 * MIB


def test_state_bytes_ignores_only_the_input_counter() -> None:
    engine = Engine()
    before = state_bytes(engine)
    engine.apply(b"{")
    assert engine.seq == 1 and state_bytes(engine) == before
    engine.apply(b'{"type":"deposit","account":"a","amount":"1"}')
    assert state_bytes(engine) != before


NEGATIVE_4300_DIGITS = b"-" + b"9" * 4300


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"type":"deposit","account":"a","amount":' + NEGATIVE_4300_DIGITS + b"}",
         "invalid_field"),
        (b'{"type":"deposit","account":"a","amount":"1","ts":' + NEGATIVE_4300_DIGITS + b"}",
         "invalid_field"),
        (b'{"type":"nope","x":' + NEGATIVE_4300_DIGITS + b"}", "unknown_type"),
        (b'{"type":"deposit","account":"a","amount":1.5,"x":' + NEGATIVE_4300_DIGITS + b"}",
         "invalid_field"),
    ],
)  # fmt: skip
def test_negative_4300_digit_integer_is_json(raw: bytes, reason: str) -> None:
    (reject,) = Engine().apply(raw)
    assert reject.reason == reason  # type: ignore[union-attr]


def test_negative_integers_around_the_4300_digit_boundary() -> None:
    """The neighbours of the B1 case behave (so the bug is exactly the boundary)."""
    for digits in (4299, 4301, 5000):
        raw = b'{"type":"deposit","account":"a","amount":-' + b"9" * digits + b"}"
        (reject,) = Engine().apply(raw)
        assert reject.reason == "invalid_field", digits  # type: ignore[union-attr]
    raw = b'{"type":"deposit","account":"a","amount":' + b"9" * 4300 + b"}"
    (reject,) = Engine().apply(raw)
    assert reject.reason == "invalid_field"  # type: ignore[union-attr]
