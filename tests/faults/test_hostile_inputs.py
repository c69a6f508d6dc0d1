"""Hostile input, CI-sized: the fuzzer of testkit/fuzz.py on a few tens of thousands of inputs
(the full run is ``python tools/fuzz_inputs.py --count 1000000``; see RELIABILITY.md)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from clearing.engine import REJECT_REASONS, Engine, encode_output, make_engine
from clearing.engine.native import native_available
from testkit.fuzz import MIB, current_rss_bytes, run_fuzz
from testkit.hostile import (
    BAD_RATES,
    BAD_V2_MARKET_FIELDS,
    Case,
    HostileGenerator,
    StreamModel,
    check_outcome,
    known_bug,
    state_bytes,
    v2_catalogue,
)


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


# ---------------------------------------------------------------------------------------
# Rules version 2 (SPEC §9): funding inputs, the new market fields and their bad values.

needs_native = pytest.mark.skipif(not native_available(), reason="clearing_native is not installed")
CORES = ("python", pytest.param("native", marks=needs_native))


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("rules_version", [1, 2])
def test_v2_catalogue_has_each_versions_outcome(core: str, rules_version: int) -> None:
    """Every bad §9 value: ``invalid_field`` under version 2; under version 1 the market
    fields are ignored and ``funding`` is an unknown type. A reject changes no state."""
    engine = make_engine(core, rules_version=rules_version)
    cases = v2_catalogue(rules_version)
    outcomes: Counter[str] = Counter()
    for case in cases:
        before = state_bytes(engine)
        outputs = engine.apply(case.raw)
        problem = check_outcome(case, engine.seq, outputs)
        assert problem is None, (case.kind, case.raw, problem)
        if outputs and type(outputs[0]).__name__ == "Reject":
            assert state_bytes(engine) == before, case.raw
            outcomes[outputs[0].reason] += 1  # type: ignore[union-attr]
        else:
            outcomes["ok"] += 1
    engine.check_invariants()
    bad_market_values = sum(len(v) for v in BAD_V2_MARKET_FIELDS.values())
    if rules_version == 2:
        assert outcomes["invalid_field"] == bad_market_values + len(BAD_RATES) + 1
        assert outcomes["ok"] == 5 + 3  # the world, then three valid funding inputs
    else:
        assert outcomes["unknown_type"] == len(BAD_RATES) + 1 + 3
        assert outcomes["ok"] == 5 + bad_market_values


def _v2_cases(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    generator = HostileGenerator(rng, StreamModel(rng, rules_version=2), oversized_every=2_000)
    cases = generator.genesis()
    cases.extend(generator.next_case() for _ in range(count))
    return cases


@needs_native
def test_v2_fuzz_round_is_identical_on_both_cores() -> None:
    """A version-2 hostile round through both cores side by side: the same outputs byte for
    byte, the outcome the SPEC requires, no crash, no reject that changes state, and the
    same final state."""
    python = make_engine("python", rules_version=2)
    native = make_engine("native", rules_version=2)
    kinds: Counter[str] = Counter()
    outputs_by_type: Counter[str] = Counter()
    rejects = 0
    for case in _v2_cases(seed=18, count=6_000):
        kinds[case.kind] += 1
        before = state_bytes(python), state_bytes(native)
        got = python.apply(case.raw)
        other = native.apply(case.raw)
        assert [encode_output(e) for e in got] == [encode_output(e) for e in other], case.raw
        problem = check_outcome(case, python.seq, got)
        assert problem is None or known_bug(case, problem), (case.kind, case.raw, problem)
        outputs_by_type.update(type(e).__name__ for e in got)
        liquidations = [e for e in got if type(e).__name__ == "Liquidation"]
        # One position liquidated twice in one input: only partial steps (§9.2) do that.
        closed = Counter((e.account, e.market) for e in liquidations)  # type: ignore[attr-defined]
        outputs_by_type["partial_steps"] += sum(n > 1 for n in closed.values())
        # A fee the fund does not take whole: the split of §9.3.
        split = [e for e in liquidations if e.fund_fee != e.fee]  # type: ignore[attr-defined]
        outputs_by_type["split_fees"] += len(split)
        if got and type(got[0]).__name__ == "Reject":
            rejects += 1
            assert (state_bytes(python), state_bytes(native)) == before, case.raw
    assert python.dump_state() == native.dump_state()
    python.check_invariants()
    native.check_invariants()
    assert rejects > 2_000
    # The valid mix reaches §9's rules, and the hostile mix every bad §9 value kind.
    for output in ("FundingPaid", "Adl", "Liquidation", "FundDraw", "Clawback"):
        assert outputs_by_type[output] > 0, output
    assert outputs_by_type["partial_steps"] > 0 and outputs_by_type["split_fees"] > 0
    wanted = {"valid_funding", "bad_funding_rate"} | {f"bad_{f}" for f in BAD_V2_MARKET_FIELDS}
    assert wanted <= set(kinds), wanted - set(kinds)


@pytest.mark.parametrize("core", CORES)
def test_v2_fuzz_run_is_clean(core: str) -> None:
    report = run_fuzz(4_000, seed=2_026, epoch=2_000, oversized_every=2_000, core=core,
                      rules_version=2)  # fmt: skip
    assert report.ok(48 * MIB), report.failures
    assert report.by_kind["valid_funding"] > 0 and report.by_kind["bad_funding_rate"] > 0
    assert report.outputs_by_type["FundingPaid"] > 0
