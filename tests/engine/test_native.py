"""The native core against the Python engine: same output bytes, same state, same snapshot.

The Python engine is the reference (it is itself checked against the independent model in
``test_differential`` and the hand-worked scenarios). Every stream here runs through both
cores; the outputs must be identical byte for byte (reject details included), the SPEC §8
state and the snapshot document too, and the native ledger's invariants and index checks
must hold after every input.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.engine import Engine, encode_output, make_engine, native_available
from clearing.engine.native import NativeEngine
from clearing.engine.persist import dump_state
from tests.engine.strategies import input_streams

# CI installs the extension, so there it is never skipped; a checkout without a Rust
# build still runs every other test.
pytestmark = pytest.mark.skipif(
    not native_available() and not os.environ.get("CI"),
    reason="clearing_native is not installed (pip install ./native)",
)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))


def _run_both(lines: list[bytes], check_every: bool = True) -> tuple[Engine, NativeEngine]:
    python, native = Engine(), NativeEngine()
    for number, line in enumerate(lines, start=1):
        if not line.strip(b" \t\r"):
            continue
        want = [encode_output(event) for event in python.apply(line)]
        got = native.apply_encoded(line)
        assert got == want, f"input {number} {line[:200]!r}"
        if check_every:
            native.check_invariants()
    assert native.seq == python.seq
    assert (
        native.state_json()
        == json.dumps(python.state(), ensure_ascii=False, separators=(",", ":")).encode()
    )
    assert native.dump_state() == dump_state(python)
    native.check_invariants()
    return python, native


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(input_streams(max_events=250))
def test_native_matches_python_on_random_streams(lines: list[bytes]) -> None:
    _run_both(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(input_streams(max_events=150), st.integers(0, 200))
def test_native_snapshot_round_trip_and_cross_load(lines: list[bytes], cut: int) -> None:
    """A snapshot written by either core loads into the other and both go on identically."""
    python, native = Engine(), NativeEngine()
    for line in lines[:cut]:
        python.apply(line)
        native.apply_encoded(line)
    snapshot = dump_state(python)
    assert native.dump_state() == snapshot
    resumed_native = NativeEngine.load_state(snapshot)
    resumed_python = Engine.load_state(native.dump_state())
    resumed_native.check_invariants()
    for line in lines[cut:]:
        want = [encode_output(event) for event in resumed_python.apply(line)]
        assert resumed_native.apply_encoded(line) == want
    assert resumed_native.dump_state() == dump_state(resumed_python)


def test_native_matches_python_on_a_generated_venue_stream() -> None:
    """The benchmark generator's stream (many accounts, 20 markets, guarded oracles)."""
    from gen_events import generate

    lines = list(generate(30_000, 2_000, 20, seed=7))
    _run_both(lines, check_every=False)


def test_native_matches_python_on_the_demo_crash() -> None:
    """The demo's simulated venue with its black swan: liquidations, fund draws,
    clawbacks and bad debt on a book of thousands of traders."""
    from clearing.demo._sim import SimConfig, Simulator

    lines = list(Simulator(SimConfig.for_inputs(seed=3, accounts=200, inputs=40_000)))
    python, _ = _run_both(lines, check_every=False)
    outputs = b"".join(encode_output(e) for e in Engine().apply_many(lines))
    assert python.seq == len([line for line in lines if line.strip()])
    for kind in (b"liquidation", b"fund_draw", b"clawback", b"bad_debt", b"oracle_held"):
        assert b'"type":"%s"' % kind in outputs, kind


def _huge(draw: st.DrawFn, low_digits: int, high_digits: int) -> str:
    """A positive wire decimal of low..high integer digits (up to 1e15) and 0-8 decimals."""
    digits = draw(st.integers(low_digits, high_digits))
    whole = draw(st.integers(10 ** (digits - 1), 10**digits - 1)) if digits else 0
    places = draw(st.integers(0, 8))
    frac = draw(st.integers(0, 10**places - 1)) if places else 0
    text = f"{whole}.{frac:0{places}d}" if places else str(whole)
    return text if text.strip("0.") else "1"


@st.composite
def _extreme_streams(draw: st.DrawFn) -> list[bytes]:
    """Valid inputs at the SPEC's magnitudes (cash, prices and sizes up to 1e15): products
    of e24 terms pass 256 bits here, where the native core must fall back, not stop."""
    markets = ["A", "B", "C"][: draw(st.integers(1, 3))]
    users = ["u", "v", "w", "insurance-fund"]
    lines = [
        {"type": "market", "market": m, "imr": "0.1", "mmr": "0.05", "liq_fee": "0.01"}
        for m in markets
    ]
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(st.sampled_from(["deposit", "fill", "fill", "oracle", "book", "withdraw"]))
        market = draw(st.sampled_from(markets))
        if kind in ("deposit", "withdraw"):
            amount = _huge(draw, 1, 16)
            lines.append({"type": kind, "account": draw(st.sampled_from(users)), "amount": amount})
        elif kind == "fill":
            buyer, seller = draw(st.permutations(users))[:2]
            lines.append(
                {"type": "fill", "fill_id": str(len(lines)), "market": market,
                 "price": _huge(draw, 1, 16), "qty": _huge(draw, 1, 16),
                 "buyer": buyer, "seller": seller}
            )  # fmt: skip
        elif kind == "oracle":
            lines.append({"type": "oracle", "market": market, "price": _huge(draw, 1, 16)})
        else:
            level = [_huge(draw, 1, 16), _huge(draw, 1, 16)]
            lines.append({"type": "book", "market": market, "bids": [level], "asks": [level]})
    return [json.dumps(line).encode() for line in lines]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_extreme_streams())
def test_native_matches_python_at_extreme_magnitudes(lines: list[bytes]) -> None:
    _run_both(lines)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"fill","fill_id":"f\\u0031","market":"M","price":"1","qty":"1",'
        b'"buyer":"a\\"b","seller":"c"}',
        b'{"type":"deposit","account":"fee-pool","amount":"1"}',
        b'{"type":"withdraw","account":"nobody","amount":"1"}',
        b'{"type":"oracle","market":"nope \\u00e9\'","price":"1"}',
        b'{"type":"fill","fill_id":"x","market":"M","price":"1","qty":"1","buyer":"bad-debt",'
        b'"seller":"fee-pool"}',
        b'{"type":"fill","fill_id":"x","market":"M","price":"1","qty":"1","buyer":"a","seller":"a"}',
        b'{"type":"deposit","account":"a","amount":1e3}',
        b"not json",
        b'{"type":"book","market":"M","bids":[["1","2"],["1","3"]],"asks":[[2,1]]}',
        b'{"type":"market","market":"M","imr":"0.2","mmr":"0.1","liq_fee":"0","max_oracle_move":"0.5"}',
    ],
)
def test_native_rejects_and_deferred_inputs_match(raw: bytes) -> None:
    prelude = [
        b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}',
        b'{"type":"deposit","account":"a","amount":"100"}',
        b'{"type":"fill","fill_id":"x","market":"M","price":"10","qty":"1","buyer":"a",'
        b'"seller":"insurance-fund"}',
    ]
    _run_both([*prelude, raw, raw])


def test_make_engine_names_the_core() -> None:
    assert isinstance(make_engine("python"), Engine)
    assert isinstance(make_engine("native"), NativeEngine)
    with pytest.raises(ValueError, match="unknown engine core"):
        make_engine("fortran")
