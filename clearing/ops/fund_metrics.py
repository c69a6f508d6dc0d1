"""The fund adequacy metrics: what the daemon's background ``clearing risk`` last found.

Fed by ``clearing.kafka._fund_risk`` when a computation finishes (every ``risk.interval_s``);
registered in the daemon's ``Metrics`` registry only when that job is on, so a daemon
without it exports none of these series (an absent ratio never looks like a healthy one).

The expected shortfall is of what the fund would *pay* (its draws) over one horizon, in
quote units; the coverage ratio is fund equity / ES 99.9%, +Inf when no scenario drew on
the fund (nothing to cover), so that ``< 1`` is the alert and nothing else is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from fractions import Fraction
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from clearing.engine.money import E16

__all__ = ["FundRiskMetrics"]

# The confidence levels of clearing.risk (99%, 99.9%), in its order, as label values.
_LEVEL_LABELS: Final = ("0.99", "0.999")


class FundRiskMetrics:
    """The gauges of the last adequacy computation, and a count of the failed ones."""

    def __init__(
        self, registry: CollectorRegistry, interval_s: float, started_ns: int | None = None
    ) -> None:
        self._assessed_ns = time.time_ns() if started_ns is None else started_ns
        self.interval_seconds = Gauge(
            "clearing_fund_risk_interval_seconds",
            "How often fund adequacy is recomputed (risk.interval_s).",
            registry=registry,
        )
        self.interval_seconds.set(interval_s)
        self.expected_shortfall_quote = Gauge(
            "clearing_fund_expected_shortfall",
            "Expected shortfall of the insurance fund's draws over one risk horizon, in quote "
            "units, by confidence level (historical scenarios on the committed ledger).",
            ["level"],
            registry=registry,
        )
        self.coverage_ratio = Gauge(
            "clearing_fund_coverage_ratio",
            "Insurance fund equity / ES 99.9% of its draws (+Inf when no scenario draws on "
            "the fund). Below 1 the fund would not cover its worst 0.1% of horizons.",
            registry=registry,
        )
        self.equity_coverage_ratio = Gauge(
            "clearing_fund_equity_coverage_ratio",
            "Insurance fund equity / ES 99.9% of its equity loss (+Inf when none loses).",
            registry=registry,
        )
        self.scenarios = Gauge(
            "clearing_fund_risk_scenarios",
            "Scenarios behind the last fund adequacy computation.",
            registry=registry,
        )
        self.assessed_seq = Gauge(
            "clearing_fund_risk_seq",
            "Ledger seq the last fund adequacy computation describes.",
            registry=registry,
        )
        self.duration_seconds = Gauge(
            "clearing_fund_risk_duration_seconds",
            "Wall-clock time the last fund adequacy computation took (in its child).",
            registry=registry,
        )
        self.age_seconds = Gauge(
            "clearing_fund_risk_age_seconds",
            "Seconds since the ledger state behind the last fund adequacy computation was "
            "taken (since process start if none has finished).",
            registry=registry,
        )
        self.age_seconds.set_function(self._age_s)
        self.failures = Counter(
            "clearing_fund_risk_failures",
            "Fund adequacy computations that gave no figures (too little oracle history, a "
            "failed scenario, a lost child).",
            registry=registry,
        )
        for gauge in (self.coverage_ratio, self.equity_coverage_ratio):
            gauge.set(math.nan)  # nothing known yet
        for level in _LEVEL_LABELS:
            self.expected_shortfall_quote.labels(level).set(math.nan)

    def _age_s(self) -> float:
        return max(0, time.time_ns() - self._assessed_ns) / 1e9

    def observe(
        self,
        *,
        seq: int,
        scenarios: int,
        fund_draws_es_e16: Sequence[int],
        coverage_ratio: str | None,
        equity_coverage_ratio: str | None,
        seconds: float,
        taken_ns: int,
    ) -> None:
        """A computation finished: ES of the fund draws per level (e16), the ratios as
        decimal strings (None: unbounded); ``taken_ns``: when its ledger state was taken."""
        self._assessed_ns = taken_ns
        for level, es_e16 in zip(_LEVEL_LABELS, fund_draws_es_e16, strict=True):
            self.expected_shortfall_quote.labels(level).set(es_e16 / E16)
        self.coverage_ratio.set(_ratio(coverage_ratio))
        self.equity_coverage_ratio.set(_ratio(equity_coverage_ratio))
        self.scenarios.set(scenarios)
        self.assessed_seq.set(seq)
        self.duration_seconds.set(seconds)

    def observe_failure(self) -> None:
        """A computation gave no figures; the last ones stay (and age)."""
        self.failures.inc()


def _ratio(text: str | None) -> float:
    """A result's ratio (a decimal string, None when unbounded) as a gauge value."""
    return math.inf if text is None else float(Fraction(text))
