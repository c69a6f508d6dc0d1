"""A small ledger history with every waterfall step, for the ops tests.

SPEC §7's worked example (liquidation, fund draw, clawback), then a second market with an
oracle guard where the insurance fund is the counterparty, so a gap liquidation ends in
bad debt. Expected values are worked out by hand in the comments and in ``EXPECTED``.
"""

from __future__ import annotations

from typing import Final

from clearing.engine import Engine
from clearing.ops.metrics import Metrics

# (topic, raw input): applied in this order, so seq = position + 1.
INPUTS: Final[list[tuple[str, bytes]]] = [
    (topic, line.encode())
    for topic, line in [
        (
            "admin",
            '{"type":"market","market":"BTC-PERP","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}',
        ),
        ("admin", '{"type":"deposit","account":"alice","amount":"100"}'),
        ("admin", '{"type":"deposit","account":"bob","amount":"1000"}'),
        ("admin", '{"type":"deposit","account":"insurance-fund","amount":"20"}'),
        ("oracle", '{"type":"oracle","market":"BTC-PERP","price":"100","ts":5000000000}'),
        (
            "fills",
            '{"type":"fill","fill_id":"f1","market":"BTC-PERP","price":"100","qty":"10",'
            '"buyer":"alice","seller":"bob"}',
        ),
        # 7: alice E = -50 < MM: liquidation (proceeds 850), fund_draw 20, clawback bob 30.
        ("oracle", '{"type":"oracle","market":"BTC-PERP","price":"85","ts":7000000000}'),
        # 8: duplicate_fill.
        (
            "fills",
            '{"type":"fill","fill_id":"f1","market":"BTC-PERP","price":"100","qty":"10",'
            '"buyer":"alice","seller":"bob"}',
        ),
        (
            "admin",
            '{"type":"market","market":"ETH-PERP","imr":"0.2","mmr":"0.1","liq_fee":"0.01",'
            '"max_oracle_move":"0.1"}',
        ),
        ("admin", '{"type":"deposit","account":"carol","amount":"50"}'),
        ("oracle", '{"type":"oracle","market":"ETH-PERP","price":"10","ts":11000000000}'),
        # 12: carol long 20 at 10 from the fund: carol C = -150, fund C = -650.
        (
            "fills",
            '{"type":"fill","fill_id":"e1","market":"ETH-PERP","price":"10","qty":"20",'
            '"buyer":"carol","seller":"insurance-fund"}',
        ),
        # 13: a 25% jump: held.
        ("oracle", '{"type":"oracle","market":"ETH-PERP","price":"12.5","ts":13000000000}'),
        ("oracle", '{"type":"oracle","market":"ETH-PERP","price":"10.5","ts":14000000000}'),
        ("oracle", '{"type":"oracle","market":"ETH-PERP","price":"9.5","ts":15000000000}'),
        # 16: carol E = 30 < IM = 36 but >= MM = 18: below initial margin, not liquidated.
        ("oracle", '{"type":"oracle","market":"ETH-PERP","price":"9","ts":16000000000}'),
        # 17: the fund's 10 BTC long loses 100: fund equity -650 + 750 - 180 = -80.
        ("oracle", '{"type":"oracle","market":"BTC-PERP","price":"75","ts":17000000000}'),
        # 18 is held; 19 confirms it: carol E = -30, close-out 120 at the mark, fund A = 0
        # and no other ETH holder has a clawback base: bad_debt carol 30.
        ("oracle", '{"type":"oracle","market":"ETH-PERP","price":"6","ts":18000000000}'),
        ("oracle", '{"type":"oracle","market":"ETH-PERP","price":"6","ts":19000000000}'),
        # 20: top-up: fund C = -670, equity -670 + 10 * 75 = 80.
        ("admin", '{"type":"deposit","account":"insurance-fund","amount":"100"}'),
        ("admin", '{"type":"nope"}'),
        ("fills", "not json"),
    ]
]
# After input 16, carol is the one account below initial margin.
CHECKPOINT_BELOW_IM: Final = 16
NOW_NS: Final = 30_000_000_000  # 30 s after the epoch, in ns

# Hand-computed metric values after all inputs, at NOW_NS: (name, labels) -> value.
EXPECTED: Final[dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {
    ("clearing_insurance_fund_cash_quote", ()): -670.0,
    ("clearing_insurance_fund_equity_quote", ()): 80.0,
    ("clearing_fee_pool_cash_quote", ()): 0.0,
    ("clearing_bad_debt_unrecovered_quote", ()): 30.0,
    ("clearing_open_interest_base", (("market", "BTC-PERP"),)): 10.0,
    ("clearing_open_interest_base", (("market", "ETH-PERP"),)): 0.0,
    ("clearing_open_interest_notional_quote", (("market", "BTC-PERP"),)): 750.0,
    ("clearing_open_interest_notional_quote", (("market", "ETH-PERP"),)): 0.0,
    ("clearing_fund_to_open_interest_ratio", ()): 80 / 750,
    ("clearing_mark_price_quote", (("market", "BTC-PERP"),)): 75.0,
    ("clearing_mark_price_quote", (("market", "ETH-PERP"),)): 6.0,
    # Last accepted ticks: BTC at 17 s, ETH at 19 s (the confirmation); now is 30 s.
    ("clearing_oracle_age_seconds", (("market", "BTC-PERP"),)): 13.0,
    ("clearing_oracle_age_seconds", (("market", "ETH-PERP"),)): 11.0,
    ("clearing_oracle_held", (("market", "ETH-PERP"),)): 0.0,
    ("clearing_oracle_held_ticks_total", (("market", "ETH-PERP"),)): 2.0,
    ("clearing_accounts", ()): 3.0,
    ("clearing_accounts_with_positions", ()): 1.0,  # bob (the fund is a system account)
    ("clearing_accounts_below_initial_margin", ()): 0.0,
    ("clearing_margin_scan_accounts", ()): 1.0,
    ("clearing_liquidated_accounts_total", ()): 2.0,
    ("clearing_liquidations_total", (("market", "BTC-PERP"),)): 1.0,
    ("clearing_liquidations_total", (("market", "ETH-PERP"),)): 1.0,
    ("clearing_liquidation_fee_quote_total", ()): 0.0,  # both accounts had no cash left
    ("clearing_fund_draws_total", ()): 1.0,
    ("clearing_fund_draw_quote_total", ()): 20.0,
    ("clearing_clawbacks_total", ()): 1.0,
    ("clearing_clawback_quote_total", ()): 30.0,
    ("clearing_bad_debts_total", ()): 1.0,
    ("clearing_bad_debt_quote_total", ()): 30.0,
    ("clearing_rejects_total", (("reason", "duplicate_fill"),)): 1.0,
    ("clearing_rejects_total", (("reason", "unknown_type"),)): 1.0,
    ("clearing_rejects_total", (("reason", "malformed"),)): 1.0,
    ("clearing_rejects_total", (("reason", "insufficient_cash"),)): 0.0,
    ("clearing_output_events_total", (("type", "liquidation"),)): 2.0,
    ("clearing_output_events_total", (("type", "fund_draw"),)): 1.0,
    ("clearing_output_events_total", (("type", "clawback"),)): 1.0,
    ("clearing_output_events_total", (("type", "bad_debt"),)): 1.0,
    ("clearing_output_events_total", (("type", "oracle_held"),)): 2.0,
    ("clearing_output_events_total", (("type", "reject"),)): 3.0,
    ("clearing_input_records_total", (("topic", "admin"), ("type", "market"))): 2.0,
    ("clearing_input_records_total", (("topic", "admin"), ("type", "deposit"))): 5.0,
    ("clearing_input_records_total", (("topic", "admin"), ("type", "unknown"))): 1.0,
    ("clearing_input_records_total", (("topic", "fills"), ("type", "fill"))): 3.0,
    ("clearing_input_records_total", (("topic", "fills"), ("type", "malformed"))): 1.0,
    ("clearing_input_records_total", (("topic", "oracle"), ("type", "oracle"))): 10.0,
    ("clearing_engine_seq", ()): 22.0,
    ("clearing_invariant_violation", ()): 0.0,
}


def apply_batches(
    engine: Engine,
    metrics: Metrics,
    inputs: list[tuple[str, bytes]],
    *,
    batch_size: int = 4,
    now_ns: int = NOW_NS,
) -> None:
    """Apply inputs in batches the way the daemon does, feeding ``metrics`` per batch."""
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        first_seq = engine.seq + 1
        with metrics.engine_apply_seconds.time():
            outputs = engine.apply_many(data for _, data in batch)
        metrics.observe_batch(batch, first_seq, outputs, now_ns)


def run_scenario(metrics: Metrics, now_ns: int = NOW_NS) -> Engine:
    """The whole scenario applied, ledger gauges updated, invariants checked."""
    engine = Engine()
    apply_batches(engine, metrics, INPUTS, now_ns=now_ns)
    engine.check_invariants()
    metrics.set_invariant_ok(True)
    metrics.update_ledger(engine, now_ns)
    return engine
