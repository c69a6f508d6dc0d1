"""The report's sections for rules version 2 (SPEC §9), shown only for a version-2 journal:
auto-deleveraging, partial liquidation, funding, and the liquidation fee split with the
volatility estimate that drives it. Their exact numbers also go into the JSON summary
(``rules_v2_summary``)."""

from __future__ import annotations

import html
from collections import Counter
from typing import Any, Final

from clearing.engine.money import format_e8, format_e16
from clearing.report._collect import ReportData
from clearing.report._collect_v2 import RulesV2Data
from clearing.report._figures import Axis, png
from clearing.report._figures_v2 import figures_v2
from clearing.report._numbers import display_e8, display_e16, plural, ratio_text

__all__ = ["rules_v2_html", "rules_v2_summary"]

# Rows in the "largest" tables, as in the rest of the report.
TOP_ROWS: Final = 15

_CAPTIONS: Final = {
    "funding-over-time": "Running total of what each market's paying side paid at each "
    "funding input (longs when the rate is positive, shorts when negative); the other side "
    "received it, less rounding, which goes to the fee pool.",
    "volatility-and-fee-share": "Top: each market's volatility estimate, updated by every "
    "accepted oracle tick (sampled). Bottom: the share of a liquidation fee the insurance "
    "fund would get at that moment, the tier of the estimate or else the market's "
    "fund_share; the fee pool gets the rest.",
}


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]], numeric_from: int) -> str:
    # The report's own table markup; imported here because _render imports this module.
    from clearing.report._render import _table as table

    return table(headers, rows, numeric_from)


def _figure(fig_id: str, draw: Any) -> str:
    return (
        f'<figure id="fig-{fig_id}"><img alt="{fig_id}" src="data:image/png;base64,'
        f'{png(draw())}"><figcaption>{html.escape(_CAPTIONS[fig_id])}</figcaption></figure>'
    )


def _adl_section(v2: RulesV2Data, axis: Axis) -> str:
    paid_e16 = sum(r.amount_e16 for r in v2.adl)
    accounts = len({r.account for r in v2.adl})
    causes = len({(r.seq, r.cause) for r in v2.adl})
    largest = sorted(v2.adl, key=lambda r: (-r.amount_e16, r.seq, r.account))[:TOP_ROWS]
    rows = [
        (
            axis.text(r.ts_ns, r.seq),
            f"{r.seq:,}",
            r.account,
            r.market,
            r.cause,
            display_e8(r.qty_e8),
            display_e16(r.amount_e16),
        )
        for r in largest
    ]
    headers = ("when", "seq", "deleveraged", "market", "liquidated", "position closed", "paid")
    return (
        '<h3 id="adl">Auto-deleveraging</h3>'
        "<p>In a market under <code>loss_policy: adl</code>, a deficit the insurance fund "
        "cannot pay is not clawed from every account in profit: the position the fund took "
        "over is handed to the opposite traders with the most profit per unit of equity, "
        "who close that much of their own position at the mark and pay at most the profit "
        "of the part closed. "
        f"{plural(len(v2.adl), 'hand-over')} from {plural(accounts, 'account')} covered "
        f"{display_e16(paid_e16)} of the deficits of {plural(causes, 'liquidation')}. "
        "The largest payments (a hand-over may pay 0 and still close its part):</p>"
        + _table(headers, rows, 5)
    )


def _partial_section(v2: RulesV2Data, axis: Axis) -> str:
    steps = v2.partial_steps
    accounts = len({r.account for r in steps})
    finished = sum(1 for r in steps if r.left_e8 == 0)
    largest = sorted(steps, key=lambda r: (-abs(r.qty_e8), r.seq, r.account))[:TOP_ROWS]
    rows = [
        (
            axis.text(r.ts_ns, r.seq),
            f"{r.seq:,}",
            r.account,
            r.market,
            display_e8(r.qty_e8),
            display_e8(r.left_e8),
        )
        for r in largest
    ]
    headers = ("when", "seq", "account", "market", "closed by the step", "held after the input")
    return (
        '<h3 id="partial-liquidation">Partial liquidation</h3>'
        "<p>In a market with <code>liq_step</code> below 1, an account that still has at "
        "least half its maintenance margin is cut by that share of each position instead "
        "of closed out; if that is not enough, its next step in the same input closes the "
        f"rest. {plural(len(steps), 'partial step')} on {plural(accounts, 'account')}; "
        f"{finished:,} of them were followed by a full close-out in the same input (held "
        "after the input: 0), the others left the account holding the rest. The largest "
        "by quantity:</p>" + _table(headers, rows, 4)
    )


def _funding_section(data: ReportData, v2: RulesV2Data) -> str:
    rows = []
    for market in data.markets:
        inputs = [r for r in v2.funding if r.market == market]
        if inputs:
            paid_e16 = sum(r.paid_e16 for r in inputs)
            rows.append((market, f"{len(inputs):,}", inputs[-1].rate, display_e16(paid_e16)))
    return (
        '<h3 id="funding">Funding</h3>'
        "<p>Each <code>funding</code> input moves cash between a market's longs and shorts "
        "in proportion to their positions at the mark; the rounding residual goes to the "
        "fee pool.</p>" + _table(("market", "funding inputs", "last rate", "paid"), rows, 1)
    )


def _fee_split_section(data: ReportData, v2: RulesV2Data) -> str:
    rows = []
    for market in data.markets:
        fund_e16, pool_e16 = v2.fund_fee_e16[market], v2.pool_fee_e16[market]
        if fund_e16 or pool_e16:
            pool_share = ratio_text(pool_e16, fund_e16 + pool_e16) or "0"
            rows.append(
                (
                    market,
                    display_e16(fund_e16 + pool_e16),
                    display_e16(fund_e16),
                    display_e16(pool_e16),
                    f"{float(pool_share):.1%}",
                )
            )
    headers = ("market", "fees charged", "to the fund", "to the fee pool", "pool share")
    return (
        '<h3 id="fee-split">Liquidation fee split</h3>'
        "<p>Each market splits the liquidation fees it charges between the insurance fund "
        "and the fee pool by its volatility estimate: the share of the highest "
        "<code>vol_tiers</code> tier the estimate has reached, else "
        "<code>fund_share</code>.</p>" + _table(headers, rows, 1)
    )


def rules_v2_html(data: ReportData, axis: Axis) -> str:
    """The version-2 sections, with their figures; empty for a version-1 journal."""
    v2 = data.rules_v2
    if v2 is None:
        return ""
    drawn = {fig_id: _figure(fig_id, draw) for fig_id, draw in figures_v2(data, axis).items()}
    return (
        '<h2 id="rules-v2">Rules version 2</h2>'
        f"<p>This journal runs clearing rules version {data.rules_version} (SPEC §9). The "
        "sections below show what only those rules do.</p>"
        + _adl_section(v2, axis)
        + _partial_section(v2, axis)
        + _funding_section(data, v2)
        + drawn["funding-over-time"]
        + _fee_split_section(data, v2)
        + drawn["volatility-and-fee-share"]
    )


def rules_v2_summary(data: ReportData) -> dict[str, Any] | None:
    """The version-2 headline numbers, exact; None for a version-1 journal."""
    v2 = data.rules_v2
    if v2 is None:
        return None
    paid: Counter[str] = Counter()
    for row in v2.funding:
        paid[row.market] += row.paid_e16
    closed_e8: Counter[str] = Counter()
    for step in v2.partial_steps:
        closed_e8[step.market] += abs(step.qty_e8)
    return {
        "adl": {
            "events": len(v2.adl),
            "accounts": len({r.account for r in v2.adl}),
            "amount": format_e16(sum(r.amount_e16 for r in v2.adl)),
        },
        "partial_steps": {
            "events": len(v2.partial_steps),
            "accounts": len({r.account for r in v2.partial_steps}),
            "closed_qty": {
                market: format_e8(
                    sum(abs(r.qty_e8) for r in v2.partial_steps if r.market == market)
                )
                for market in sorted({r.market for r in v2.partial_steps})
            },
        },
        "funding_paid": {market: format_e16(paid[market]) for market in sorted(paid)},
        "liquidation_fees": {
            market: {
                "to_fund": format_e16(v2.fund_fee_e16[market]),
                "to_fee_pool": format_e16(v2.pool_fee_e16[market]),
            }
            for market in sorted(v2.fund_fee_e16.keys() | v2.pool_fee_e16.keys())
        },
    }
