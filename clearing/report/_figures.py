"""The report's figures: matplotlib on the Agg canvas, each returned as base64 PNG.

The object API only (no pyplot, no global state, no display). Floats are made here, only
to draw; every number a reader is told exactly comes from ``_render``.

Every figure with a time axis has the same width, the same left and right margins in
inches and the same x range, so stacked on the page their time axes line up: a moment is
at the same horizontal position in every one of them.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from clearing.engine.money import E8, E16
from clearing.report._collect import ReportData
from clearing.report._numbers import display_e16, plural

__all__ = ["FIGURE_IDS", "MONEY_UNIT", "TIME_BINS", "Axis", "figures", "png", "time_bin"]

# Amounts and prices are in the ledger's one cash unit: whatever the markets are quoted
# in (the SPEC names no currency). Axis labels say "(quote)"; the page explains it once.
MONEY_UNIT: Final = "quote"
# About this many bins in the liquidation-volume histogram, at a round width.
TIME_BINS: Final = 60
PRICE_BINS: Final = 40
_DPI: Final = 100
_WIDTH_IN: Final = 10.0
# Fixed margins of the time figures (inches): room for two-line labels and tick labels
# such as "-2.5 M" on the left, so no figure's plot area starts further right than another's.
_LEFT_IN: Final = 1.25
_RIGHT_IN: Final = 0.3
_TOP_IN: Final = 0.4
_BOTTOM_IN: Final = 0.65
_NS_PER_DAY: Final = 86_400 * 10**9
# Round bin widths for the time histogram, in seconds.
_TIME_STEPS_S: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600)
# One colour per market, stable across figures (matplotlib's default cycle).
_COLOURS: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
_DEPOSIT_COLOUR: Final = "#2ca02c"
# Deposits annotated with their amount on the fund plot; every one is in the table.
_ANNOTATED_DEPOSITS: Final = 6

FIGURE_IDS: Final = (
    "marks",
    "fund-equity",
    "fund-to-oi",
    "open-interest",
    "liquidations-by-time",
    "liquidations-by-price",
    "waterfall-over-time",
    "deficit-coverage",
)


def _money(label: str) -> str:
    return f"{label} ({MONEY_UNIT})"


class Axis:
    """Maps an input's (ts, seq) to the x coordinate of every figure.

    With timestamps, x is a matplotlib date (days since 1970-01-01 UTC); inputs before
    the first stamped one take its time. Without any, x is the seq. ``start`` and ``end``
    are the first and last sample: every time figure shows exactly that range.
    """

    def __init__(self, data: ReportData) -> None:
        self.by_time = data.has_ts
        self.first_ts_ns = next((ts for ts in data.sample_ts_ns if ts is not None), 0)
        xs = [self.x(ts, seq) for ts, seq in zip(data.sample_ts_ns, data.sample_seq, strict=True)]
        self.start = min(xs, default=0.0)
        self.end = max(xs, default=1.0)
        if self.end <= self.start:
            self.end = self.start + (60 / 86_400 if self.by_time else 1.0)

    def x(self, ts_ns: int | None, seq: int) -> float:
        if not self.by_time:
            return float(seq)
        return (ts_ns if ts_ns is not None else self.first_ts_ns) / _NS_PER_DAY

    @property
    def label(self) -> str:
        return "time (UTC)" if self.by_time else "input seq"

    def text(self, ts_ns: int | None, seq: int) -> str:
        if not self.by_time:
            return f"seq {seq:,}"
        stamp = ts_ns if ts_ns is not None else self.first_ts_ns
        moment = datetime.fromtimestamp(stamp // 10**9, tz=UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S")


def time_bin(axis: Axis) -> tuple[float, str]:
    """A round bin width for about ``TIME_BINS`` bins over the run: (width in x, words)."""
    if axis.by_time:
        span_s = (axis.end - axis.start) * 86_400
        step_s = next((s for s in _TIME_STEPS_S if span_s / s <= TIME_BINS), None)
        if step_s is None:
            days = max(1, math.ceil(span_s / TIME_BINS / 86_400))
            return float(days), "1 day" if days == 1 else f"{days} days"
        if step_s < 60:
            words = f"{step_s} s"
        elif step_s < 3600:
            words = f"{step_s // 60} min"
        else:
            words = f"{step_s // 3600} h"
        return step_s / 86_400, words
    span = axis.end - axis.start
    magnitude = 10 ** max(0, math.floor(math.log10(max(1.0, span / TIME_BINS))))
    step = next(m * magnitude for m in (1, 2, 5, 10) if span / (m * magnitude) <= TIME_BINS)
    return float(step), plural(step, "input")


# -- layout -------------------------------------------------------------------------------


def _new_figure(
    height_in: float, rows: int = 1, sharey: bool = False, top_in: float = _TOP_IN
) -> tuple[Any, list[Any]]:
    """A figure with a time axis: fixed side margins, shared x (see the module docstring).

    ``top_in`` only moves the plots down (room for a legend above them), never sideways.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(_WIDTH_IN, height_in), dpi=_DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, sharex=True, sharey=sharey, squeeze=False)[:, 0]
    figure.subplots_adjust(
        left=_LEFT_IN / _WIDTH_IN,
        right=1 - _RIGHT_IN / _WIDTH_IN,
        top=1 - top_in / height_in,
        bottom=_BOTTOM_IN / height_in,
        hspace=0.35 if rows > 1 else 0.2,
    )
    return figure, list(axes)


def _free_figure(height_in: float, rows: int = 1) -> tuple[Any, list[Any]]:
    """A figure without a time axis: laid out to fit its own labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(_WIDTH_IN, height_in), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, squeeze=False)[:, 0]
    return figure, list(axes)


def png(figure: Any) -> str:
    """The figure as base64 PNG, for a data: URL."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _time_axis(axis: Axis, axes: Sequence[Any]) -> None:
    """The same x range on every time figure, the time labels under the last panel."""
    last = axes[-1]
    # A little room at both ends, so the first and last moments are not on the frame.
    margin = (axis.end - axis.start) * 0.01
    last.set_xlim(axis.start - margin, axis.end + margin)
    if axis.by_time:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        last.xaxis.set_major_locator(locator)
        last.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    last.set_xlabel(axis.label)


def _money_axis(ax: Any, axis_name: str = "y") -> None:
    from matplotlib.ticker import EngFormatter

    getattr(ax, f"{axis_name}axis").set_major_formatter(EngFormatter())


def _sample_x(data: ReportData, axis: Axis) -> list[float]:
    return [axis.x(ts, seq) for ts, seq in zip(data.sample_ts_ns, data.sample_seq, strict=True)]


def _placeholder(title: str, text: str) -> Any:
    """A small figure saying there is nothing to draw, so every figure is always there."""
    figure, (ax,) = _free_figure(1.2)
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.4, text, transform=ax.transAxes, ha="center", color="#666666")
    return figure


# -- figures ------------------------------------------------------------------------------


def _fig_marks(data: ReportData, axis: Axis) -> Any:
    if not data.markets:
        return _placeholder("Mark price per market", "no markets in this journal")
    xs = _sample_x(data, axis)
    figure, axes = _new_figure(1.2 + 1.6 * len(data.markets), rows=len(data.markets))
    held_by_market: dict[str, list[tuple[float, float]]] = {}
    for row in data.held_ticks:
        held_by_market.setdefault(row.market, []).append(
            (axis.x(row.ts_ns, row.seq), row.price_e8 / E8)
        )
    for i, (ax, market) in enumerate(zip(axes, data.markets, strict=True)):
        marks = data.sample_mark_e8[market]
        points = [(x, m / E8) for x, m in zip(xs, marks, strict=True) if m is not None]
        if points:
            ax.plot(*zip(*points, strict=True), color=_COLOURS[i % len(_COLOURS)], lw=1.0)
        held = held_by_market.get(market)
        if held:
            ax.scatter(
                *zip(*held, strict=True),
                marker="x",
                color="black",
                zorder=3,
                label="tick held by the oracle guard",
            )
            ax.legend(loc="best", fontsize="small")
        ax.set_ylabel(f"{market}\n{_money('mark')}")
        ax.grid(alpha=0.3)
    axes[0].set_title("Mark price per market")
    _time_axis(axis, axes)
    return figure


def _fig_fund_equity(data: ReportData, axis: Axis) -> Any:
    xs = _sample_x(data, axis)
    figure, (ax, ax_positions) = _new_figure(5.8, rows=2, top_in=1.0)
    equity = [v / E16 for v in data.sample_fund_equity_e16]
    ax.plot(xs, equity, color="#1f77b4", lw=1.4, label="equity (cash + positions at the mark)")
    if data.fund_top_ups:
        # What the fund would hold had nobody deposited to it: equity minus every deposit
        # so far. The gap between the two lines is the money put in.
        deposits = sorted(data.fund_top_ups, key=lambda r: r.seq)
        without: list[float] = []
        deposited_e16, next_deposit = 0, 0
        for seq, equity_e16 in zip(data.sample_seq, data.sample_fund_equity_e16, strict=True):
            while next_deposit < len(deposits) and deposits[next_deposit].seq <= seq:
                deposited_e16 += deposits[next_deposit].amount_e16
                next_deposit += 1
            without.append((equity_e16 - deposited_e16) / E16)
        ax.plot(xs, without, color="#555555", lw=1.0, ls="--", label="equity without deposits")
    ax.fill_between(
        xs,
        equity,
        0,
        where=[e < 0 for e in equity],
        color="#d62728",
        alpha=0.2,
        interpolate=True,
        label="equity below zero: the fund can pay nothing",
    )
    ax.axhline(0, color="black", lw=0.6)
    _mark_deposits(data, axis, ax)
    _mark_lowest(data, axis, ax)
    figure.suptitle("Insurance fund: equity, deposits to it, and the positions it took over")
    ax.set_ylabel(_money("fund equity"))
    # Above the plot: inside it would cover the line, the deposits or their labels.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=2, fontsize="small")
    positions = [
        (e - c) / E16
        for e, c in zip(data.sample_fund_equity_e16, data.sample_fund_cash_e16, strict=True)
    ]
    ax_positions.plot(xs, positions, color="#8c564b", lw=1.0)
    ax_positions.axhline(0, color="black", lw=0.6)
    ax_positions.set_title(
        "Positions taken over from liquidated accounts: net value at the mark "
        "(longs positive, shorts negative)",
        fontsize="medium",
    )
    ax_positions.set_ylabel(_money("net value"))
    for each in (ax, ax_positions):
        _money_axis(each)
        each.grid(alpha=0.3)
    _time_axis(axis, [ax, ax_positions])
    return figure


def _mark_deposits(data: ReportData, axis: Axis, ax: Any) -> None:
    """Each deposit to the fund: a vertical line, the largest few labelled with the amount."""
    largest = sorted(data.fund_top_ups, key=lambda r: (-r.amount_e16, r.seq))
    labelled = {r.seq for r in largest[:_ANNOTATED_DEPOSITS]}
    for row in data.fund_top_ups:
        x = axis.x(row.ts_ns, row.seq)
        ax.axvline(x, color=_DEPOSIT_COLOUR, lw=1.0, ls=":")
        if row.seq in labelled:
            ax.annotate(
                f"deposit +{display_e16(row.amount_e16, 0)}",
                xy=(x, 0.97),
                xycoords=("data", "axes fraction"),
                xytext=(4, 0),
                textcoords="offset points",
                va="top",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
                color="#1a6e1a",
                fontsize="small",
                fontweight="bold",
            )
    if data.fund_top_ups:
        ax.plot([], [], color=_DEPOSIT_COLOUR, ls=":", label="deposit to the fund (amount)")
        # Headroom over the line for the labels.
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + (high - low) * 0.18)


def _mark_lowest(data: ReportData, axis: Axis, ax: Any) -> None:
    equity = data.sample_fund_equity_e16
    if not equity or min(equity) >= 0:
        return
    i = equity.index(min(equity))
    x = axis.x(data.sample_ts_ns[i], data.sample_seq[i])
    ax.annotate(
        f"lowest {display_e16(equity[i], 0)}",
        xy=(x, equity[i] / E16),
        xytext=(-8, 0),
        textcoords="offset points",
        ha="right",
        color="#b00020",
        fontsize="small",
        fontweight="bold",
        va="center",
    )


def oi_notional(data: ReportData, market: str) -> list[float]:
    marks = data.sample_mark_e8[market]
    return [
        (qty * mark) / E16 if mark is not None else 0.0
        for qty, mark in zip(data.sample_long_oi_e8[market], marks, strict=True)
    ]


# The fund/OI ratio is drawn only where open interest is at least this share of its peak:
# before that (the first minutes of a run) it is huge and says nothing.
_SETTLED_OI_SHARE: Final = 0.1


def _fig_fund_to_oi(data: ReportData, axis: Axis) -> Any:
    xs = _sample_x(data, axis)
    totals = [0.0] * len(xs)
    for market in data.markets:
        for i, value in enumerate(oi_notional(data, market)):
            totals[i] += value
    peak = max(totals, default=0.0)
    settled = [peak > 0 and total >= peak * _SETTLED_OI_SHARE for total in totals]
    ratio = [
        (100 * equity / E16 / total) if ok else float("nan")
        for equity, total, ok in zip(data.sample_fund_equity_e16, totals, settled, strict=True)
    ]
    figure, (ax,) = _new_figure(3.2)
    ax.plot(xs, ratio, color="#9467bd", lw=1.2)
    ax.axhline(0, color="black", lw=0.6)
    shown = [r for r, ok in zip(ratio, settled, strict=True) if ok]
    if shown:
        low, high = min(0.0, min(shown)), max(0.0, max(shown))
        margin = (high - low) * 0.08 or 1.0
        ax.set_ylim(low - margin, high + margin)
    unsettled_until = next((x for x, ok in zip(xs, settled, strict=True) if ok), None)
    if unsettled_until is not None and unsettled_until > axis.start:
        ax.axvspan(axis.start, unsettled_until, color="#eeeeee", zorder=0)
        ax.text(
            (axis.start + unsettled_until) / 2,
            0.04,
            "not drawn:\nopen interest\n< 10% of its peak",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize="small",
            color="#555555",
        )
    ax.set_ylabel("fund equity /\nopen interest (%)")
    ax.set_title("Insurance fund to open interest")
    ax.grid(alpha=0.3)
    _time_axis(axis, [ax])
    return figure


def _fig_open_interest(data: ReportData, axis: Axis) -> Any:
    xs = _sample_x(data, axis)
    figure, (ax,) = _new_figure(3.6)
    series = [oi_notional(data, market) for market in data.markets]
    if xs and series:
        colours = [_COLOURS[i % len(_COLOURS)] for i in range(len(series))]
        ax.stackplot(xs, *series, labels=data.markets, colors=colours, alpha=0.8)
        ax.legend(loc="upper left", fontsize="small")
    ax.set_title("Open interest (long side, at the mark), stacked by market")
    ax.set_ylabel(_money("open interest"))
    _money_axis(ax)
    ax.grid(alpha=0.3)
    _time_axis(axis, [ax])
    return figure


def _fig_liquidations_by_time(data: ReportData, axis: Axis) -> Any:
    import numpy as np
    from matplotlib.ticker import NullFormatter

    markets = [m for m in data.markets if any(r.market == m for r in data.liquidations)]
    if not markets:
        return _placeholder("Liquidation volume over time", "no liquidations in this journal")
    width, words = time_bin(axis)
    # Bins on round boundaries (whole minutes, whole thousands of inputs) from the start.
    first = math.floor(axis.start / width) * width
    count = max(1, math.ceil((axis.end - first) / width))
    edges = first + width * np.arange(count + 1)
    figure, axes = _new_figure(1.3 + 1.25 * len(markets), rows=len(markets), sharey=True)
    smallest = math.inf
    for ax, market in zip(axes, markets, strict=True):
        rows = [r for r in data.liquidations if r.market == market]
        volume, _ = np.histogram(
            [axis.x(r.ts_ns, r.seq) for r in rows],
            bins=edges,
            weights=[r.notional_e16 / E16 for r in rows],
        )
        colour = _COLOURS[data.markets.index(market) % len(_COLOURS)]
        ax.bar(edges[:-1], volume, width=width, align="edge", color=colour, edgecolor="white")
        smallest = min(smallest, float(volume[volume > 0].min()))
        ax.set_ylabel(f"{market}\n{_money('notional')}")
        ax.set_yscale("log")
        _money_axis(ax)
        # Labels on the decades only: a lone "6x10^2" between them reads as a typo.
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=smallest / 2)
    axes[0].set_title(f"Liquidation volume over time: notional closed per {words} bin (log scale)")
    _time_axis(axis, axes)
    return figure


def _fig_liquidations_by_price(data: ReportData) -> Any:
    import numpy as np

    markets = data.markets
    if not markets:
        return _placeholder("Liquidation volume by price", "no markets in this journal")
    figure, axes = _free_figure(1.0 + 1.9 * len(markets), rows=len(markets))
    for i, (ax, market) in enumerate(zip(axes, markets, strict=True)):
        rows = [r for r in data.liquidations if r.market == market]
        ax.set_ylabel(f"{market}\n{_money('notional')}")
        ax.grid(alpha=0.3)
        if not rows:
            ax.text(0.5, 0.5, "no liquidations", transform=ax.transAxes, ha="center")
            ax.set_xlabel(_money(f"{market} mark at liquidation"))
            continue
        marks = [r.mark_e8 / E8 for r in rows]
        low, high = min(marks), max(marks)
        if high <= low:
            low, high = low * 0.99, high * 1.01
        volume, edges = np.histogram(
            marks, bins=PRICE_BINS, range=(low, high), weights=[r.notional_e16 / E16 for r in rows]
        )
        ax.stairs(volume, edges, fill=True, color=_COLOURS[i % len(_COLOURS)])
        _money_axis(ax)
        bin_width = (high - low) / PRICE_BINS
        ax.set_xlabel(f"{market} mark at liquidation ({MONEY_UNIT}; bins {bin_width:,.4g} wide)")
    axes[0].set_title("Liquidation volume by price")
    return figure


def _cumulative(points: Sequence[tuple[float, int]]) -> tuple[list[float], list[float]]:
    """Running total at each distinct x (events of one input share an x: one step)."""
    xs: list[float] = []
    ys: list[float] = []
    total = 0
    for x, amount_e16 in sorted(points):
        total += amount_e16
        if xs and xs[-1] == x:
            ys[-1] = total / E16
        else:
            xs.append(x)
            ys.append(total / E16)
    return xs, ys


def _fig_waterfall_over_time(data: ReportData, axis: Axis) -> Any:
    figure, (ax,) = _new_figure(3.6)

    def points(rows: Sequence[Any], amount: Callable[[Any], int]) -> list[tuple[float, int]]:
        return [(axis.x(r.ts_ns, r.seq), amount(r)) for r in rows]

    layers = [
        (
            "liquidation fees (to the fund)",
            "#2ca02c",
            points(data.liquidations, lambda r: r.fee_e16),
        ),
        ("fund draws", "#1f77b4", points(data.fund_draws, lambda r: r.amount_e16)),
        ("clawbacks", "#ff7f0e", points(data.clawbacks, lambda r: r.amount_e16)),
        ("bad debt", "#d62728", points(data.bad_debts, lambda r: r.amount_e16)),
    ]
    for label, colour, layer_points in layers:
        xs, ys = _cumulative(layer_points)
        ax.step(
            [axis.start, *xs, axis.end],
            [0.0, *ys, ys[-1] if ys else 0.0],
            where="post",
            color=colour,
            lw=1.4,
            label=label,
        )
    ax.set_title("Loss waterfall over time (cumulative amounts)")
    ax.set_ylabel(_money("cumulative amount"))
    _money_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    _time_axis(axis, [ax])
    return figure


def _fig_deficit_coverage(data: ReportData) -> Any:
    figure, (ax,) = _free_figure(2.2)
    parts = [
        ("insurance fund", "#1f77b4", sum(r.amount_e16 for r in data.fund_draws)),
        ("clawbacks", "#ff7f0e", sum(r.amount_e16 for r in data.clawbacks)),
        ("bad debt", "#d62728", sum(r.amount_e16 for r in data.bad_debts)),
    ]
    left = 0.0
    for label, colour, amount_e16 in parts:
        width = amount_e16 / E16
        ax.barh([0], [width], left=left, color=colour, label=f"{label}: {display_e16(amount_e16)}")
        left += width
    ax.set_yticks([])
    ax.set_title("Who covered the deficits of liquidated accounts")
    ax.set_xlabel(_money("amount"))
    _money_axis(ax, "x")
    # Below the axis label, inside the layout: amounts too small to see as a bar still
    # have their number here.
    figure.legend(loc="outside lower center", ncol=3, fontsize="small", frameon=False)
    return figure


def figures(data: ReportData, axis: Axis) -> dict[str, Callable[[], Any]]:
    """Each figure id (``FIGURE_IDS`` order) with the function that draws it (a matplotlib
    ``Figure``; ``png`` encodes it)."""
    return {
        "marks": lambda: _fig_marks(data, axis),
        "fund-equity": lambda: _fig_fund_equity(data, axis),
        "fund-to-oi": lambda: _fig_fund_to_oi(data, axis),
        "open-interest": lambda: _fig_open_interest(data, axis),
        "liquidations-by-time": lambda: _fig_liquidations_by_time(data, axis),
        "liquidations-by-price": lambda: _fig_liquidations_by_price(data),
        "waterfall-over-time": lambda: _fig_waterfall_over_time(data, axis),
        "deficit-coverage": lambda: _fig_deficit_coverage(data),
    }
