"""Metrics fed from a real engine run: every value checked against hand-computed numbers."""

from __future__ import annotations

import asyncio
import math

import pytest
from prometheus_client import generate_latest

from clearing.engine import Engine
from clearing.ops.metrics import LATENCY_BUCKETS_SECONDS, Metrics, input_type_of
from tests.ops.scenario import (
    CHECKPOINT_BELOW_IM,
    EXPECTED,
    INPUTS,
    NOW_NS,
    apply_batches,
    run_scenario,
)

S = 1_000_000_000


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_scenario_values_are_exact() -> None:
    metrics = Metrics()
    run_scenario(metrics)
    wrong = {
        (name, labels): (expected, value(metrics, name, **dict(labels)))
        for (name, labels), expected in EXPECTED.items()
        if value(metrics, name, **dict(labels)) != expected
    }
    assert wrong == {}


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_batching_does_not_change_counts(batch_size: int) -> None:
    # Oracle acceptance is matched to its input by seq, across batch boundaries.
    metrics = Metrics()
    engine = Engine()
    apply_batches(engine, metrics, INPUTS, batch_size=batch_size)
    metrics.update_ledger(engine, NOW_NS)
    for (name, labels), expected in EXPECTED.items():
        if name != "clearing_invariant_violation":
            assert value(metrics, name, **dict(labels)) == expected, name
    batches = math.ceil(len(INPUTS) / batch_size)
    assert value(metrics, "clearing_engine_batch_records_count") == batches
    assert value(metrics, "clearing_engine_batch_records_sum") == len(INPUTS)
    assert value(metrics, "clearing_engine_apply_seconds_count") == batches


def test_below_initial_margin_mid_scenario() -> None:
    metrics = Metrics()
    engine = Engine()
    apply_batches(engine, metrics, INPUTS[:CHECKPOINT_BELOW_IM])
    metrics.update_ledger(engine, 16 * S)
    # carol: E = -150 + 20 * 9 = 30 < IM = 36; bob and the fund are fine or system.
    assert value(metrics, "clearing_accounts_below_initial_margin") == 1
    assert value(metrics, "clearing_accounts_with_positions") == 2  # bob, carol
    # OI: BTC 10 at 85 = 850, ETH 20 at 9 = 180; fund: -650 + 850 - 180 = 20.
    assert value(metrics, "clearing_open_interest_notional_quote", market="ETH-PERP") == 180
    assert value(metrics, "clearing_insurance_fund_equity_quote") == 20
    assert value(metrics, "clearing_fund_to_open_interest_ratio") == 20 / 1030
    # The 12.5 tick was held at 13 s, then superseded by accepted ticks.
    assert value(metrics, "clearing_oracle_held", market="ETH-PERP") == 0
    assert value(metrics, "clearing_oracle_age_seconds", market="ETH-PERP") == 0


def test_held_tick_shows_as_held_and_does_not_refresh_oracle_age() -> None:
    metrics = Metrics()
    engine = Engine()
    # Up to input 18: the ETH drop to 6 is held, the last accepted ETH tick is at 16 s.
    apply_batches(engine, metrics, INPUTS[:18])
    metrics.update_ledger(engine, 20 * S)
    assert value(metrics, "clearing_oracle_held", market="ETH-PERP") == 1
    assert value(metrics, "clearing_oracle_age_seconds", market="ETH-PERP") == 4
    assert value(metrics, "clearing_oracle_held_ticks_total", market="ETH-PERP") == 2


def test_empty_ledger_has_nan_ratio_and_no_markets() -> None:
    metrics = Metrics(now_ns=0)
    metrics.update_ledger(Engine(), 5 * S)
    assert math.isnan(value(metrics, "clearing_fund_to_open_interest_ratio") or 0.0)
    assert value(metrics, "clearing_accounts") == 0
    assert value(metrics, "clearing_insurance_fund_equity_quote") == 0
    # No snapshot yet: age counts from process start.
    assert value(metrics, "clearing_snapshot_age_seconds") == 5
    assert value(metrics, "clearing_ready") == 0
    # Every reject reason exists at 0 from the start, so rate() sees the first one.
    assert value(metrics, "clearing_rejects_total", reason="self_trade") == 0


def _crowd(traders: int) -> Engine:
    """``traders`` accounts below IM (E = 10, IM = 50, MM = 10) and one market maker."""
    engine = Engine()
    engine.apply(b'{"type":"market","market":"M","imr":"0.5","mmr":"0.1","liq_fee":"0"}')
    engine.apply(b'{"type":"deposit","account":"mm","amount":"100000"}')
    for i in range(traders):
        engine.apply(b'{"type":"deposit","account":"t%d","amount":"10"}' % i)
        engine.apply(
            b'{"type":"fill","fill_id":"x%d","market":"M","price":"100","qty":"1",'
            b'"buyer":"t%d","seller":"mm"}' % (i, i)
        )
    return engine


def test_below_initial_margin_counts_every_trader() -> None:
    engine = _crowd(30)
    metrics = Metrics()
    metrics.update_ledger(engine, 0)
    # All 30 traders are below IM; the market maker (a trader too) is not.
    assert value(metrics, "clearing_accounts_below_initial_margin") == 30
    assert value(metrics, "clearing_margin_scan_accounts") == 31
    assert value(metrics, "clearing_accounts_with_positions") == 31
    assert value(metrics, "clearing_open_interest_base", market="M") == 30


def test_lag_progress_and_health_setters() -> None:
    metrics = Metrics(now_ns=0)
    metrics.set_partition_lag("fills", 0, 120)
    metrics.set_partition_lag("fills", 1, 0)
    assert value(metrics, "clearing_consumer_lag_offsets", topic="fills", partition="0") == 120
    metrics.forget_partition("fills", 0)
    metrics.forget_partition("fills", 7)  # never assigned: no error
    assert value(metrics, "clearing_consumer_lag_offsets", topic="fills", partition="0") is None
    assert value(metrics, "clearing_consumer_lag_offsets", topic="fills", partition="1") == 0

    metrics.observe_applied(record_ts_ns=10 * S, now_ns=12_500_000_000)
    assert value(metrics, "clearing_input_lag_seconds") == 2.5
    assert value(metrics, "clearing_last_applied_record_timestamp_seconds") == 10
    metrics.observe_applied(record_ts_ns=13 * S, now_ns=12 * S)  # skewed clock
    assert value(metrics, "clearing_input_lag_seconds") == 0

    metrics.set_journal_seq(42)
    metrics.set_snapshot_time(100 * S)
    metrics.update_ledger(Engine(), 160 * S)
    assert value(metrics, "clearing_journal_last_seq") == 42
    assert value(metrics, "clearing_snapshot_age_seconds") == 60

    metrics.set_invariant_ok(False)
    assert value(metrics, "clearing_invariant_violation") == 1
    metrics.set_ready(False, "replaying journal")
    assert (metrics.ready, metrics.not_ready_reason) == (False, "replaying journal")
    metrics.set_ready(True)
    assert value(metrics, "clearing_ready") == 1
    assert metrics.not_ready_reason == ""

    metrics.observe_dlq("fills", 3)
    assert value(metrics, "clearing_dlq_records_total", topic="fills") == 3


def test_label_values_are_bounded() -> None:
    metrics = Metrics()
    metrics.observe_input("fills", "fill")
    metrics.observe_input("fills", "x" * 500)  # a hostile type: folded into "unknown"
    assert value(metrics, "clearing_input_records_total", topic="fills", type="unknown") == 1
    assert input_type_of(b'{"type":"oracle","market":"M"}') == "oracle"
    assert input_type_of(b'{"type":123}') == "unknown"
    assert input_type_of(b"\xff\xfe") == "malformed"
    assert input_type_of(b"[1,2]") == "malformed"

    run_scenario(metrics)
    # "generation" is python_gc_*; "version" is clearing_build_info.
    allowed = {"topic", "type", "reason", "partition", "market", "le", "version", "generation"}
    for family in metrics.registry.collect():
        for sample in family.samples:
            assert set(sample.labels) <= allowed, (sample.name, sample.labels)
            assert "alice" not in sample.labels.values()


def test_histograms_have_sub_millisecond_buckets() -> None:
    metrics = Metrics()
    assert LATENCY_BUCKETS_SECONDS[0] == 0.00005 and LATENCY_BUCKETS_SECONDS[-1] == 5.0
    with metrics.journal_fsync_seconds.time():
        pass
    text = generate_latest(metrics.registry).decode()
    assert 'clearing_journal_fsync_seconds_bucket{le="5e-05"}' in text
    assert 'clearing_transaction_commit_seconds_bucket{le="0.00025"} 0.0' in text
    assert value(metrics, "clearing_journal_fsync_seconds_count") == 1


async def test_histogram_times_an_awaited_step() -> None:
    metrics = Metrics()
    with metrics.txn_commit_seconds.time():
        await asyncio.sleep(0.01)
    assert (value(metrics, "clearing_transaction_commit_seconds_sum") or 0) >= 0.01


def test_two_metrics_objects_do_not_share_state() -> None:
    first, second = Metrics(), Metrics()
    first.set_ready(True)
    assert value(second, "clearing_ready") == 0
