"""Metrics of rules version 2 (SPEC §9), fed from the hand-worked scenarios of
``tests/engine/test_scenarios_v2.py`` (their comments derive every number below)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clearing.engine import Engine, make_engine
from clearing.ops.metrics import Metrics

Rec = dict[str, Any]
NOW_NS = 1_767_225_600 * 10**9


def _market(liq_fee: str = "0", **v2: Any) -> Rec:
    return {"type": "market", "market": "M", "imr": "0.1", "mmr": "0.05", "liq_fee": liq_fee, **v2}


def _dep(account: str, amount: str) -> Rec:
    return {"type": "deposit", "account": account, "amount": amount}


def _oracle(price: str) -> Rec:
    return {"type": "oracle", "market": "M", "price": price}


def _fill(fid: str, price: str, qty: str, buyer: str, seller: str) -> Rec:
    return {"type": "fill", "fill_id": fid, "market": "M", "price": price, "qty": qty,
            "buyer": buyer, "seller": seller}  # fmt: skip


def _run(inputs: list[Rec], rules: int = 2) -> Metrics:
    engine = Engine(rules_version=rules)
    metrics = Metrics(process_collectors=False, now_ns=NOW_NS)
    for record in inputs:
        raw = json.dumps(record).encode()
        metrics.observe_batch([("inputs", raw)], engine.seq + 1, engine.apply(raw), NOW_NS)
    metrics.update_ledger(engine, NOW_NS)
    return metrics


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_partial_step_then_a_full_one_count_two_steps_of_one_account() -> None:
    partial = [
        _market("0.01", liq_step="0.25"),
        _dep("a", "100"),
        _dep("b", "1000"),
        _oracle("100"),
        _fill("f1", "100", "10", "a", "b"),
        _oracle("93"),
    ]
    metrics = _run(partial)
    assert _value(metrics, "clearing_liquidated_accounts_total") == 1
    assert _value(metrics, "clearing_liquidation_steps_total") == 2
    # Fees 2.325 + 6.975, all to the fund (fund_share 1).
    assert _value(metrics, "clearing_liquidation_fund_fee_quote_total", market="M") == 9.3
    assert _value(metrics, "clearing_liquidation_pool_fee_quote_total", market="M") == 0
    assert _value(metrics, "clearing_rules_version") == 2


def test_adl_counts_hand_overs_amounts_and_quantity() -> None:
    adl = [
        _market(loss_policy="adl"),
        _dep("a", "100"),
        _dep("s1", "200"),
        _dep("s2", "2000"),
        _oracle("100"),
        _fill("f1", "74", "6", "a", "s1"),
        _fill("f2", "100", "4", "a", "s2"),
        _oracle("72"),
    ]
    metrics = _run(adl)
    # s1 pays 12 for 6 closed, s2 pays 12 for 4.
    assert _value(metrics, "clearing_adl_total", market="M") == 2
    assert _value(metrics, "clearing_adl_quote_total", market="M") == 24
    assert _value(metrics, "clearing_adl_base_total", market="M") == 10
    assert _value(metrics, "clearing_liquidation_steps_total") == 1
    assert _value(metrics, "clearing_output_events_total", type="adl") == 2


def test_fee_split_and_the_gauges_follow_volatility() -> None:
    tiers = [["0.1", "0.5"], ["0.2", "0"]]
    inputs = [
        _market("0.01", vol_tiers=tiers, vol_lambda="0.5"),
        _oracle("100"),
        _dep("s", "12"),
        _dep("l1", "15"),
        _dep("l2", "36"),
        _dep("w", "1000"),
        _fill("f1", "100", "1", "w", "s"),
        _fill("f2", "100", "1", "l1", "w"),
        _fill("f3", "100", "1", "l2", "w"),
        _oracle("110"),
        _oracle("88"),
    ]
    metrics = _run(inputs)
    # v = 0.0225 after tick 88: tier 0.1 (0.01 <= v < 0.04), share 0.5.
    assert _value(metrics, "clearing_volatility_variance", market="M") == 0.0225
    assert _value(metrics, "clearing_fund_share_ratio", market="M") == 0.5
    # Fees: 1.1 all to the fund at tick 110; 0.88 split 0.44 / 0.44 at tick 88.
    assert _value(metrics, "clearing_liquidation_fund_fee_quote_total", market="M") == 1.54
    assert _value(metrics, "clearing_liquidation_pool_fee_quote_total", market="M") == 0.44
    metrics = _run([*inputs, _oracle("66")])
    assert _value(metrics, "clearing_volatility_variance", market="M") == 0.0425
    assert _value(metrics, "clearing_fund_share_ratio", market="M") == 0


def test_funding_counts_inputs_and_the_paying_side() -> None:
    inputs = [
        _market(),
        _dep("a", "1000"),
        _dep("b", "1000"),
        _oracle("100"),
        _fill("f1", "100", "2", "a", "b"),
        # Longs pay: a pays round16(2 * 100 * 0.001) = 0.2, b receives it.
        {"type": "funding", "market": "M", "rate": "0.001"},
        # Shorts pay: b pays 2 * 100 * 0.0005 = 0.1.
        {"type": "funding", "market": "M", "rate": "-0.0005"},
    ]
    metrics = _run(inputs)
    assert _value(metrics, "clearing_funding_inputs_total", market="M") == 2
    assert _value(metrics, "clearing_funding_paid_quote_total", market="M") == pytest.approx(0.3)
    assert _value(metrics, "clearing_input_records_total", topic="inputs", type="funding") == 2


@pytest.mark.parametrize("core", ["python", "native"])
def test_a_version_1_ledger_shows_version_1_values(core: str) -> None:
    if core == "native":
        pytest.importorskip("clearing_native")
    engine = make_engine(core)
    metrics = Metrics(process_collectors=False, now_ns=NOW_NS)
    for record in [_market("0.01"), _oracle("100"), _oracle("120")]:
        raw = json.dumps(record).encode()
        metrics.observe_batch([("inputs", raw)], engine.seq + 1, engine.apply(raw), NOW_NS)
    metrics.update_ledger(engine, NOW_NS)
    assert _value(metrics, "clearing_rules_version") == 1
    assert _value(metrics, "clearing_volatility_variance", market="M") == 0
    assert _value(metrics, "clearing_fund_share_ratio", market="M") == 1
    assert _value(metrics, "clearing_liquidation_steps_total") == 0
