"""Rules versions (SPEC §9 head): fixed per ledger, recorded in snapshots, old bytes kept."""

from __future__ import annotations

import json

import pytest

from clearing.engine import Engine, load_engine, make_engine, native_available
from clearing.engine.native import NativeEngine
from clearing.engine.persist import dump_state, state_rules_version
from clearing.errors import CoreUnavailable

_MARKET = {"type": "market", "market": "M", "imr": "0.1", "mmr": "0.05", "liq_fee": "0"}


def _apply(engine: Engine, rec: dict[str, object]) -> list[dict[str, object]]:
    return [json.loads(raw) for raw in engine.apply_encoded(json.dumps(rec).encode())]


def test_unknown_rules_version_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown rules version 3"):
        Engine(rules_version=3)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("liq_step", "0"),
        ("liq_step", None),
        ("loss_policy", "ADL"),
        ("fund_share", "1.5"),
        ("vol_tiers", [["0.2", "1"], ["0.1", "1"]]),
        ("vol_tiers", [["0.1", "1", "2"]]),
        ("vol_lambda", 1.5),
    ],
)
def test_new_market_fields_are_ignored_by_v1_and_checked_by_v2(field: str, value: object) -> None:
    market = {**_MARKET, field: value}
    assert _apply(Engine(rules_version=1), market) == []
    (reject,) = _apply(Engine(rules_version=2), market)
    assert reject["reason"] == "invalid_field"


@pytest.mark.parametrize("rate", ["1", "-1", None, 0.5, "x"])
def test_bad_funding_rate_is_invalid_field_under_v2(rate: object) -> None:
    engine = Engine(rules_version=2)
    _apply(engine, _MARKET)
    (reject,) = _apply(engine, {"type": "funding", "market": "M", "rate": rate})
    assert reject["reason"] == "invalid_field"
    (reject,) = _apply(engine, {"type": "funding", "market": "N", "rate": "0"})
    assert reject["reason"] == "unknown_market"


def test_funding_without_a_mark_moves_nothing_but_is_reported() -> None:
    engine = Engine(rules_version=2)
    _apply(engine, _MARKET)
    events = _apply(engine, {"type": "funding", "market": "M", "rate": "-0.3"})
    assert events == [{"type": "funding", "seq": 2, "market": "M", "rate": "-0.3", "paid": "0"}]


def test_v1_state_keeps_the_old_layout_and_v2_records_its_version() -> None:
    for version, header in ((1, 0x96), (2, 0x97)):
        engine = Engine(rules_version=version)
        _apply(engine, {**_MARKET, "liq_step": "0.5"})
        _apply(engine, {"type": "oracle", "market": "M", "price": "10"})
        _apply(engine, {"type": "oracle", "market": "M", "price": "11"})
        data = dump_state(engine)
        assert data[0] == header
        assert state_rules_version(data) == version
        loaded = load_engine(data, "python")
        assert loaded.rules_version == version
        assert dump_state(loaded) == data  # volatility and §9 fields survive the trip
    # 10 -> 11: v = 0.05 * (1/10)^2 = 0.0005 = 5e12 e-16.
    assert loaded.ledger.markets["M"].vol_e16 == 5 * 10**12  # type: ignore[union-attr]


def test_auto_core_picks_python_for_v2() -> None:
    engine = make_engine("auto", rules_version=2)
    assert isinstance(engine, Engine) and engine.rules_version == 2
    data = dump_state(engine)
    assert isinstance(load_engine(data, "auto"), Engine)


@pytest.mark.skipif(not native_available(), reason="native core not installed")
def test_native_core_refuses_v2_in_one_line() -> None:
    with pytest.raises(CoreUnavailable, match="does not implement rules version 2") as raised:
        make_engine("native", rules_version=2)
    assert "\n" not in str(raised.value)
    data = dump_state(Engine(rules_version=2))
    with pytest.raises(ValueError, match="does not implement rules version 2"):
        NativeEngine.load_state(data)
    with pytest.raises(CoreUnavailable, match="does not implement rules version 2"):
        load_engine(data, "native")
    v1 = make_engine("native", rules_version=1)
    assert isinstance(v1, NativeEngine) and v1.rules_version == 1
