"""The report's back-test: what ``clearing risk`` said about the ledger just before the
journal's largest fund loss over one horizon (``_episode``), against what that horizon
then cost (the recorded outputs of its inputs, and the fund's equity at both ends).

Fed by the risk section's replay (``_risk.collect_risk``): ``after`` each record, on the
engine that applied it. At the episode's start it runs the same assessment as
``clearing risk --until SEQ`` (the head's horizon, step and scenario bound); over the
horizon after it, it adds up the recorded outputs. What was paid into the fund from
outside over the horizon (so that a top-up does not count as a gain) comes with the
episode: the report's replay that found it (``_episode``) counted it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from fractions import Fraction

from clearing.engine import EngineCore
from clearing.journal import Record
from clearing.report._episode import LossEpisode
from clearing.risk import LOSSES, Settings, assess
from clearing.risk._history import OracleTick
from clearing.risk._outcome import StepOutputs, summarise

__all__ = ["BackTest", "BackTestRun"]


@dataclass
class BackTest:
    episode: LossEpisode
    # What clearing risk said at episode.start_seq (scenarios 0: too little history).
    scenarios: int = 0
    intervals: int = 0
    fund_equity_e16: int = 0
    # loss name (clearing.risk.LOSSES) -> [(VaR, ES) at 99%, at 99.9%]
    tails_e16: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    coverage: Fraction | None = None
    equity_coverage: Fraction | None = None
    # What the horizon after it cost, from the recorded outputs of (start_seq, end_seq].
    liquidations: int = 0
    accounts: int = 0
    actual_e16: dict[str, int] = field(default_factory=dict)  # per LOSSES name
    paid_in_e16: int = 0  # deposits to the fund less withdrawals, inside the horizon
    fund_equity_end_e16: int = 0


class BackTestRun:
    """Builds a ``BackTest`` as the replay passes the episode."""

    def __init__(
        self,
        episode: LossEpisode,
        settings: Settings,
        jobs: int,
        tick_seqs: list[int],
        ticks: list[OracleTick],
    ) -> None:
        """``ticks``: the journal's stamped oracle history, ``tick_seqs`` the seq of each."""
        self.result = BackTest(episode, paid_in_e16=episode.paid_in_e16)
        self._settings, self._jobs = settings, jobs
        self._ticks = ticks[: bisect.bisect_right(tick_seqs, episode.start_seq)]
        self._steps: list[StepOutputs] = []

    def _inside(self, seq: int) -> bool:
        episode = self.result.episode
        return episode.start_seq < seq <= episode.end_seq

    def after(self, record: Record, engine: EngineCore) -> None:
        episode = self.result.episode
        if record.seq == episode.start_seq:
            self._assess(engine, self._ticks)
        elif self._inside(record.seq):
            self._steps.append(StepOutputs("all", record.payload, record.outputs.splitlines()))
        if record.seq == episode.end_seq:
            self._finish(engine)

    def _assess(self, engine: EngineCore, ticks: list[OracleTick]) -> None:
        result = self.result
        result.fund_equity_e16 = engine.summary().fund_equity_e16
        adequacy = assess(engine, ticks, self._settings, jobs=self._jobs) if ticks else None
        if adequacy is None:
            return
        result.scenarios, result.intervals = len(adequacy.outcomes), adequacy.intervals_available
        result.tails_e16 = {name: [(t.var, t.es) for t in adequacy.tails(name)] for name in LOSSES}
        result.coverage = adequacy.coverage("fund_draws")
        result.equity_coverage = adequacy.coverage("fund_equity_loss")

    def _finish(self, engine: EngineCore) -> None:
        result = self.result
        total = summarise(self._steps).total
        self._steps = []
        result.fund_equity_end_e16 = engine.summary().fund_equity_e16
        result.liquidations, result.accounts = total.liquidations, total.accounts_liquidated
        fell_e16 = result.fund_equity_e16 - (result.fund_equity_end_e16 - result.paid_in_e16)
        result.actual_e16 = {
            "fund_draws": total.fund_draw_e16,
            "clawback_and_adl": total.clawback_e16 + total.adl_e16,
            "bad_debt": total.bad_debt_e16,
            "fund_equity_loss": max(0, fell_e16),
        }
