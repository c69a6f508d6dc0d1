"""The figures of the rules-version-2 sections (SPEC §9): funding paid per market and
the volatility estimate with the fund's share of fees, per market, over time.

Laid out like every other time figure of the report (``_figures._new_figure``), so their
time axes line up with the ones above them on the page.
"""

from __future__ import annotations

import math
from typing import Any, Final

from clearing.engine.money import E8, E16
from clearing.report._collect import ReportData
from clearing.report._collect_v2 import RulesV2Data
from clearing.report._figures import (
    _COLOURS,
    Axis,
    _cumulative,
    _money,
    _money_axis,
    _new_figure,
    _sample_x,
    _time_axis,
)

__all__ = ["FIGURE_IDS_V2", "figures_v2"]

FIGURE_IDS_V2: Final = ("funding-over-time", "volatility-and-fee-share")
_LINE_STYLES: Final = ("-", (0, (6, 3)), (0, (2, 2)))


def _colour(data: ReportData, market: str) -> str:
    """The market's colour in every figure (its place in the report's market list)."""
    index = data.markets.index(market) if market in data.markets else 0
    return _COLOURS[index % len(_COLOURS)]


def _fig_funding(data: ReportData, v2: RulesV2Data, axis: Axis) -> Any:
    figure, (ax,) = _new_figure(3.2)
    for market in data.markets:
        rows = [r for r in v2.funding if r.market == market]
        if not rows:
            continue
        xs, ys = _cumulative([(axis.x(r.ts_ns, r.seq), r.paid_e16) for r in rows])
        ax.step(
            [axis.start, *xs, axis.end],
            [0.0, *ys, ys[-1]],
            where="post",
            color=_colour(data, market),
            lw=1.4,
            label=market,
        )
    if v2.funding:
        ax.legend(loc="upper left", fontsize="small")
    ax.set_title("Funding paid by the paying side, cumulative, per market")
    ax.set_ylabel(_money("cumulative funding"))
    _money_axis(ax)
    ax.grid(alpha=0.3)
    _time_axis(axis, [ax])
    return figure


def _fig_volatility(data: ReportData, v2: RulesV2Data, axis: Axis) -> Any:
    xs = _sample_x(data, axis)
    figure, (vol_ax, share_ax) = _new_figure(5.0, rows=2)
    for market in data.markets:
        colour = _colour(data, market)
        # sqrt(v): the typical relative move per tick, which the tiers' sigmas compare to.
        sigma = [math.sqrt(v / E16) for v in v2.sample_volatility_e16.get(market, [])]
        if sigma:
            vol_ax.plot(xs, sigma, color=colour, lw=1.0, label=market)
        shares = [s / E8 for s in v2.sample_fund_share_e8.get(market, [])]
        if shares:
            # Markets often share a value (1 by default): dashes keep each line visible.
            style = _LINE_STYLES[data.markets.index(market) % len(_LINE_STYLES)]
            share_ax.step(xs, shares, where="post", color=colour, lw=1.4, ls=style, label=market)
    from matplotlib.ticker import PercentFormatter

    vol_ax.set_title("Volatility estimate per market: sqrt(v), the typical move per tick")
    vol_ax.set_ylabel("sqrt(v)")
    vol_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    share_ax.set_title("Share of each liquidation fee that goes to the insurance fund")
    share_ax.set_ylabel("fund share")
    share_ax.set_ylim(-0.05, 1.05)
    share_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    # Shares sit at the top of their axis: the legend goes below them.
    for ax, where in ((vol_ax, "upper left"), (share_ax, "lower left")):
        ax.grid(alpha=0.3)
        if data.markets:
            ax.legend(loc=where, fontsize="small")
    _time_axis(axis, [vol_ax, share_ax])
    return figure


def figures_v2(data: ReportData, axis: Axis) -> dict[str, Any]:
    """Each version-2 figure id with the function that draws it; none for a version-1
    journal."""
    v2 = data.rules_v2
    if v2 is None:
        return {}
    return {
        "funding-over-time": lambda: _fig_funding(data, v2, axis),
        "volatility-and-fee-share": lambda: _fig_volatility(data, v2, axis),
    }
