"""The daemon's fund adequacy job without a broker: what it feeds the oracle history
from a committed batch, what it exports when a computation finishes or fails, and that
its figures are ``clearing risk``'s (the job itself: tests/risk/test_job.py)."""

from __future__ import annotations

import asyncio
import math
import shutil
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest

from clearing.engine import INPUT_KINDS, make_engine
from clearing.journal import Record
from clearing.kafka._fund_risk import FundRisk, oracle_candidates, settings_of
from clearing.kafka._journal import KafkaJournalReader
from clearing.ops.config import RiskConfig
from clearing.ops.metrics import Metrics
from clearing.risk import OracleHistory
from clearing.risk._history import oracle_tick
from clearing.snapshot import write_snapshot
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
        stamp = self.stamps_s.get(seq, -1)
        if stamp == -1:
            raise ValueError(f"offset of journal seq {seq} is not known")
        if stamp is None:
            raise ValueError(f"journal offset of seq {seq} holds another seq")
        return Record(seq, "t", b'{"type":"oracle","market":"M","price":"1","ts":%d}' % (stamp * S))


def _start(stamps_s: dict[int, int | None], newest_s: int | None, window_s: int) -> int:
    """Where a read-back up to seq 146 starts, with local snapshots at the seqs below 146
    in ``stamps_s`` (their records stamped so; None: a stale anchor)."""
    from clearing.kafka import _oracle_backfill as backfill

    reader = _Reader(stamps_s)
    snapshots = sorted((seq for seq in stamps_s if seq < 146), reverse=True)
    newest_ns = None if newest_s is None else newest_s * S
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backfill, "_anchored_seqs", lambda *_: snapshots)
        return backfill._start_seq(None, reader, 146, newest_ns, window_s * S)  # type: ignore[arg-type]


def test_the_read_back_starts_after_the_newest_snapshot_older_than_the_window() -> None:
    stamps_s: dict[int, int | None] = {120: 100, 80: 50, 60: None, 40: 10}
    assert _start(stamps_s, 160, 100) == 81  # seq 80 is stamped 50 s: all after it is read
    assert _start(stamps_s, 150, 100) == 81 and _start(stamps_s, 149, 100) == 41
    assert _start(stamps_s, 300, 100) == 121
    assert _start(stamps_s, 105, 100) == 1  # no snapshot that old: from the beginning


def test_without_a_tick_held_the_window_is_dated_by_the_last_record_to_read() -> None:
    """A promoted standby or a snapshot at the head holds no tick: the stamp of the record
    at the recovered seq dates the window, not a read of the whole journal."""
    stamps_s: dict[int, int | None] = {146: 160, 120: 100, 80: 50, 40: 10}
    assert _start(stamps_s, None, 100) == 81
    assert _start(stamps_s, None, 10) == 121
    assert _start(stamps_s, None, 200) == 1  # a window longer than the journal
    # The head's record unreachable: the newest snapshot's stamp dates it (reads more).
    del stamps_s[146]
    assert _start(stamps_s, None, 50) == 81
    assert _start({}, None, 10) == 1  # nothing to date the window by


def test_a_snapshot_that_vanishes_while_listed_is_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The snapshot writer's retention may delete a file between the listing and its
    read: the read-back starts from the snapshots still there."""
    from clearing.kafka import _oracle_backfill as backfill
    from clearing.snapshot import _snapshot

    meta = {"journal_topic": "j", "journal_offset": 7}
    kept = write_snapshot(tmp_path, b"state", 40, b"\0" * 32, meta)
    gone = str(tmp_path / _snapshot.snapshot_name(80))
    monkeypatch.setattr(_snapshot, "_snapshot_files", lambda _: [(40, kept), (80, gone)])
    reader = KafkaJournalReader.__new__(KafkaJournalReader)
    reader._anchors, reader.topic = {}, "j"  # only what anchoring uses
    config = SimpleNamespace(snapshot_dir=str(tmp_path))
    assert backfill._anchored_seqs(config, reader, 146) == [40]  # type: ignore[arg-type]
    assert reader.offset_of(40) == 7 and reader.offset_of(80) is None
    shutil.rmtree(tmp_path)  # the whole directory gone: nothing to start from
    monkeypatch.undo()
    assert backfill._anchored_seqs(config, reader, 146) == []  # type: ignore[arg-type]


def test_ticks_read_back_go_in_front_at_the_next_start_and_it_starts_at_once() -> None:
    payloads = list(ledger_inputs())
    ticks = [t for t in map(oracle_tick, payloads) if t is not None]
    older, newer = ticks[: len(ticks) // 2], ticks[len(ticks) // 2 :]
    history = OracleHistory(3600 * S)
    for tick in newer:
        history.observe_tick(tick)
    fund_risk = FundRisk(CONFIG, Metrics().enable_fund_risk(60), 0.0, history)
    fund_risk._take_older(older)  # as the read-back delivers them
    assert fund_risk.due(0.0) and fund_risk.history().ticks() == newer
    engine = make_engine("python")
    for raw in payloads:
        engine.apply_encoded(raw)
    asyncio.run(_run(fund_risk, engine))
    assert fund_risk._older is None and fund_risk.history().ticks() == ticks
    assert fund_risk.last is not None and fund_risk.last.error is None


# A promoted standby at seq 10**9 (it holds no tick): everything is missing.
_PROMOTED = SimpleNamespace(
    oracle_history=None,
    engine=SimpleNamespace(seq=10**9),
    chain=SimpleNamespace(last_seq=10**9),
    journal_offset=5,
)


def test_an_exiting_daemon_does_not_wait_for_the_read_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kill() sets the event the worker thread checks per record: a long journal stops
    being read at once."""
    from clearing.kafka import _oracle_backfill as backfill

    closed = threading.Event()

    class Slow:
        """20 s of records, one a millisecond (a test without the stop ends too)."""

        def __enter__(self) -> Slow:
            return self

        def __exit__(self, *_: object) -> None:
            closed.set()

        def anchor(self, seq: int, offset: int) -> None:
            pass

        def read(self, first: int, until: int) -> Iterator[Record]:
            for seq in range(first, first + 20_000):
                time.sleep(0.001)
                yield Record(seq, "t", b'{"type":"fill"}')

    monkeypatch.setattr(backfill, "KafkaJournalReader", lambda config: Slow())
    monkeypatch.setattr(backfill, "_start_seq", lambda *_: 1)
    fund_risk = FundRisk(CONFIG, Metrics().enable_fund_risk(60), 0.0)

    async def main() -> None:
        fund_risk.rebuild_history(None, _PROMOTED)  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        assert not closed.is_set()  # still reading
        fund_risk.kill()
        assert await asyncio.to_thread(closed.wait, 5), "the read went on after kill()"

    asyncio.run(main())
    assert fund_risk._older is None


def test_a_daemon_stopping_during_a_blocked_read_back_exits_within_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-back stuck in a broker call (opening the reader, a fetch) never checks the
    stop event: the event loop, and so the interpreter, must not wait for its thread
    (asyncio.to_thread's would be joined when the loop shuts its executor down)."""
    from clearing.kafka import _oracle_backfill as backfill

    release = threading.Event()
    entered = threading.Event()

    class Stuck:
        def __init__(self, config: object) -> None:
            pass

        def __enter__(self) -> Stuck:
            entered.set()
            release.wait(30)  # an aiokafka timeout, as slow as a slow broker makes it
            return self

        def __exit__(self, *_: object) -> None:
            pass

    monkeypatch.setattr(backfill, "KafkaJournalReader", Stuck)
    fund_risk = FundRisk(CONFIG, Metrics().enable_fund_risk(60), 0.0)

    async def main() -> None:
        fund_risk.rebuild_history(None, _PROMOTED)  # type: ignore[arg-type]
        assert await asyncio.to_thread(entered.wait, 5)
        fund_risk.kill()

    started_s = time.monotonic()
    try:
        asyncio.run(main())
        assert time.monotonic() - started_s < 5.0  # the bound; the reader blocks for 30 s
    finally:
        release.set()
    assert fund_risk._older is None


def test_what_is_missing_after_a_recovery_and_where_it_ends() -> None:
    """Up to the snapshot recovery started from (its offset known only if it is the
    head); up to the head for a promoted standby, whose offset it knows."""
    from clearing.kafka._oracle_backfill import missing_until

    def recovery(history: OracleHistory | None, snapshot_seq: int, head_seq: int) -> Any:
        return SimpleNamespace(
            oracle_history=history,
            snapshot_seq=snapshot_seq,
            engine=SimpleNamespace(seq=head_seq),
            chain=SimpleNamespace(last_seq=head_seq),
            journal_offset=head_seq + 3,
        )

    held = OracleHistory(S)
    assert missing_until(recovery(held, 40, 90)) == (40, None)  # a tail was replayed
    assert missing_until(recovery(held, 90, 90)) == (90, 93)  # the snapshot is the head
    assert missing_until(recovery(held, 0, 90)) == (0, None)  # all replayed: none missing
    assert missing_until(recovery(None, 40, 90)) == (90, 93)  # promoted: kept no history
