"""The report's fund risk section as HTML: the loss distribution at the head, the coverage
ratio over time, the tails and the default stress grid (data: ``_risk.collect_risk``).

A section of its own (its figures are ``RISK_FIGURE_IDS``, drawn here), so the rest of
the report does not change when it is absent.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any, Final

from clearing.engine.money import E16
from clearing.report._figures import (
    MONEY_UNIT,
    Axis,
    _free_figure,
    _money_axis,
    _new_figure,
    _placeholder,
    _time_axis,
    png,
)
from clearing.report._numbers import display_e8, display_e16, plural
from clearing.report._risk import (
    CHECKPOINT_SCENARIOS,
    CHECKPOINTS,
    HEAD_SCENARIOS,
    CoveragePoint,
    RiskSection,
)

__all__ = ["RISK_FIGURE_IDS", "risk_figures", "risk_section_html"]

RISK_FIGURE_IDS: Final = ("risk-losses", "risk-coverage")
_FUND: Final = "#2ca02c"
_DRAWS: Final = "#d62728"
_EQUITY_LOSS: Final = "#ff7f0e"
_ES: Final = "#9467bd"
_LOSS_NAMES: Final = {
    "fund_draws": "fund draws",
    "clawback_and_adl": "clawbacks + ADL",
    "bad_debt": "bad debt",
    "fund_equity_loss": "fund equity loss",
}
# The same losses, named for one horizon (the back-test's rows).
_LOSSES_PER_HORIZON: Final = {
    **_LOSS_NAMES,
    "fund_equity_loss": "fund equity loss (net of top-ups)",
}
_BINS: Final = 40
_FLOOR: Final = 0.01  # the coverage plot's lowest value (log scale)


def _duration(ns: int) -> str:
    seconds = ns // 10**9
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def ratio(value: Fraction | None) -> str:
    """A coverage ratio to two places; "unbounded" when nothing drew on the fund."""
    if value is None:
        return "unbounded"
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return str(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def _fig_losses(section: RiskSection) -> Any:
    """Histogram of what the fund would pay per scenario (and its equity loss), with the
    99.9% ES and the fund's equity marked."""
    if not section.fund_draws_e16:
        return _placeholder("Loss distribution", "too little stamped oracle history")
    figure, (ax,) = _free_figure(3.6)
    draws = [v / E16 for v in section.fund_draws_e16]
    equity = [v / E16 for v in section.equity_loss_e16]
    top = max(max(draws), max(equity), section.fund_equity_e16 / E16, 1e-9)
    bins = [top * i / _BINS for i in range(_BINS + 1)]
    ax.hist(draws, bins=bins, color=_DRAWS, alpha=0.75, label="fund draws")
    ax.hist(equity, bins=bins, color=_EQUITY_LOSS, alpha=0.45, label="fund equity loss")
    ax.set_yscale("log")
    es = section.tails_e16["fund_draws"][-1][1] / E16
    ax.axvline(es, color=_ES, linestyle="--", label=f"ES 99.9% of draws: {es:,.2f}")
    fund = section.fund_equity_e16 / E16
    ax.axvline(fund, color=_FUND, linewidth=2, label=f"fund equity now: {fund:,.2f}")
    _money_axis(ax, "x")
    ax.set_xlabel(f"loss over one {_duration(section.horizon_ns)} horizon ({MONEY_UNIT})")
    ax.set_ylabel("scenarios (log)")
    ax.set_title(
        f"Loss distribution at seq {section.seq:,}: {plural(len(draws), 'historical scenario')}"
    )
    ax.legend(loc="upper right", fontsize="small")
    return figure


def _fig_coverage(section: RiskSection, axis: Axis) -> Any:
    points = section.coverage_over_time
    if not points:
        return _placeholder("Coverage over time", "too little stamped oracle history")
    figure, (top, bottom) = _new_figure(5.0, rows=2)
    xs = [axis.x(p.ts_ns, p.seq) for p in points]
    # A log scale: coverage spans decades; 0 (a fund without equity) sits on the floor.
    bounded = [
        (x, max(_FLOOR, float(p.coverage)))
        for x, p in zip(xs, points, strict=True)
        if p.coverage is not None
    ]
    unbounded = [x for x, p in zip(xs, points, strict=True) if p.coverage is None]
    ceiling = max([10.0, *(y for _, y in bounded)]) * 3
    top.set_yscale("log")
    if bounded:
        top.plot(*zip(*bounded, strict=True), marker="o", color=_FUND, label="coverage")
    if unbounded:
        top.plot(unbounded, [ceiling] * len(unbounded), "^", color="#1f77b4",
                 label="unbounded (no scenario drew on the fund)")  # fmt: skip
    top.axhline(1.0, color=_DRAWS, linestyle="--", label="1: fund = ES 99.9%")
    top.set_ylim(_FLOOR / 2, ceiling * 3)
    top.set_ylabel("fund equity / ES 99.9%")
    top.set_title("Coverage ratio over time")
    top.legend(loc="best", fontsize="small")
    bottom.plot(xs, [p.fund_equity_e16 / E16 for p in points], marker="o", color=_FUND,
                label="fund equity")  # fmt: skip
    bottom.plot(xs, [p.es999_e16 / E16 for p in points], marker="s", color=_ES,
                label="ES 99.9% of fund draws")  # fmt: skip
    _money_axis(bottom)
    bottom.set_ylabel(MONEY_UNIT)
    bottom.legend(loc="upper left", fontsize="small")
    _time_axis(axis, [top, bottom])
    return figure


def risk_figures(section: RiskSection, axis: Axis) -> dict[str, Callable[[], Any]]:
    return {
        "risk-losses": lambda: _fig_losses(section),
        "risk-coverage": lambda: _fig_coverage(section, axis),
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(
        f'<th class="{"num" if i else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if i else ""}">{html.escape(cell)}</td>'
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(headers)}">none</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tails_table(section: RiskSection) -> str:
    rows = [
        [label, *(display_e16(v) for level in section.tails_e16[name] for v in level)]
        for name, label in _LOSS_NAMES.items()
    ]
    return _table(["per scenario", "VaR 99%", "ES 99%", "VaR 99.9%", "ES 99.9%"], rows)


def _grid_table(section: RiskSection) -> str:
    rows = []
    for row in section.grid:
        move = Fraction(row.price_e8 - row.mark_e8, row.mark_e8) * 100
        rows.append(
            [
                row.market,
                f"{float(move):+.0f}%",
                f"{display_e8(row.mark_e8)} -> {display_e8(row.price_e8)}",
                f"{row.liquidations:,}",
                f"{row.accounts:,}",
                display_e16(row.fund_draw_e16),
                display_e16(row.shared_e16),
                display_e16(row.bad_debt_e16),
                display_e16(row.fund_equity_after_e16),
            ]
        )
    headers = ["market", "move", "mark", "liquidations", "accounts", "fund draws"]
    headers += ["clawbacks + ADL", "bad debt", "fund equity after"]
    return _table(headers, rows)


def _backtest_html(section: RiskSection, axis: Axis) -> str:
    """What ``clearing risk`` said just before the journal's largest fund loss over one
    horizon, against what that horizon cost (``_backtest``)."""
    test = section.backtest
    if test is None:
        return (
            "<h3>Back-test</h3><p>None: the fund's equity, net of top-ups, never fell over "
            "one horizon (or the history is too short for a horizon).</p>"
        )
    episode, horizon = test.episode, _duration(section.horizon_ns)
    at = axis.text(episode.start_ts_ns, episode.start_seq)
    said = (
        f"<code>clearing risk --until {episode.start_seq} --horizon {horizon} --step "
        f"{_duration(section.step_ns)}</code> on the ledger there ran "
        f"{plural(test.scenarios, 'scenario')} ({test.intervals:,} intervals of the history "
        f"before it): coverage <b>{ratio(test.coverage)}</b>, equity coverage "
        f"<b>{ratio(test.equity_coverage)}</b>."
    )
    if not test.scenarios:
        said = "The oracle history before it is shorter than one horizon: nothing to say."
    rows = [
        [
            label,
            *(display_e16(v) for level in test.tails_e16.get(name, []) for v in level),
            display_e16(test.actual_e16[name]),
        ]
        for name, label in _LOSSES_PER_HORIZON.items()
    ]
    headers = ["over one horizon"]
    if test.scenarios:
        headers += ["VaR 99%", "ES 99%", "VaR 99.9%", "ES 99.9%"]
    headers.append(f"actual, seq {episode.start_seq + 1:,}..{episode.end_seq:,}")
    paid = ""
    if test.paid_in_e16:
        paid = f", of which {display_e16(test.paid_in_e16)} paid in from outside"
    return (
        "<h3>Back-test: the journal's largest fund loss</h3>"
        "<p>The rule: after every input, the fund's equity less what was paid into it "
        "from outside (deposits net of withdrawals: a top-up is not a gain); for every "
        f"input, how far that fell over the {horizon} horizon after it (the inputs stamped "
        "within one horizon). The input with the largest fall starts the episode, and the "
        "back-test asks about the ledger at that input, just before the loss.</p>"
        f"<p>Here: seq {episode.start_seq:,} ({at} UTC), "
        f"fund equity {display_e16(test.fund_equity_e16)}; over the next {horizon} "
        f"(to seq {episode.end_seq:,}) it fell by {display_e16(episode.loss_e16)} net of "
        f"top-ups, to {display_e16(test.fund_equity_end_e16)}{paid}, with "
        f"{test.liquidations:,} liquidations of {plural(test.accounts, 'account')}. "
        f"{said}</p>"
        f"{_table(headers, rows)}"
    )


def _coverage_rows(points: Sequence[CoveragePoint], axis: Axis) -> str:
    rows = [
        [
            axis.text(p.ts_ns, p.seq),
            f"{p.seq:,}",
            str(p.scenarios),
            display_e16(p.fund_equity_e16),
            display_e16(p.es999_e16),
            ratio(p.coverage),
        ]
        for p in points
    ]
    return _table(["at", "seq", "scenarios", "fund equity", "ES 99.9%", "coverage"], rows)


def risk_section_html(section: RiskSection, axis: Axis) -> str:
    """The whole section: heading, method, figures and tables."""
    figure_html = "".join(
        f'<figure id="fig-{fig_id}" class="risk"><img alt="{fig_id}" '
        f'src="data:image/png;base64,{png(draw())}"></figure>'
        for fig_id, draw in risk_figures(section, axis).items()
    )
    if section.horizon_ns:
        method = (
            f"Historical simulation on the ledger at seq {section.seq:,} "
            f"({section.core} core): every {_duration(section.horizon_ns)} interval of the "
            f"journal's stamped oracle ticks, ending every {_duration(section.step_ns)} "
            f"({section.intervals:,} intervals; at most {HEAD_SCENARIOS:,} run, a seeded "
            "sample beyond), each market moved by its historical return, unscaled, through "
            "the real engine on a copy of the ledger (<code>clearing risk</code>). The "
            "horizon is the longest round duration at most a twelfth of the history. "
            f"Coverage = fund equity / ES 99.9% of its draws: <b>{ratio(section.coverage)}</b>; "
            "equity coverage = fund equity / ES 99.9% of how far its equity falls (the "
            "positions it holds and takes over move too): "
            f"<b>{ratio(section.equity_coverage)}</b>."
        )
        tails = _tails_table(section)
    else:
        method = (
            "No adequacy: the journal's stamped oracle ticks span less than two horizons "
            "of a second, so there is no historical scenario to run."
        )
        tails = ""
    return (
        '<h2 id="fund-risk">Fund risk: is the insurance fund big enough?</h2>'
        f"<p>{method}</p>"
        f"{tails}"
        f"{figure_html}"
        "<h3>Coverage over time</h3>"
        f"<p>Recomputed at {CHECKPOINTS} evenly spaced seqs of the journal (the last is the "
        f"head), each from the oracle history up to it, at most {CHECKPOINT_SCENARIOS} "
        "scenarios before the head: the cost is bounded whatever the journal's length.</p>"
        f"{_coverage_rows(section.coverage_over_time, axis)}"
        f"{_backtest_html(section, axis)}"
        "<h3>Stress grid at the head</h3>"
        "<p>Each market alone, its mark moved by -50, -30, -20, -10, +10, +20, +30 and "
        "+50% (<code>clearing stress --grid</code>); the books as they are.</p>"
        f"{_grid_table(section)}"
    )
