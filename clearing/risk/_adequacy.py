"""Fund adequacy of one ledger: historical scenarios through the engine, and their tails.

The computation behind ``clearing risk``, apart from reading arguments and printing, so
that anything holding an engine and its oracle history (a background job, a report) runs
exactly the same thing.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final, NamedTuple

from clearing.engine import EngineCore
from clearing.risk._history import (
    HistoricalScenario,
    OracleTick,
    horizon_scenarios,
    sample,
    to_moves,
)
from clearing.risk._outcome import Outcome
from clearing.risk._runner import run_scenarios
from clearing.risk._stats import Tail, tail

__all__ = ["LEVELS", "LOSSES", "Adequacy", "Settings", "assess"]

# The confidence levels every report gives: 99% and 99.9%.
LEVELS: Final = (Fraction(99, 100), Fraction(999, 1000))
# The losses measured per scenario, in the order reports show them.
LOSSES: Final = ("fund_draws", "clawback_and_adl", "bad_debt", "fund_equity_loss")


class Settings(NamedTuple):
    horizon_ns: int
    step_ns: int | None = None  # default: the horizon
    window_ns: int | None = None  # default: the whole history
    scale: Fraction = Fraction(1)
    limit: int = 1000  # at most this many scenarios (a seeded sample beyond)
    seed: int = 1


class Adequacy(NamedTuple):
    """The scenarios run, their outcomes, and the fund's equity when they started."""

    chosen: list[HistoricalScenario]
    intervals_available: int
    outcomes: list[Outcome]
    fund_equity_e16: int

    def losses(self, name: str) -> list[int]:
        """One of ``LOSSES`` per scenario, e16, never negative."""
        totals = [o.total for o in self.outcomes]
        if name == "fund_draws":
            return [t.fund_draw_e16 for t in totals]
        if name == "clawback_and_adl":
            return [t.clawback_e16 + t.adl_e16 for t in totals]
        if name == "bad_debt":
            return [t.bad_debt_e16 for t in totals]
        if name == "fund_equity_loss":
            return [_equity_loss(o) for o in self.outcomes]
        raise ValueError(f"unknown loss {name!r}; one of {', '.join(LOSSES)}")

    def tails(self, name: str) -> list[Tail]:
        """VaR and ES of one loss at each of ``LEVELS``."""
        losses = self.losses(name)
        return [tail(losses, level) for level in LEVELS]

    def coverage(self, name: str) -> Fraction | None:
        """Fund equity / ES 99.9% of a loss (0 if the fund has none); None if that ES is 0."""
        es999 = self.tails(name)[-1].es
        return None if es999 == 0 else Fraction(max(0, self.fund_equity_e16), es999)

    def worst(self) -> int:
        """The index of the worst scenario: by fund draws, then clawbacks, bad debt,
        notional liquidated; the earliest of equals."""
        totals = [o.total for o in self.outcomes]
        return max(
            range(len(totals)),
            key=lambda i: (
                totals[i].fund_draw_e16,
                totals[i].clawback_e16 + totals[i].adl_e16,
                totals[i].bad_debt_e16,
                totals[i].notional_e16,
                -i,
            ),
        )


def _equity_loss(outcome: Outcome) -> int:
    """How far the fund's equity fell in a scenario (0 if it rose): unlike its draws, this
    includes the positions it took over, at the shocked marks, and the fees it earned."""
    before, after = outcome.fund_equity_before_e16, outcome.fund_equity_after_e16
    assert before is not None and after is not None  # assess always measures them
    return max(0, before - after)


def assess(
    engine: EngineCore, ticks: list[OracleTick], settings: Settings, jobs: int
) -> Adequacy | None:
    """Run the history's horizon scenarios on ``engine`` (left unchanged); None when the
    history is shorter than one horizon or no market has a mark."""
    summary = engine.summary()
    marks = {m.market: m.mark_e8 for m in summary.markets if m.mark_e8 is not None}
    history = horizon_scenarios(
        ticks, marks, settings.horizon_ns, settings.step_ns, settings.window_ns
    )
    if not marks or not history:
        return None
    chosen = sample(history, settings.limit, settings.seed)
    outcomes = run_scenarios(
        engine,
        [to_moves(s, marks, settings.scale) for s in chosen],
        jobs=jobs,
        measure_fund=True,
    )
    return Adequacy(chosen, len(history), outcomes, summary.fund_equity_e16)
