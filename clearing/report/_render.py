"""Turn collected report data into one self-contained HTML page.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
state, no display) and embedded as base64 PNG, so the page is a single file that opens
anywhere and can be archived with the journal it describes. Exact amounts are formatted
from integers; floats are made here, only to draw.

The headline numbers are also embedded as JSON (``<script id="report-summary">``), with
every amount an exact decimal string, for tools that read the report.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from clearing.engine.money import E8, E16, format_e8, format_e16
from clearing.report._collect import ClawbackRow, LiquidationRow, ReportData

__all__ = ["FIGURE_IDS", "display_e16", "plural", "render_html", "summary"]

# Rows in the "largest" tables: enough to see who mattered, short enough to read.
TOP_ROWS: Final = 15
# Bins of the liquidation-volume histograms.
TIME_BINS: Final = 60
PRICE_BINS: Final = 40
_DPI: Final = 100
_WIDTH_IN: Final = 10.0
_NS_PER_DAY: Final = 86_400 * 10**9
# One colour per market, stable across figures (matplotlib's default cycle).
_COLOURS: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")

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


# -- numbers ----------------------------------------------------------------------------


def display_e16(value_e16: int, places: int = 2) -> str:
    """An exact e16 amount rounded half-even for display, with thousands separators."""
    quantum = Decimal(1).scaleb(-places)
    rounded = (Decimal(value_e16) / E16).quantize(quantum, rounding=ROUND_HALF_EVEN)
    return f"{rounded:,}"


def _display_e8(value_e8: int, places: int = 4) -> str:
    quantum = Decimal(1).scaleb(-places)
    rounded = (Decimal(value_e8) / E8).quantize(quantum, rounding=ROUND_HALF_EVEN)
    return f"{rounded.normalize():,f}" if rounded else "0"


def plural(count: int, noun: str) -> str:
    """``"1 draw"``, ``"1,234 draws"``."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _ratio_text(numerator_e16: int, denominator_e16: int) -> str | None:
    """An exact ratio rounded to 6 decimals, as text; None when the denominator is 0."""
    if denominator_e16 == 0:
        return None
    value = (Decimal(numerator_e16) / Decimal(denominator_e16)).quantize(
        Decimal("0.000001"), rounding=ROUND_HALF_EVEN
    )
    return str(value)


# -- time axis ----------------------------------------------------------------------------


class _Axis:
    """Maps an input's (ts, seq) to the x coordinate of every figure.

    With timestamps, x is a matplotlib date (days since 1970-01-01 UTC); inputs before
    the first stamped one take its time. Without any, x is the seq.
    """

    def __init__(self, data: ReportData) -> None:
        self.by_time = data.has_ts
        self.first_ts_ns = next((ts for ts in data.sample_ts_ns if ts is not None), 0)

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


# -- figures ------------------------------------------------------------------------------


def _new_figure(height_in: float, rows: int = 1, sharex: bool = True) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(_WIDTH_IN, height_in), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
    return figure, list(axes)


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _time_axis(axis: _Axis, ax: Any) -> None:
    if axis.by_time:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlabel(axis.label)


def _money_axis(ax: Any, axis_name: str = "y") -> None:
    from matplotlib.ticker import EngFormatter

    getattr(ax, f"{axis_name}axis").set_major_formatter(EngFormatter())


def _sample_x(data: ReportData, axis: _Axis) -> list[float]:
    return [axis.x(ts, seq) for ts, seq in zip(data.sample_ts_ns, data.sample_seq, strict=True)]


def _placeholder(title: str, text: str) -> str:
    """A small figure saying there is nothing to draw, so every figure is always there."""
    figure, (ax,) = _new_figure(1.2)
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.4, text, transform=ax.transAxes, ha="center", color="#666666")
    return _png(figure)


def _fig_marks(data: ReportData, axis: _Axis) -> str:
    if not data.markets:
        return _placeholder("Mark price per market", "no markets in this journal")
    xs = _sample_x(data, axis)
    figure, axes = _new_figure(1.0 + 1.6 * len(data.markets), rows=len(data.markets))
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
        ax.set_ylabel(market)
        ax.grid(alpha=0.3)
    axes[0].set_title("Mark price per market")
    _time_axis(axis, axes[-1])
    return _png(figure)


def _fig_fund_equity(data: ReportData, axis: _Axis) -> str:
    xs = _sample_x(data, axis)
    figure, (ax, ax_positions) = _new_figure(4.6, rows=2)
    equity = [v / E16 for v in data.sample_fund_equity_e16]
    # What the fund's positions are worth at the mark: equity minus cash.
    positions = [
        (e - c) / E16
        for e, c in zip(data.sample_fund_equity_e16, data.sample_fund_cash_e16, strict=True)
    ]
    ax.plot(xs, equity, color="#1f77b4", lw=1.4, label="equity (cash + positions at the mark)")
    ax.fill_between(
        xs,
        equity,
        0,
        where=[e < 0 for e in equity],
        color="#d62728",
        alpha=0.2,
        interpolate=True,
        label="below zero: the fund can pay nothing",
    )
    ax.axhline(0, color="black", lw=0.6)
    for row in data.fund_top_ups:
        ax.axvline(axis.x(row.ts_ns, row.seq), color="#2ca02c", lw=0.9, ls=":")
    if data.fund_top_ups:
        ax.plot([], [], color="#2ca02c", ls=":", label="deposit to the fund")
    ax.set_title("Insurance fund")
    ax.legend(loc="best", fontsize="small")
    ax_positions.plot(xs, positions, color="#8c564b", lw=1.0)
    ax_positions.axhline(0, color="black", lw=0.6)
    ax_positions.set_ylabel("positions taken\nover, at mark")
    for each in (ax, ax_positions):
        _money_axis(each)
        each.grid(alpha=0.3)
    _time_axis(axis, ax_positions)
    return _png(figure)


def _oi_notional(data: ReportData, market: str) -> list[float]:
    marks = data.sample_mark_e8[market]
    return [
        (qty * mark) / E16 if mark is not None else 0.0
        for qty, mark in zip(data.sample_long_oi_e8[market], marks, strict=True)
    ]


def _fig_fund_to_oi(data: ReportData, axis: _Axis) -> str:
    xs = _sample_x(data, axis)
    totals = [0.0] * len(xs)
    for market in data.markets:
        for i, value in enumerate(_oi_notional(data, market)):
            totals[i] += value
    ratio = [
        (100 * equity / E16 / total) if total > 0 else float("nan")
        for equity, total in zip(data.sample_fund_equity_e16, totals, strict=True)
    ]
    figure, (ax,) = _new_figure(3.0)
    ax.plot(xs, ratio, color="#9467bd", lw=1.2)
    ax.axhline(0, color="black", lw=0.6)
    # While open interest is still tiny the ratio is huge and meaningless: scale the axis
    # to the part of the run where open interest is at least a tenth of its peak.
    peak = max(totals, default=0.0)
    settled = [r for r, total in zip(ratio, totals, strict=True) if peak and total >= peak / 10]
    if settled:
        low, high = min(0.0, min(settled)), max(0.0, max(settled))
        margin = (high - low) * 0.08 or 1.0
        ax.set_ylim(low - margin, high + margin)
    ax.set_ylabel("fund equity / open interest (%)")
    ax.set_title("Insurance fund to open interest")
    ax.grid(alpha=0.3)
    _time_axis(axis, ax)
    return _png(figure)


def _fig_open_interest(data: ReportData, axis: _Axis) -> str:
    xs = _sample_x(data, axis)
    figure, (ax,) = _new_figure(3.6)
    series = [_oi_notional(data, market) for market in data.markets]
    if xs and series:
        colours = [_COLOURS[i % len(_COLOURS)] for i in range(len(series))]
        ax.stackplot(xs, *series, labels=data.markets, colors=colours, alpha=0.8)
        ax.legend(loc="upper left", fontsize="small")
    ax.set_title("Open interest (long side, at the mark), stacked by market")
    _money_axis(ax)
    ax.grid(alpha=0.3)
    _time_axis(axis, ax)
    return _png(figure)


def _fig_liquidations_by_time(data: ReportData, axis: _Axis) -> str:
    import numpy as np

    figure, (ax,) = _new_figure(3.4)
    xs_all = [axis.x(r.ts_ns, r.seq) for r in data.liquidations]
    sample_xs = _sample_x(data, axis)
    low = min(sample_xs + xs_all, default=0.0)
    high = max(sample_xs + xs_all, default=1.0)
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, TIME_BINS + 1)
    smallest = float("inf")
    for i, market in enumerate(data.markets):
        rows = [r for r in data.liquidations if r.market == market]
        if not rows:
            continue
        volume, _ = np.histogram(
            [axis.x(r.ts_ns, r.seq) for r in rows],
            bins=edges,
            weights=[r.notional_e16 / E16 for r in rows],
        )
        # One outline per market, not stacked: on a log scale a stack would lie about
        # the smaller markets, and a crash bin is orders of magnitude above the rest.
        ax.stairs(volume, edges, color=_COLOURS[i % len(_COLOURS)], lw=1.6, label=market)
        smallest = min(smallest, float(volume[volume > 0].min()))
    if data.liquidations:
        ax.set_yscale("log")
        ax.set_ylim(bottom=smallest / 2)
        ax.legend(loc="upper left", fontsize="small")
    ax.set_title("Liquidation volume over time (|qty| x mark per bin, log scale)")
    _money_axis(ax)
    ax.grid(alpha=0.3)
    _time_axis(axis, ax)
    return _png(figure)


def _fig_liquidations_by_price(data: ReportData) -> str:
    import numpy as np

    markets = data.markets
    if not markets:
        return _placeholder("Liquidation volume by price", "no markets in this journal")
    figure, axes = _new_figure(1.0 + 1.8 * len(markets), rows=len(markets), sharex=False)
    for i, (ax, market) in enumerate(zip(axes, markets, strict=True)):
        rows = [r for r in data.liquidations if r.market == market]
        ax.set_ylabel(market)
        ax.grid(alpha=0.3)
        if not rows:
            ax.text(0.5, 0.5, "no liquidations", transform=ax.transAxes, ha="center")
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
        ax.set_xlabel(f"{market} mark at liquidation")
    axes[0].set_title("Liquidation volume by price")
    return _png(figure)


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


def _fig_waterfall_over_time(data: ReportData, axis: _Axis) -> str:
    figure, (ax,) = _new_figure(3.6)
    start = min(_sample_x(data, axis), default=0.0)
    end = max(_sample_x(data, axis), default=1.0)

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
            [start, *xs, end],
            [0.0, *ys, ys[-1] if ys else 0.0],
            where="post",
            color=colour,
            lw=1.4,
            label=label,
        )
    ax.set_title("Loss waterfall over time (cumulative amounts)")
    _money_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    _time_axis(axis, ax)
    return _png(figure)


def _fig_deficit_coverage(data: ReportData) -> str:
    figure, (ax,) = _new_figure(1.8)
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
    _money_axis(ax, "x")
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize="small", frameon=False
    )
    return _png(figure)


# -- summary and tables -------------------------------------------------------------------


def summary(data: ReportData) -> dict[str, Any]:
    """The headline numbers, exact (amounts as decimal strings), JSON-ready."""
    axis = _Axis(data)
    liquidated_accounts = {(r.seq, r.account) for r in data.liquidations}
    open_interest = {
        market: {
            "long_qty": format_e8(data.long_oi_e8.get(market, 0)),
            "notional": format_e16(data.long_oi_e8.get(market, 0) * (data.marks_e8[market] or 0)),
            "mark": None if data.marks_e8[market] is None else format_e8(data.marks_e8[market]),
        }
        for market in data.markets
    }
    total_oi_e16 = data.open_interest_notional_e16
    return {
        "journal": {
            "directory": data.journal_dir,
            "records": data.inputs,
            "head_hash": data.journal_head_hex,
        },
        "verification": {
            "records_with_outputs_verified": data.verified_records,
            # Inputs that produced outputs the journal did not record: nothing to compare.
            "records_with_unrecorded_outputs": data.unrecorded_outputs,
            "invariants_ok": data.invariants_ok,
            "state_sha256": data.state_sha256,
        },
        "time_axis": "ts" if axis.by_time else "seq",
        "first": axis.text(data.sample_ts_ns[0] if data.sample_ts_ns else None, 1),
        "last": axis.text(data.sample_ts_ns[-1] if data.sample_ts_ns else None, data.inputs),
        "inputs": {
            "total": data.inputs,
            "by_type": dict(sorted(data.inputs_by_type.items())),
            "rejects": dict(sorted(data.rejects_by_reason.items())),
        },
        "accounts": data.accounts,
        "liquidations": {
            "events": len(data.liquidations),
            "accounts": len(liquidated_accounts),
            "notional": format_e16(sum(r.notional_e16 for r in data.liquidations)),
            "fees_charged": format_e16(sum(r.fee_e16 for r in data.liquidations)),
        },
        "fund_draws": {
            "events": len(data.fund_draws),
            "amount": format_e16(sum(r.amount_e16 for r in data.fund_draws)),
        },
        "clawbacks": {
            "events": len(data.clawbacks),
            "payers": len({r.account for r in data.clawbacks}),
            "amount": format_e16(sum(r.amount_e16 for r in data.clawbacks)),
        },
        "bad_debt": {
            "events": len(data.bad_debts),
            "amount": format_e16(sum(r.amount_e16 for r in data.bad_debts)),
            # What the bad-debt account holds (negated): the same, from the ledger's side.
            "unrecovered": format_e16(-data.bad_debt_account_e16),
        },
        "insurance_fund": {
            "final_equity": format_e16(data.fund_equity_e16),
            "final_cash": format_e16(data.fund_cash_e16),
            "lowest_sampled_equity": format_e16(min(data.sample_fund_equity_e16, default=0)),
            "deposits": len(data.fund_top_ups),
            "deposited": format_e16(sum(r.amount_e16 for r in data.fund_top_ups)),
        },
        "fee_pool": format_e16(data.fee_pool_e16),
        "net_deposits": format_e16(data.net_deposits_e16),
        "open_interest": open_interest,
        "open_interest_notional": format_e16(total_oi_e16),
        "fund_to_open_interest": _ratio_text(data.fund_equity_e16, total_oi_e16),
        "oracle_ticks_held": len(data.held_ticks),
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> str:
    head = "".join(
        f'<th class="{"num" if i >= numeric_from else ""}">{html.escape(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if i >= numeric_from else ""}">{html.escape(cell)}</td>'
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(headers)}">none</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _largest_liquidations(data: ReportData, axis: _Axis) -> str:
    draws = Counter[tuple[int, str]]()
    for draw in data.fund_draws:
        draws[draw.seq, draw.account] += draw.amount_e16
    clawed = Counter[tuple[int, str]]()
    for clawback in data.clawbacks:
        clawed[clawback.seq, clawback.cause] += clawback.amount_e16
    bad = Counter[tuple[int, str]]()
    for row in data.bad_debts:
        bad[row.seq, row.account] += row.amount_e16
    largest: list[LiquidationRow] = sorted(
        data.liquidations, key=lambda r: (-r.notional_e16, r.seq, r.account, r.market)
    )[:TOP_ROWS]
    rows = [
        (
            axis.text(r.ts_ns, r.seq),
            f"{r.seq:,}",
            r.account,
            r.market,
            _display_e8(r.qty_e8),
            _display_e8(r.mark_e8),
            display_e16(r.notional_e16),
            display_e16(r.fee_e16),
            display_e16(draws[r.seq, r.account]),
            display_e16(clawed[r.seq, r.account]),
            display_e16(bad[r.seq, r.account]),
        )
        for r in largest
    ]
    return _table(
        (
            "when",
            "seq",
            "account",
            "market",
            "qty closed",
            "mark",
            "notional",
            "fee paid",
            "fund draw",
            "clawed back",
            "bad debt",
        ),
        rows,
        numeric_from=4,
    )


def _largest_clawbacks(data: ReportData, axis: _Axis) -> str:
    largest: list[ClawbackRow] = sorted(
        data.clawbacks, key=lambda r: (-r.amount_e16, r.seq, r.account)
    )[:TOP_ROWS]
    rows = [
        (axis.text(r.ts_ns, r.seq), f"{r.seq:,}", r.account, r.cause, display_e16(r.amount_e16))
        for r in largest
    ]
    return _table(("when", "seq", "paid by", "for (liquidated account)", "amount"), rows, 4)


def _clawback_payers(data: ReportData) -> str:
    totals = Counter[str]()
    counts = Counter[str]()
    for row in data.clawbacks:
        totals[row.account] += row.amount_e16
        counts[row.account] += 1
    top = sorted(totals, key=lambda a: (-totals[a], a))[:TOP_ROWS]
    rows = [(a, f"{counts[a]:,}", display_e16(totals[a])) for a in top]
    return _table(("account", "clawbacks", "total paid"), rows, 1)


# -- page ---------------------------------------------------------------------------------

_CSS: Final = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1060px;color:#222;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}.sub{color:#666;margin-top:0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.8rem;
margin:1.2rem 0}
.card{border:1px solid #ddd;border-radius:8px;padding:.6rem .8rem;background:#fafafa}
.card .k{font-size:.8rem;color:#666;text-transform:uppercase;letter-spacing:.03em}
.card .v{font-size:1.35rem;font-weight:600}.card .d{font-size:.8rem;color:#555}
.bad .v{color:#b00020}.ok .v{color:#0a7a2f}
figure{margin:1.4rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9rem;color:#444}
table{border-collapse:collapse;font-size:.85rem;width:100%;margin:.6rem 0 1.4rem}
th,td{border-bottom:1px solid #e4e4e4;padding:.25rem .45rem;text-align:left}
th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.85rem;word-break:break-all}
"""


def _card(key: str, value: str, detail: str = "", css: str = "") -> str:
    return (
        f'<div class="card {css}"><div class="k">{html.escape(key)}</div>'
        f'<div class="v">{html.escape(value)}</div><div class="d">{html.escape(detail)}</div>'
        "</div>"
    )


_CAPTIONS: Final = {
    "marks": "Accepted oracle prices (sampled). Crosses: ticks the oracle guard held back "
    "because they moved too far from the mark; the mark only follows once a later tick "
    "confirms them.",
    "fund-equity": "The fund's equity is what it can pay out (cash plus the positions it took "
    "over, at the mark). Below zero it pays nothing and deficits go to clawbacks.",
    "fund-to-oi": "Fund equity as a share of open interest: how large a loss, relative to the "
    "positions outstanding, the fund can absorb.",
    "open-interest": "Sum of the long positions of each market times its mark.",
    "liquidations-by-time": "Notional of the positions closed out by liquidation, per time bin.",
    "liquidations-by-price": "Notional liquidated at each mark price: where the liquidation "
    "levels were.",
    "waterfall-over-time": "Running totals of each layer of the loss waterfall.",
    "deficit-coverage": "Every deficit left after a liquidation's close-out and fee is paid by "
    "the fund, then by clawbacks from accounts in profit, and the rest is bad debt.",
}


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document (figures embedded as base64 PNG)."""
    axis = _Axis(data)
    numbers = summary(data)
    figures: dict[str, Callable[[], str]] = {
        "marks": lambda: _fig_marks(data, axis),
        "fund-equity": lambda: _fig_fund_equity(data, axis),
        "fund-to-oi": lambda: _fig_fund_to_oi(data, axis),
        "open-interest": lambda: _fig_open_interest(data, axis),
        "liquidations-by-time": lambda: _fig_liquidations_by_time(data, axis),
        "liquidations-by-price": lambda: _fig_liquidations_by_price(data),
        "waterfall-over-time": lambda: _fig_waterfall_over_time(data, axis),
        "deficit-coverage": lambda: _fig_deficit_coverage(data),
    }
    liq = numbers["liquidations"]
    fund = numbers["insurance_fund"]
    fund_oi = numbers["fund_to_open_interest"]
    rejects = sum(data.rejects_by_reason.values())
    bad_debt_e16 = sum(r.amount_e16 for r in data.bad_debts)
    liquidated_e16 = sum(r.notional_e16 for r in data.liquidations)
    lowest_e16 = min(data.sample_fund_equity_e16, default=0)
    cards = [
        _card(
            "inputs",
            f"{data.inputs:,}",
            ", ".join(f"{k} {v:,}" for k, v in sorted(data.inputs_by_type.items())),
        ),
        _card(
            "liquidations",
            f"{liq['events']:,}",
            f"{liq['accounts']:,} accounts; {display_e16(liquidated_e16, 0)} notional",
        ),
        _card(
            "liquidation fees",
            display_e16(sum(r.fee_e16 for r in data.liquidations)),
            "charged to liquidated accounts, paid to the fund",
        ),
        _card(
            "fund draws",
            display_e16(sum(r.amount_e16 for r in data.fund_draws)),
            plural(len(data.fund_draws), "draw"),
        ),
        _card(
            "clawbacks",
            display_e16(sum(r.amount_e16 for r in data.clawbacks)),
            f"{len(data.clawbacks):,} debits from {numbers['clawbacks']['payers']:,} accounts",
        ),
        _card(
            "bad debt",
            display_e16(bad_debt_e16),
            plural(len(data.bad_debts), "event"),
            "bad" if bad_debt_e16 else "ok",
        ),
        _card(
            "insurance fund",
            display_e16(data.fund_equity_e16),
            f"equity at the end; lowest sampled {display_e16(lowest_e16)}; "
            + plural(fund["deposits"], "deposit"),
        ),
        _card(
            "fund / open interest",
            "n/a" if fund_oi is None else f"{Decimal(fund_oi) * 100:.2f}%",
            f"open interest {display_e16(data.open_interest_notional_e16, 0)}",
        ),
        _card("trading fees", display_e16(data.fee_pool_e16), "fee pool (fees minus rebates)"),
        _card(
            "rejected inputs",
            f"{rejects:,}",
            ", ".join(f"{k} {v}" for k, v in sorted(data.rejects_by_reason.items())),
        ),
        _card("held oracle ticks", f"{len(data.held_ticks):,}"),
        _card(
            "replay",
            "outputs identical" if data.invariants_ok else "FAILED",
            f"{data.verified_records:,} records compared; invariants hold",
            "ok" if data.invariants_ok else "bad",
        ),
    ]
    figure_html = "".join(
        f'<figure id="fig-{fig_id}"><img alt="{fig_id}" src="data:image/png;base64,{render()}">'
        f"<figcaption>{html.escape(_CAPTIONS[fig_id])}</figcaption></figure>"
        for fig_id, render in figures.items()
    )
    span = f"{numbers['first']} to {numbers['last']}"
    summary_json = json.dumps(numbers, indent=1, sort_keys=True).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>clearing audit report: {html.escape(data.journal_dir)}</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>Clearing audit report</h1>"
        f'<p class="sub">Journal <code>{html.escape(data.journal_dir)}</code>: '
        f"{data.inputs:,} inputs, {html.escape(span)}. Replayed from seq 1 through a fresh "
        "engine; every recorded output was re-derived and compared.</p>"
        f'<div class="cards">{"".join(cards)}</div>'
        f"{figure_html}"
        "<h2>Largest liquidations</h2>"
        "<p>By notional at the mark. The last three columns show how that account's deficit "
        "was covered.</p>"
        f"{_largest_liquidations(data, axis)}"
        "<h2>Largest clawbacks</h2>"
        f"{_largest_clawbacks(data, axis)}"
        "<h2>Accounts that paid the most in clawbacks</h2>"
        f"{_clawback_payers(data)}"
        "<h2>Provenance</h2>"
        f"<p>Journal head hash <code>{data.journal_head_hex}</code><br>"
        f"Final state SHA-256 <code>{data.state_sha256}</code> (the same hash "
        "<code>clearing replay</code> prints)</p>"
        f'<script type="application/json" id="report-summary">{summary_json}</script>'
        "</body></html>\n"
    )
