"""The daemon's fund adequacy job without a broker: what it feeds the oracle history
from a committed batch, what it exports when a computation finishes or fails, and that
its figures are ``clearing risk``'s (the job itself: tests/risk/test_job.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from fractions import Fraction

import pytest
from prometheus_client import generate_latest

from clearing.engine import INPUT_KINDS, make_engine
from clearing.journal import Record
from clearing.kafka._fund_risk import FundRisk, oracle_candidates, settings_of
from clearing.ops.config import RiskConfig
from clearing.ops.metrics import Metrics
from clearing.risk import OracleHistory
from clearing.risk._history import oracle_tick
from tests.risk.ledger import ledger_inputs

ORACLE = INPUT_KINDS.index("oracle")
FILL = INPUT_KINDS.index("fill")
S = 10**9
CONFIG = RiskConfig(interval_s=60, horizon_s=4, step_s=1, window_s=3600, scale="12")


def test_only_oracle_ticks_and_unknown_kinds_are_looked_at() -> None:
    kinds = bytes([FILL, ORACLE, FILL, 0, FILL, FILL, ORACLE])
    assert list(oracle_candidates(kinds)) == [1, 3, 6]
    assert list(oracle_candidates(bytes([FILL] * 1000))) == []


def test_a_batch_feeds_the_history_as_the_journal_would() -> None:
    payloads = list(ledger_inputs())
    fund_risk = FundRisk(CONFIG, Metrics().enable_fund_risk(60), now_s=0.0)
    # The Python core's kinds (all unknown) and the native core's must give the same.
    fund_risk.observe([("t", raw) for raw in payloads], bytes(len(payloads)))
    reference = OracleHistory(3600 * S)
    for raw in payloads:
        reference.observe(raw)
    assert fund_risk.history().ticks() == reference.ticks() and len(reference.ticks()) > 40

    native_kinds = bytes(ORACLE if b'"oracle"' in raw else FILL for raw in payloads)
    again = FundRisk(CONFIG, Metrics().enable_fund_risk(60), now_s=0.0)
    again.observe([("t", raw) for raw in payloads], native_kinds)
    assert again.history().ticks() == reference.ticks()


def test_the_configuration_is_clearing_risks_arguments() -> None:
    settings = settings_of(CONFIG)
    assert (settings.horizon_ns, settings.step_ns, settings.window_ns) == (4 * S, S, 3600 * S)
    assert settings.scale == Fraction(12) and settings.limit == 1000


def test_a_finished_computation_is_exported_and_a_failed_one_counted() -> None:
    metrics = Metrics(process_collectors=False)
    fund_risk = FundRisk(CONFIG, metrics.enable_fund_risk(60), now_s=0.0)
    engine = make_engine("python")
    payloads = list(ledger_inputs())
    for raw in payloads:
        engine.apply_encoded(raw)
    fund_risk.observe([("t", raw) for raw in payloads], bytes(len(payloads)))

    assert fund_risk.due(60.0) and not fund_risk.due(59.0)
    asyncio.run(_run(fund_risk, engine))
    assert not fund_risk.due(119.0) and fund_risk.due(120.0)
    assert fund_risk.last is not None and fund_risk.last.error is None
    sample = metrics.registry.get_sample_value
    assert sample("clearing_fund_risk_seq") == len(payloads)
    assert sample("clearing_fund_risk_scenarios") == fund_risk.last.scenarios
    es = fund_risk.last.expected_shortfall_e16["fund_draws"]
    assert sample("clearing_fund_expected_shortfall", {"level": "0.999"}) == es[1] / 10**16
    assert sample("clearing_fund_coverage_ratio") == float(
        Fraction(fund_risk.last.coverage_ratio or "0")
    )
    assert sample("clearing_fund_risk_age_seconds") < 60  # type: ignore[operator]


def test_a_failed_computation_is_counted_and_leaves_no_figures() -> None:
    metrics = Metrics(process_collectors=False)
    fund_risk = FundRisk(CONFIG, metrics.enable_fund_risk(60), now_s=0.0)
    engine = make_engine("python")
    for raw in ledger_inputs(ticks=0):
        engine.apply_encoded(raw)
    asyncio.run(_run(fund_risk, engine))
    assert fund_risk.last is not None
    assert fund_risk.last.error == "the oracle history is shorter than one horizon"
    sample = metrics.registry.get_sample_value
    assert sample("clearing_fund_risk_failures_total") == 1
    assert math.isnan(sample("clearing_fund_coverage_ratio"))  # type: ignore[arg-type]
    text = generate_latest(metrics.registry).decode()
    assert 'clearing_fund_expected_shortfall{level="0.999"} NaN' in text


async def _run(fund_risk: FundRisk, engine: object) -> None:
    fund_risk.start(engine, 60.0)  # type: ignore[arg-type]
    assert fund_risk._task is not None
    await fund_risk._task


def test_the_job_drops_what_fell_out_of_the_window() -> None:
    config = RiskConfig(interval_s=60, horizon_s=4, step_s=1, window_s=10, scale="12")
    fund_risk = FundRisk(config, Metrics(process_collectors=False).enable_fund_risk(60), 0.0)
    engine = make_engine("python")
    payloads = list(ledger_inputs())
    for raw in payloads:
        engine.apply_encoded(raw)
    fund_risk.observe([("t", raw) for raw in payloads], bytes(len(payloads)))
    oracle = [raw for raw in payloads if b'"oracle"' in raw]
    assert len(fund_risk._payloads) == len(oracle)  # only the ticks are kept
    asyncio.run(_run(fund_risk, engine))
    assert fund_risk.last is not None and fund_risk.last.error is None
    kept = fund_risk.history().ticks()
    newest_ns = max(t.ts_ns for t in kept)
    assert kept and min(t.ts_ns for t in kept) >= newest_ns - 10 * S
    assert len(fund_risk._payloads) == len(oracle) - fund_risk.last.stale < len(oracle)


def test_recovery_feeds_the_replayed_tails_ticks() -> None:
    from clearing.journal import Record
    from clearing.kafka._recovery import _TailPositions

    history = OracleHistory(3600 * S)
    replayed = _TailPositions(history)
    payloads = list(ledger_inputs())
    records = [Record(seq, f"kafka:t:0:{seq - 1}", raw) for seq, raw in enumerate(payloads, 1)]
    for start in range(0, len(records), 7):  # as the journal's messages hand them out
        replayed.observe(records[start : start + 7])
    reference = OracleHistory(3600 * S)
    for raw in payloads:
        reference.observe(raw)
    assert history.ticks() == reference.ticks()
    assert replayed.positions == {("t", 0): len(payloads)}
    fund_risk = FundRisk(CONFIG, Metrics().enable_fund_risk(60), 0.0, history)
    assert fund_risk.history().ticks() == reference.ticks()


def test_a_fork_that_fails_is_a_failed_computation_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics(process_collectors=False)
    fund_risk = FundRisk(CONFIG, metrics.enable_fund_risk(60), now_s=0.0)

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr("os.fork", no_fork)
    fund_risk.start(make_engine("python"), 60.0)
    assert fund_risk.last is not None and fund_risk.last.error is not None
    assert fund_risk.last.error.startswith("cannot fork")
    assert metrics.registry.get_sample_value("clearing_fund_risk_failures_total") == 1
    assert fund_risk.due(120.0) and not fund_risk.due(119.0)


class _Reader:
    """The part of a KafkaJournalReader the read-back's start uses: records by seq."""

    def __init__(self, stamps_s: dict[int, int | None]) -> None:
        self.stamps_s = stamps_s

    def record_at(self, seq: int) -> Record:
        stamp = self.stamps_s[seq]
        if stamp is None:
            raise ValueError(f"journal offset of seq {seq} holds another seq")
        return Record(seq, "t", b'{"type":"oracle","market":"M","price":"1","ts":%d}' % (stamp * S))


def test_the_read_back_starts_after_the_newest_snapshot_older_than_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clearing.kafka import _oracle_backfill as backfill

    reader = _Reader({120: 100, 80: 50, 60: None, 40: 10})
    monkeypatch.setattr(backfill, "_anchored_seqs", lambda *_: sorted(reader.stamps_s)[::-1])

    def start(oldest_s: int | None) -> int:
        oldest_ns = None if oldest_s is None else oldest_s * S
        return backfill._start_seq(None, reader, 146, oldest_ns)  # type: ignore[arg-type]

    assert start(60) == 81  # seq 80 is stamped 50 s: everything after it is read
    assert start(50) == 81 and start(49) == 41  # at or before the window's start
    assert start(200) == 121
    assert start(5) == 1  # no snapshot that old: from the beginning
    assert start(None) == 1  # nothing to date the window by


def test_ticks_read_back_go_in_front_at_the_next_start_and_it_starts_at_once() -> None:
    payloads = list(ledger_inputs())
    ticks = [t for t in map(oracle_tick, payloads) if t is not None]
    older, newer = ticks[: len(ticks) // 2], ticks[len(ticks) // 2 :]
    history = OracleHistory(3600 * S)
    for tick in newer:
        history.observe_tick(tick)
    fund_risk = FundRisk(CONFIG, Metrics().enable_fund_risk(60), 0.0, history)
    fund_risk._older = older  # as _read_back leaves them, with the schedule below
    fund_risk._next_s = -math.inf
    assert fund_risk.due(0.0) and fund_risk.history().ticks() == newer
    engine = make_engine("python")
    for raw in payloads:
        engine.apply_encoded(raw)
    asyncio.run(_run(fund_risk, engine))
    assert fund_risk._older is None and fund_risk.history().ticks() == ticks
    assert fund_risk.last is not None and fund_risk.last.error is None


def test_an_exiting_daemon_does_not_wait_for_the_read_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kill() sets the event the worker thread checks per record: a long journal stops
    being read at once, so the executor's shutdown at exit does not wait for it."""
    import threading
    import time

    from clearing.kafka import _oracle_backfill as backfill

    closed = threading.Event()

    class Slow:
        """20 s of records, one a millisecond (a test without the stop ends too)."""

        def __enter__(self) -> Slow:
            return self

        def __exit__(self, *_: object) -> None:
            closed.set()

        def read(self, first: int, until: int) -> Iterator[Record]:
            for seq in range(first, first + 20_000):
                time.sleep(0.001)
                yield Record(seq, "t", b'{"type":"fill"}')

    monkeypatch.setattr(backfill, "KafkaJournalReader", lambda config: Slow())
    fund_risk = FundRisk(CONFIG, Metrics().enable_fund_risk(60), 0.0)

    async def main() -> None:
        fund_risk._rebuild = asyncio.create_task(fund_risk._read_back(None, 10**9))  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        assert not closed.is_set()  # still reading
        fund_risk.kill()
        assert await asyncio.to_thread(closed.wait, 5), "the read went on after kill()"

    asyncio.run(main())
    assert fund_risk._older is None
