"""Marks exactly on an account's liquidation boundary, and one unit (1e-8) either side.

Both cores keep the liquidation boundary of every account in an index (a threshold per
one-position account, safety edges per multi-market one); an off-by-one there changes who
is liquidated only when a tick lands on the boundary itself, which random prices almost
never do. These tests put ticks there on purpose: a fixed venue where each account's
boundary is worked out from SPEC §2 with exact fractions (``testkit.streams``), and random
streams ending in such ticks, on both cores and the independent reference model.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from clearing.engine import Engine, encode_output
from clearing.engine.native import NativeEngine, native_available
from clearing.engine.persist import dump_state
from testkit.streams import Boundary, boundary_ticks, join, liquidation_boundaries, tick_e8
from tests.engine.test_differential import assert_same

# CI installs the extension; without it the Python core still meets every boundary.
NATIVE = native_available() or bool(os.environ.get("CI"))
needs_native = pytest.mark.skipif(
    not NATIVE, reason="clearing_native is not installed (pip install ./native)"
)

Obj = dict[str, Any]


def _line(obj: Obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _market(name: str, mmr: str, imr: str, liq_fee: str = "0.01") -> bytes:
    return _line({"type": "market", "market": name, "imr": imr, "mmr": mmr, "liq_fee": liq_fee})


def _deposit(account: str, amount: str) -> bytes:
    return _line({"type": "deposit", "account": account, "amount": amount})


def _fill(fill_id: str, market: str, price: str, qty: str, buyer: str, seller: str) -> bytes:
    return _line(
        {
            "type": "fill",
            "fill_id": fill_id,
            "market": market,
            "price": price,
            "qty": qty,
            "buyer": buyer,
            "seller": seller,
        }
    )


# A venue of one-position longs and shorts on two markets with different ratios, and one
# account holding both markets (its boundary in each market depends on the other's mark).
VENUE: list[bytes] = [
    _market("A", mmr="0.05", imr="0.1"),
    _market("B", mmr="0.1", imr="0.2"),
    _deposit("insurance-fund", "50"),
    _deposit("a", "10"),
    _deposit("b", "1000"),
    _deposit("c", "7.5"),
    _deposit("d", "600"),
    _deposit("e", "30"),
    _deposit("f", "3.3"),
    _fill("f1", "A", "100", "1", "a", "b"),
    _fill("f2", "A", "100", "0.3", "d", "c"),
    _fill("f3", "B", "20", "2.5", "f", "d"),
    _fill("f4", "A", "100", "0.2", "e", "d"),
    _fill("f5", "B", "20", "7", "d", "e"),
]


def _run_both(lines: list[bytes]) -> tuple[Engine, list[bytes]]:
    """Run the Python core, and the native one when installed; fail unless their outputs,
    state and snapshot are the same bytes. Returns the Python core and its outputs."""
    python = Engine()
    native = NativeEngine() if NATIVE else None
    outputs: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        want = [encode_output(event) for event in python.apply(line)]
        if native is not None:
            got = native.apply_encoded(line)
            assert got == want, f"input {number} {line!r}: the cores differ"
            native.check_invariants()
        outputs.extend(want)
    python.ledger.check_invariants()
    python.ledger.check_index()
    if native is not None:
        assert native.dump_state() == dump_state(python)
    return python, outputs


def _liquidated(outputs: list[bytes], account: str) -> bool:
    events = [json.loads(raw) for raw in outputs]
    return any(e["type"] == "liquidation" and e["account"] == account for e in events)


def _venue_boundaries() -> list[Boundary]:
    engine = Engine()
    for line in VENUE:
        engine.apply(line)
    return liquidation_boundaries(engine.ledger)


def test_the_venue_has_boundaries_of_every_kind() -> None:
    boundaries = _venue_boundaries()
    by_account: dict[str, list[Boundary]] = {}
    for boundary in boundaries:
        by_account.setdefault(boundary.account, []).append(boundary)
    singles = [b for bs in by_account.values() if len(bs) == 1 for b in bs]
    assert {b.is_long for b in singles} == {True, False}
    assert any(len(bs) > 1 for bs in by_account.values())  # e, in both of its markets
    # The issue's case: mmr 0.05, a deposits 10 and buys 1 at 100: E - MM = -90 + 0.95 m,
    # so the last liquidatable mark is the largest below 90 / 0.95 = 94.736842105...
    assert Boundary("a", "A", 94_73684210, True) in boundaries


@pytest.mark.parametrize("boundary", _venue_boundaries(), ids=lambda b: f"{b.account}-{b.market}")
@pytest.mark.parametrize("offset_e8", [-1, 0, 1])
def test_tick_on_and_beside_each_boundary(boundary: Boundary, offset_e8: int) -> None:
    mark_e8 = boundary.mark_e8 + offset_e8
    _, outputs = _run_both([*VENUE, tick_e8(boundary.market, mark_e8)])
    crossed = mark_e8 <= boundary.mark_e8 if boundary.is_long else mark_e8 >= boundary.mark_e8
    assert _liquidated(outputs, boundary.account) == crossed


def test_issue_example_liquidates_on_every_core() -> None:
    prefix = [
        _market("BTC", mmr="0.05", imr="0.1"),
        _deposit("a", "10"),
        _deposit("b", "1000"),
        _fill("f1", "BTC", "100", "1", "a", "b"),
    ]
    on = _line({"type": "oracle", "market": "BTC", "price": "94.7368421"})
    above = _line({"type": "oracle", "market": "BTC", "price": "94.73684211"})
    assert _liquidated(_run_both([*prefix, on])[1], "a")
    assert not _liquidated(_run_both([*prefix, above])[1], "a")


@needs_native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(boundary_ticks(max_events=120))
def test_cores_agree_on_boundary_ticks(lines: list[bytes]) -> None:
    _run_both([line for line in lines if line.strip(b" \t\r")])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(boundary_ticks(max_events=80))
def test_reference_agrees_on_boundary_ticks(lines: list[bytes]) -> None:
    assert_same(lines, join(lines))
