"""The report's fund risk section, computed: ``clearing risk`` and ``clearing stress
--grid`` on the journal's own ledger (clearing.risk, the real engine in forked children).

One read of the journal for its oracle history, then one forward replay (the fastest core
that implements its rules), paused at ``CHECKPOINTS`` evenly spaced seqs, the last one the
head:

* at each checkpoint, the coverage ratio (fund equity / ES 99.9% of its draws) from at most
  ``CHECKPOINT_SCENARIOS`` historical scenarios of the oracle history so far: the coverage
  over time;
* at the head, the full assessment (at most ``HEAD_SCENARIOS`` scenarios: the loss
  distribution) and the default stress grid (every market alone, +-10/20/30/50%).

Cost, bounded whatever the journal's length: one read and one replay, plus at most
``CHECKPOINTS x CHECKPOINT_SCENARIOS + HEAD_SCENARIOS + 8 x markets`` scenario runs, each
a fork of the engine and the few inputs of its move (two at a time).

The horizon is chosen from the whole history: the longest round duration at most a
twelfth of the span of the stamped oracle ticks, and intervals end every thirtieth of it
(overlapping scenarios, unscaled); every checkpoint uses the same, on the history up to
it. A journal whose stamped ticks span less than two horizons gets the grid only.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final, NamedTuple

from clearing.engine import EngineCore, make_engine
from clearing.journal import LocalJournal, Record
from clearing.report._backtest import BackTest, BackTestRun
from clearing.report._episode import LossEpisode
from clearing.risk import LOSSES, Move, Settings, assess, run_scenarios
from clearing.risk._history import OracleTick, oracle_tick
from clearing.risk._shock import shock_grid, shocked_price_e8
from clearing.sequencer import ReplayObserver, replay

__all__ = [
    "CHECKPOINTS",
    "CoveragePoint",
    "GridRow",
    "RiskHistory",
    "RiskSection",
    "collect_risk",
    "read_history",
]

CHECKPOINTS: Final = 6
CHECKPOINT_SCENARIOS: Final = 50
HEAD_SCENARIOS: Final = 1000
_S: Final = 10**9
# Round durations a horizon or a step may take, in seconds.
_ROUND_S: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
_ROUND_S_MORE: Final = (21600, 43200, 86400, 7 * 86400)


@dataclass(frozen=True)
class CoveragePoint:
    seq: int
    ts_ns: int | None  # the last stamped oracle tick's, if any
    coverage: Fraction | None  # None: no scenario drew on the fund
    fund_equity_e16: int
    es999_e16: int
    scenarios: int


@dataclass(frozen=True)
class GridRow:
    market: str
    mark_e8: int
    price_e8: int
    liquidations: int
    accounts: int
    fund_draw_e16: int
    shared_e16: int  # clawbacks + ADL
    bad_debt_e16: int
    fund_equity_after_e16: int


@dataclass
class RiskSection:
    seq: int = 0
    core: str = ""
    horizon_ns: int = 0  # 0: no adequacy (too little stamped oracle history)
    step_ns: int = 0
    fund_equity_e16: int = 0
    intervals: int = 0
    # At the head, per scenario: what the fund paid and how far its equity fell.
    fund_draws_e16: list[int] = field(default_factory=list)
    equity_loss_e16: list[int] = field(default_factory=list)
    # loss name (clearing.risk.LOSSES) -> [(VaR, ES) at 99%, at 99.9%]
    tails_e16: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    coverage: Fraction | None = None
    equity_coverage: Fraction | None = None  # over the ES 99.9% of its equity loss
    coverage_over_time: list[CoveragePoint] = field(default_factory=list)
    grid: list[GridRow] = field(default_factory=list)
    backtest: BackTest | None = None  # at the journal's largest fund loss (``_backtest``)


def round_duration_ns(at_most_ns: int) -> int:
    """The longest of ``_ROUND_S`` at most ``at_most_ns`` (1 s at least)."""
    best_s = 1
    for seconds in (*_ROUND_S, *_ROUND_S_MORE):
        if seconds * _S <= at_most_ns:
            best_s = seconds
    return best_s * _S


def _jobs() -> int:
    return min(2, os.cpu_count() or 1)


def _settings(ticks: list[OracleTick], limit: int) -> Settings | None:
    """The report's horizon for this history (module docstring); None if too short."""
    stamps = [t.ts_ns for t in ticks]
    if not stamps:
        return None
    span_ns = max(stamps) - min(stamps)
    horizon_ns = round_duration_ns(span_ns // 12)
    if span_ns < horizon_ns * 2:
        return None
    return Settings(horizon_ns=horizon_ns, step_ns=round_duration_ns(horizon_ns // 30), limit=limit)


class RiskHistory(NamedTuple):
    """The journal's stamped oracle ticks, the seq of each, and the report's settings
    for them (None: too short a history for any adequacy)."""

    tick_seqs: list[int]
    ticks: list[OracleTick]
    settings: Settings | None


def read_history(journal_dir: str) -> RiskHistory:
    """One read of the journal for its oracle history; the report passes it to both
    replays (the horizon is also the back-test's, ``_episode``)."""
    tick_seqs, ticks = _oracle_history(journal_dir)
    return RiskHistory(tick_seqs, ticks, _settings(ticks, HEAD_SCENARIOS))


def collect_risk(
    journal_dir: str,
    checkpoints: int = CHECKPOINTS,
    history: RiskHistory | None = None,
    episode: LossEpisode | None = None,
) -> RiskSection:
    """Replay ``journal_dir`` once and compute the section (module docstring); every
    checkpoint uses the head's horizon and step. ``history``: ``read_history``'s (read
    here if not given); ``episode``: where the back-test looks (none if not given)."""
    section = RiskSection()
    tick_seqs, ticks, head_settings = history or read_history(journal_dir)
    with LocalJournal(journal_dir, readonly=True) as journal:
        total = journal.last_seq
        engine = make_engine("auto", rules_version=journal.rules_version)
        section.core = engine.core_name
        stops = {max(1, -(-total * i // checkpoints)) for i in range(1, checkpoints)}
        stops.discard(total)
        backtest = None
        if head_settings is None:
            stops.clear()  # no adequacy anywhere: replay straight to the head
        elif episode is not None:
            backtest = BackTestRun(episode, head_settings, _jobs(), tick_seqs, ticks)
        observer = _Checkpoints(section, engine, stops, tick_seqs, ticks, head_settings, backtest)
        # The report's first replay (``_collect``) checked the recorded outputs already.
        replay(journal, engine, until_seq=total, verify=False, observer=observer)
    section.seq = engine.seq
    section.backtest = None if backtest is None else backtest.result
    _head(section, engine, ticks, head_settings)
    _grid(section, engine)
    return section


class _Checkpoints(ReplayObserver):
    """The risk replay's per-record hooks: the coverage at each checkpoint seq and the
    back-test (if any), on the engine the replay applies each record to."""

    def __init__(
        self,
        section: RiskSection,
        engine: EngineCore,
        stops: set[int],
        tick_seqs: list[int],
        ticks: list[OracleTick],
        settings: Settings | None,
        backtest: BackTestRun | None,
    ) -> None:
        self.section, self.engine, self.stops = section, engine, stops
        self.tick_seqs, self.ticks, self.settings = tick_seqs, ticks, settings
        self.backtest = backtest

    def after(self, record: Record, events: list[bytes], derived: bytes) -> None:
        if self.backtest is not None:
            self.backtest.after(record, self.engine)
        if record.seq in self.stops:
            assert self.settings is not None  # else no stops
            known = self.ticks[: bisect.bisect_right(self.tick_seqs, record.seq)]
            settings = self.settings._replace(limit=CHECKPOINT_SCENARIOS)
            _checkpoint(self.section, self.engine, known, settings)


def _oracle_history(journal_dir: str) -> tuple[list[int], list[OracleTick]]:
    """The journal's stamped oracle ticks and the seq of each (ascending)."""
    seqs: list[int] = []
    ticks: list[OracleTick] = []
    with LocalJournal(journal_dir, readonly=True) as journal:
        for record in journal.read(1, journal.last_seq):
            tick = oracle_tick(record.payload)
            if tick is not None:
                seqs.append(record.seq)
                ticks.append(tick)
    return seqs, ticks


def _checkpoint(
    section: RiskSection, engine: EngineCore, ticks: list[OracleTick], settings: Settings
) -> None:
    adequacy = assess(engine, ticks, settings, jobs=_jobs()) if ticks else None
    if adequacy is None:  # less than one horizon of history so far
        return
    section.coverage_over_time.append(
        CoveragePoint(
            engine.seq,
            max(t.ts_ns for t in ticks),
            adequacy.coverage("fund_draws"),
            adequacy.fund_equity_e16,
            adequacy.tails("fund_draws")[-1].es,
            len(adequacy.outcomes),
        )
    )


def _head(
    section: RiskSection, engine: EngineCore, ticks: list[OracleTick], settings: Settings | None
) -> None:
    section.fund_equity_e16 = engine.summary().fund_equity_e16
    if settings is None:
        return
    adequacy = assess(engine, ticks, settings, jobs=_jobs())
    if adequacy is None:
        return
    section.horizon_ns, section.step_ns = settings.horizon_ns, settings.step_ns or 0
    section.intervals = adequacy.intervals_available
    section.fund_draws_e16 = adequacy.losses("fund_draws")
    section.equity_loss_e16 = adequacy.losses("fund_equity_loss")
    section.tails_e16 = {name: [(t.var, t.es) for t in adequacy.tails(name)] for name in LOSSES}
    section.coverage = adequacy.coverage("fund_draws")
    section.equity_coverage = adequacy.coverage("fund_equity_loss")
    section.coverage_over_time.append(
        CoveragePoint(
            engine.seq,
            max(t.ts_ns for t in ticks),
            section.coverage,
            adequacy.fund_equity_e16,
            section.tails_e16["fund_draws"][-1][1],
            len(adequacy.outcomes),
        )
    )


def _grid(section: RiskSection, engine: EngineCore) -> None:
    marks = {m.market: m.mark_e8 for m in engine.summary().markets if m.mark_e8 is not None}
    shocks = shock_grid(marks)
    moves = [Move(s.market, shocked_price_e8(marks[s.market], s.move)) for s in shocks]
    outcomes = run_scenarios(engine, [[m] for m in moves], jobs=_jobs(), measure_fund=True)
    for move, outcome in zip(moves, outcomes, strict=True):
        total = outcome.total
        section.grid.append(
            GridRow(
                move.market,
                marks[move.market],
                move.price_e8,
                total.liquidations,
                total.accounts_liquidated,
                total.fund_draw_e16,
                total.clawback_e16 + total.adl_e16,
                total.bad_debt_e16,
                outcome.fund_equity_after_e16 or 0,
            )
        )
