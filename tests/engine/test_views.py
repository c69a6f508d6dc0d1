"""The read views (``account_view``, ``market_view``, ``rankings``): both cores give the
same bytes on random streams, and the numbers mean what the docs say on a small ledger."""

from __future__ import annotations

import os
from fractions import Fraction

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from clearing.engine import EngineCore, load_engine, make_engine, native_available
from tests.engine.strategies import USER_POOL, input_streams
from tests.engine.strategies_v2 import input_streams_v2

CORES = ("python", "native")
needs_native = pytest.mark.skipif(
    not native_available() and not os.environ.get("CI"),
    reason="clearing_native is not installed (pip install ./native)",
)
_IDS = (*USER_POOL, "insurance-fund", "fee-pool", "bad-debt", "nobody")
_MARKETS = ("BTC-PERP", "ETH-PERP", "SOL-PERP", "XRP-PERP", "DOGE", "b-mkt", "Z9", "nope")


def _views(engine: EngineCore) -> list[bytes | None]:
    out: list[bytes | None] = [engine.account_view(i) for i in _IDS]
    out += [engine.market_view(m, depth) for m in _MARKETS for depth in (0, 2, 100)]
    out += [engine.rankings(limit) for limit in (0, 1, 3, 1000)]
    return out


@needs_native
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=input_streams(max_events=150))
def test_both_cores_give_the_same_view_bytes(lines: list[bytes]) -> None:
    engines = [make_engine(core) for core in CORES]
    for n, line in enumerate(lines):
        for engine in engines:
            engine.apply(line)
        if n % 25 == 24 or n == len(lines) - 1:  # mid-stream too, not only at the end
            python, native = (_views(engine) for engine in engines)
            assert python == native


@needs_native
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=input_streams_v2(max_events=150))
def test_both_cores_give_the_same_view_bytes_under_rules_v2(lines: list[bytes]) -> None:
    engines = [make_engine(core, rules_version=2) for core in CORES]
    for n, line in enumerate(lines):
        for engine in engines:
            engine.apply(line)
        if n % 25 == 24 or n == len(lines) - 1:
            python, native = (_views(engine) for engine in engines)
            assert python == native


def _ledger(core: str) -> EngineCore:
    engine = make_engine(core)
    lines = [
        {"type": "market", "market": "BTC", "imr": "0.1", "mmr": "0.05", "liq_fee": "0.01"},
        {"type": "market", "market": "ETH", "imr": "0.2", "mmr": "0.1", "liq_fee": "0"},
        {"type": "deposit", "account": "alice", "amount": "200"},
        {"type": "deposit", "account": "bob", "amount": "5000"},
        {"type": "deposit", "account": "carol", "amount": "1000"},
        {"type": "oracle", "market": "BTC", "price": "100"},
        {"type": "oracle", "market": "ETH", "price": "10"},
        {"type": "fill", "fill_id": "f1", "market": "BTC", "price": "100", "qty": "10",
         "buyer": "alice", "seller": "bob"},
        {"type": "fill", "fill_id": "f2", "market": "ETH", "price": "10", "qty": "50",
         "buyer": "carol", "seller": "bob"},
        {"type": "book", "market": "BTC", "bids": [["99", "1"], ["98", "2"], ["97", "3"]],
         "asks": [["101", "4"]]},
    ]  # fmt: skip
    for line in lines:
        engine.apply(msgspec.json.encode(line))
    return engine


@pytest.mark.parametrize("core", [pytest.param(c, marks=needs_native) for c in CORES])
def test_account_view_of_a_long(core: str) -> None:
    view = msgspec.json.decode(_ledger(core).account_view("alice"))  # type: ignore[arg-type]
    assert view["cash"] == "-800" and view["equity"] == "200"
    assert view["initial_margin"] == "100" and view["maintenance_margin"] == "50"
    btc = view["positions"]["BTC"]
    # E - MM = -800 + m*10 - 0.5*m = 9.5 m - 800 < 0 iff m < 84.2105263157...: the
    # highest such mark in 1e-8 steps.
    assert btc["liquidation_mark"] == "84.21052631"
    assert Fraction(btc["mark_move"]) == Fraction("84.21052631") - 100
    assert btc["notional"] == "1000" and btc["qty"] == "10" and view["system"] is False


@pytest.mark.parametrize("core", [pytest.param(c, marks=needs_native) for c in CORES])
def test_distance_of_a_short_counts_its_other_markets(core: str) -> None:
    view = msgspec.json.decode(_ledger(core).account_view("bob"))  # type: ignore[arg-type]
    # bob: cash 5000 + 1000 + 500 = 6500, short 10 BTC at 100 and short 50 ETH at 10.
    # With ETH fixed: E - MM = 6500 - 10 m - 0.5 m - (500 + 50) = 5950 - 10.5 m < 0
    # iff m > 566.666...: the lowest such mark is 566.66666667.
    btc = view["positions"]["BTC"]
    assert btc["liquidation_mark"] == "566.66666667"
    assert btc["mark_move"] == "466.66666667"
    # With BTC fixed: 6500 - 1000 - 50 - 50 m - 5 m < 0 iff m > 99.0909...
    assert view["positions"]["ETH"]["liquidation_mark"] == "99.0909091"


@pytest.mark.parametrize("core", [pytest.param(c, marks=needs_native) for c in CORES])
def test_market_view_and_unknowns(core: str) -> None:
    engine = _ledger(core)
    view = msgspec.json.decode(engine.market_view("BTC", 2))  # type: ignore[arg-type]
    assert view["bids"] == [["99", "1"], ["98", "2"]] and view["bid_levels"] == 3
    assert view["asks"] == [["101", "4"]] and view["ask_levels"] == 1
    assert view["open_interest"] == "10" and view["holders"] == 2
    assert view["mark"] == "100" and view["held"] is None and view["max_oracle_move"] is None
    assert engine.market_view("nope", 2) is None
    assert engine.account_view("nobody") is None


@pytest.mark.parametrize("core", [pytest.param(c, marks=needs_native) for c in CORES])
def test_rankings(core: str) -> None:
    ranked = msgspec.json.decode(_ledger(core).rankings(2))
    # E/MM: alice 200/50 = 4, carol 1000/50 = 20, bob 6500-1500/(50+50) = 50.
    assert [r["account"] for r in ranked["nearest_liquidation"]] == ["alice", "carol"]
    assert ranked["nearest_liquidation"][0]["margin_ratio"] == "4"
    assert ranked["largest_positions"]["ETH"] == [
        {"account": "bob", "qty": "-50"},
        {"account": "carol", "qty": "50"},
    ]
    assert ranked["largest_positions"]["BTC"][0]["account"] == "alice"  # ties: account id


def _v2_ticks(core: str, prices: list[str]) -> EngineCore:
    engine = make_engine(core, rules_version=2)
    market = {"type": "market", "market": "BTC", "imr": "0.1", "mmr": "0.05",
              "liq_fee": "0.01", "vol_lambda": "0.5"}  # fmt: skip
    engine.apply(msgspec.json.encode(market))
    for price in prices:
        engine.apply(msgspec.json.encode({"type": "oracle", "market": "BTC", "price": price}))
    return engine


@pytest.mark.parametrize("core", [pytest.param(c, marks=needs_native) for c in CORES])
def test_market_view_shows_the_volatility_estimate_under_rules_v2(core: str) -> None:
    def volatility(engine: EngineCore) -> str:
        return msgspec.json.decode(engine.market_view("BTC", 0))["volatility"]  # type: ignore[arg-type]

    # The first tick gives the mark and leaves v at 0; 100 -> 110 with lambda 0.5:
    # v = 0.5 * (10 / 100)^2 = 0.005; then 110 -> 110: v = 0.005 / 2.
    assert volatility(_v2_ticks(core, ["100"])) == "0"
    assert volatility(_v2_ticks(core, ["100", "110"])) == "0.005"
    assert volatility(_v2_ticks(core, ["100", "110", "110"])) == "0.0025"


@pytest.mark.parametrize("core", [pytest.param(c, marks=needs_native) for c in CORES])
def test_market_view_of_a_v1_ledger_has_no_volatility_key(core: str) -> None:
    view = msgspec.json.decode(_ledger(core).market_view("BTC", 0))  # type: ignore[arg-type]
    assert "volatility" not in view


@pytest.mark.parametrize("core", [pytest.param(c, marks=needs_native) for c in CORES])
def test_market_view_is_the_same_after_a_snapshot_load(core: str) -> None:
    """The open interest is a running sum: rebuilt when a snapshot loads."""
    engine = _ledger(core)
    loaded = load_engine(engine.dump_state(), core)
    for market in ("BTC", "ETH"):
        assert loaded.market_view(market, 5) == engine.market_view(market, 5)
