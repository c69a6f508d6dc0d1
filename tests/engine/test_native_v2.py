"""Rules version 2 (SPEC §9) on the native core against the Python core, byte for byte.

The Python core is the reference (checked against the independent model in
``test_differential_v2`` and the hand-worked scenarios, which also run on the native core:
``test_scenarios_v2.run_both``). Random version-2 streams run through both cores; every
output event's bytes, the SPEC §8 state, the snapshot document and the rules version
must be identical, and both ledgers' invariants (running sums and the deep check) and
liquidation indexes must hold after every input. Snapshots of version-2 ledgers written
by either core load into the other, and both go on identically.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clearing.engine import Engine, encode_output, load_engine, make_engine, native_available
from clearing.engine.native import NativeEngine
from clearing.engine.persist import dump_state, state_rules_version
from tests.engine.strategies_v2 import input_streams_v2

pytestmark = pytest.mark.skipif(
    not native_available() and not os.environ.get("CI"),
    reason="clearing_native is not installed (pip install ./native)",
)

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _state_bytes(engine: Engine) -> bytes:
    return json.dumps(engine.state(), ensure_ascii=False, separators=(",", ":")).encode()


def _apply_both(python: Engine, native: NativeEngine, lines: list[bytes]) -> list[bytes]:
    """Apply each line to both cores, comparing output bytes and checking both ledgers
    after every input; returns the output events."""
    events: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip(b" \t\r"):
            continue
        want = [encode_output(out) for out in python.apply(line)]
        got = native.apply_encoded(line)
        assert got == want, f"input {number} {line[:300]!r}"
        native.check_invariants()
        python.check_invariants()
        events.extend(got)
    return events


def _assert_same_state(python: Engine, native: NativeEngine) -> None:
    assert native.seq == python.seq
    assert native.rules_version == python.rules_version == 2
    assert native.state_json() == _state_bytes(python)
    snapshot = dump_state(python)
    assert native.dump_state() == snapshot
    assert state_rules_version(snapshot) == 2


def _label(events: list[bytes]) -> None:
    """Hypothesis statistics: which of §9's rules a stream reached."""
    decoded = [json.loads(raw) for raw in events]
    for kind in sorted({e["type"] for e in decoded}):
        event(kind)
    if any(e["type"] == "liquidation" and e["fund_fee"] != e["fee"] for e in decoded):
        event("fee split")
    steps = [(e["seq"], e["account"], e["market"]) for e in decoded if e["type"] == "liquidation"]
    if len(steps) != len(set(steps)):
        event("several steps of one account in one input")


@settings(max_examples=300, deadline=None, suppress_health_check=_HEALTH)
@given(lines=input_streams_v2(max_events=200))
def test_native_matches_python_on_random_v2_streams(lines: list[bytes]) -> None:
    python, native = Engine(rules_version=2), NativeEngine(rules_version=2)
    events = _apply_both(python, native, lines)
    _assert_same_state(python, native)
    _label(events)


@settings(max_examples=100, deadline=None, suppress_health_check=_HEALTH)
@given(lines=input_streams_v2(max_events=150), cut=st.integers(0, 200))
def test_v2_snapshots_cross_load_between_cores(lines: list[bytes], cut: int) -> None:
    """A version-2 snapshot written by either core loads into the other (keeping its
    rules, market parameters and volatility estimates) and both go on identically."""
    python, native = Engine(rules_version=2), NativeEngine(rules_version=2)
    _apply_both(python, native, lines[:cut])
    snapshot = dump_state(python)
    assert native.dump_state() == snapshot
    resumed_native = NativeEngine.load_state(snapshot)
    resumed_python = load_engine(native.dump_state(), "python")
    assert isinstance(resumed_python, Engine)
    assert resumed_native.dump_state() == snapshot == dump_state(resumed_python)
    resumed_native.check_invariants()
    _apply_both(resumed_python, resumed_native, lines[cut:])
    _assert_same_state(resumed_python, resumed_native)


@settings(max_examples=40, deadline=None, suppress_health_check=_HEALTH)
@given(lines=input_streams_v2(max_events=80))
def test_native_full_scan_baseline_agrees_under_v2(lines: list[bytes]) -> None:
    """The native core's index and its full scan of every holder find the same accounts
    under version 2's partial steps, ADL trades and funding."""
    indexed = NativeEngine(rules_version=2)
    scanning = NativeEngine(liquidation_scan=True, rules_version=2)
    for line in lines:
        if line.strip(b" \t\r"):
            assert indexed.apply_encoded(line) == scanning.apply_encoded(line)
    assert indexed.dump_state() == scanning.dump_state()


def test_auto_picks_the_native_core_for_v2() -> None:
    engine = make_engine("auto", rules_version=2)
    assert isinstance(engine, NativeEngine)
    assert engine.rules_version == 2
    snapshot = engine.dump_state()
    assert isinstance(load_engine(snapshot, "auto"), NativeEngine)
    assert load_engine(snapshot, "auto").rules_version == 2  # type: ignore[union-attr]


def test_v1_ledger_ignores_v2_fields_and_funding_on_both_cores() -> None:
    """Under version 1 the new market fields are unknown fields and ``funding`` is an
    unknown type, on the native core exactly as on the Python one."""
    lines = [
        b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0.01",'
        b'"liq_step":"0.25","loss_policy":"adl","fund_share":"0","vol_tiers":"x"}',
        b'{"type":"funding","market":"M","rate":"0.01"}',
        b'{"type":"deposit","account":"a","amount":"10"}',
        b'{"type":"deposit","account":"b","amount":"1000"}',
        b'{"type":"fill","fill_id":"f","market":"M","price":"100","qty":"1","buyer":"a","seller":"b"}',
        b'{"type":"oracle","market":"M","price":"91"}',
    ]
    python, native = Engine(), NativeEngine()
    for line in lines:
        assert native.apply_encoded(line) == [encode_output(e) for e in python.apply(line)]
    assert native.rules_version == 1
    assert native.dump_state() == dump_state(python)
    assert dump_state(python)[:1] == b"\x96"  # the version-1 layout, byte for byte


def test_v2_market_fields_are_validated_on_the_native_core() -> None:
    """Bad §9 fields are ``invalid_field`` under version 2, with the Python decoder's
    words (the fast parser leaves every version-2 market to it)."""
    bad = b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0","liq_step":"0"}'
    python, native = Engine(rules_version=2), NativeEngine(rules_version=2)
    want = [encode_output(e) for e in python.apply(bad)]
    assert native.apply_encoded(bad) == want
    assert b'"invalid_field"' in want[0]


def _crowded_market(pairs: int) -> list[bytes]:
    """A version-2 market held by `pairs` longs and shorts with staggered margins (1 in
    7 thin), one account holding two markets, and a fund: large enough for the native
    core's bulk paths (funding re-keys the whole market; ADL scans accounts in memory
    order)."""
    lines = [
        b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0.01",'
        b'"liq_step":"0.5","loss_policy":"adl","fund_share":"0.5"}',
        b'{"type":"market","market":"N","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}',
        b'{"type":"deposit","account":"insurance-fund","amount":"50"}',
        b'{"type":"oracle","market":"M","price":"100"}',
        b'{"type":"oracle","market":"N","price":"10"}',
    ]
    for pair in range(pairs):
        cash_long = 6 + (pair * 7919) % 40 if pair % 7 == 0 else 12 + (pair * 7919) % 50
        cash_short = 6 + (pair * 104729) % 40 if pair % 7 == 3 else 12 + (pair * 104729) % 50
        lines += [
            b'{"type":"deposit","account":"L%d","amount":"%d"}' % (pair, cash_long),
            b'{"type":"deposit","account":"S%d","amount":"%d"}' % (pair, cash_short),
            b'{"type":"fill","fill_id":"p%d","market":"M","price":"100","qty":"%d.5",'
            b'"buyer":"L%d","seller":"S%d"}' % (pair, pair % 3, pair, pair),
        ]
    lines += [
        b'{"type":"deposit","account":"two","amount":"30"}',
        b'{"type":"fill","fill_id":"t1","market":"M","price":"100","qty":"1","buyer":"two",'
        b'"seller":"S1"}',
        b'{"type":"fill","fill_id":"t2","market":"N","price":"10","qty":"5","buyer":"L1",'
        b'"seller":"two"}',
    ]
    return lines


@pytest.mark.parametrize(
    "tail",
    [
        [b'{"type":"funding","market":"M","rate":"0.04"}'],
        [b'{"type":"funding","market":"M","rate":"-0.06"}'],
        [
            b'{"type":"oracle","market":"M","price":"93"}',
            b'{"type":"funding","market":"M","rate":"0.00000003"}',
            b'{"type":"oracle","market":"M","price":"107"}',
        ],
    ],
)
def test_crowded_market_funding_and_adl_agree(tail: list[bytes]) -> None:
    """Funding and ADL on a market of 5000 holders (the native bulk paths) give the
    Python core's bytes, and both indexes check out after every input."""
    python, native = Engine(rules_version=2), NativeEngine(rules_version=2)
    setup = _crowded_market(2_500)
    for line in setup:
        assert native.apply_encoded(line) == python.apply_encoded(line)
    events = _apply_both(python, native, tail)
    _assert_same_state(python, native)
    assert any(b'"liquidation"' in e for e in events)


def test_adl_pass_longer_than_the_first_ranked_batch_agrees() -> None:
    """An ADL pass that takes 1500 candidates (past the 1024 the native core ranks in its
    first scan, so it ranks the rest in a second one) gives the Python core's bytes."""
    lines = [
        b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0.01",'
        b'"loss_policy":"adl"}',
        b'{"type":"oracle","market":"M","price":"100"}',
    ]
    for pair in range(3_000):
        lines += [
            b'{"type":"deposit","account":"L%d","amount":"%d"}' % (pair, 20 + pair % 37),
            b'{"type":"deposit","account":"S%d","amount":"%d"}' % (pair, 20 + pair % 41),
            b'{"type":"fill","fill_id":"p%d","market":"M","price":"100","qty":"1",'
            b'"buyer":"L%d","seller":"S%d"}' % (pair, pair, pair),
        ]
    lines += [
        b'{"type":"deposit","account":"whale","amount":"7500"}',
        b'{"type":"deposit","account":"maker","amount":"1000000"}',
        b'{"type":"fill","fill_id":"w","market":"M","price":"100","qty":"1500",'
        b'"buyer":"whale","seller":"maker"}',
    ]
    python, native = Engine(rules_version=2), NativeEngine(rules_version=2)
    for line in lines:
        assert native.apply_encoded(line) == python.apply_encoded(line)
    events = _apply_both(python, native, [b'{"type":"oracle","market":"M","price":"90"}'])
    _assert_same_state(python, native)
    assert sum(b'"type":"adl"' in e for e in events) == 1500
