"""Turn collected report data into one self-contained HTML page.

The figures (``_figures``) are embedded as base64 PNG, so the page is a single file that
opens anywhere and can be archived with the journal it describes. Exact amounts are
formatted from integers (``_numbers``).

The headline numbers are also embedded as JSON (``<script id="report-summary">``), with
every amount an exact decimal string, for tools that read the report.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

from clearing.engine.money import format_e8, format_e16
from clearing.report._collect import ClawbackRow, LiquidationRow, ReportData
from clearing.report._figures import FIGURE_IDS, MONEY_UNIT, Axis, figures, png
from clearing.report._numbers import display_e8, display_e16, plural, ratio_text
from clearing.report._render_v2 import rules_v2_html, rules_v2_summary

__all__ = ["FIGURE_IDS", "display_e16", "plural", "render_html", "summary"]

# Rows in the "largest" tables: enough to see who mattered, short enough to read.
TOP_ROWS: Final = 15
# Deposits to the fund listed in full up to this many (a venue tops up rarely).
DEPOSIT_ROWS: Final = 50


# -- summary ------------------------------------------------------------------------------


def _lowest_fund(data: ReportData, axis: Axis) -> tuple[int, str]:
    """The lowest sampled fund equity and when it was."""
    equity = data.sample_fund_equity_e16
    if not equity:
        return 0, axis.text(None, 0)
    i = equity.index(min(equity))
    return equity[i], axis.text(data.sample_ts_ns[i], data.sample_seq[i])


def _deposited_e16(data: ReportData) -> int:
    return sum(r.amount_e16 for r in data.fund_top_ups)


def summary(data: ReportData) -> dict[str, Any]:
    """The headline numbers, exact (amounts as decimal strings), JSON-ready."""
    axis = Axis(data)
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
    lowest_e16, lowest_at = _lowest_fund(data, axis)
    deposited_e16 = _deposited_e16(data)
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
            "lowest_sampled_equity": format_e16(lowest_e16),
            "lowest_sampled_at": lowest_at,
            "deposits": len(data.fund_top_ups),
            "deposited": format_e16(deposited_e16),
            # What the fund earned or lost by itself: its equity had nobody deposited.
            "equity_before_top_ups": format_e16(data.fund_equity_e16 - deposited_e16),
            "deposit_events": [
                {
                    "seq": r.seq,
                    "when": axis.text(r.ts_ns, r.seq),
                    "amount": format_e16(r.amount_e16),
                    "equity_after": format_e16(r.fund_equity_after_e16),
                }
                for r in data.fund_top_ups
            ],
        },
        "fee_pool": format_e16(data.fee_pool_e16),
        "net_deposits": format_e16(data.net_deposits_e16),
        "open_interest": open_interest,
        "open_interest_notional": format_e16(total_oi_e16),
        "fund_to_open_interest": ratio_text(data.fund_equity_e16, total_oi_e16),
        "oracle_ticks_held": len(data.held_ticks),
        "rules_version": data.rules_version,
        # Only for a version-2 journal (SPEC §9): ADL, partial steps, funding, fee split.
        **({"rules_v2": v2} if (v2 := rules_v2_summary(data)) is not None else {}),
    }


def replay_sentence(inputs: int, compared: int, unrecorded: int) -> str:
    """What the replay compared, in words that do not suggest fewer inputs were checked."""
    quiet = inputs - compared - unrecorded
    text = (
        f"all {inputs:,} inputs re-applied; the {compared:,} that recorded outputs got "
        f"byte-identical ones, the other {quiet:,} recorded none and produced none"
    )
    if unrecorded:
        text += f"; {unrecorded:,} produced outputs the journal did not record"
    return text


# -- tables -------------------------------------------------------------------------------


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


def _fund_deposits(data: ReportData, axis: Axis) -> str:
    rows = [
        (
            axis.text(r.ts_ns, r.seq),
            f"{r.seq:,}",
            f"+{display_e16(r.amount_e16)}",
            display_e16(r.fund_equity_after_e16 - r.amount_e16),
            display_e16(r.fund_equity_after_e16),
        )
        for r in data.fund_top_ups[:DEPOSIT_ROWS]
    ]
    more = len(data.fund_top_ups) - len(rows)
    note = f"<p>and {more:,} more deposits (all of them in the JSON summary).</p>" if more else ""
    return (
        '<h3 id="fund-deposits">Deposits to the insurance fund</h3>'
        "<p>Money put into the fund from outside (the first is usually its seed capital). "
        "Nobody can withdraw from the fund, so apart from these its equity moves only with "
        "what it earns and loses itself: liquidation fees in, draws out, and the value of "
        "the positions it took over.</p>"
        + _table(("when", "seq", "amount", "fund equity before", "fund equity after"), rows, 2)
        + note
    )


def _largest_liquidations(data: ReportData, axis: Axis) -> str:
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
            f"{display_e8(r.qty_e8)} ({'long' if r.qty_e8 > 0 else 'short'})",
            display_e8(r.mark_e8),
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
            "position closed",
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


def _largest_clawbacks(data: ReportData, axis: Axis) -> str:
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
.bad .v{color:#b00020}.ok .v{color:#0a7a2f}.warn{border-color:#d9822b;background:#fff8f0}
figure{margin:1.4rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9rem;color:#444}
table{border-collapse:collapse;font-size:.85rem;width:100%;margin:.6rem 0 1.4rem}
th,td{border-bottom:1px solid #e4e4e4;padding:.25rem .45rem;text-align:left}
td{white-space:nowrap}
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
    "over, at the mark). Below zero it pays nothing and deficits go to clawbacks. Dotted "
    "green lines are deposits to the fund, labelled with their amount; the dashed line is "
    "the equity the fund would have had without any of them (the table below lists them).",
    "fund-to-oi": "Fund equity as a share of open interest: how large a loss, relative to the "
    "positions outstanding, the fund can absorb. Not drawn while open interest is below a "
    "tenth of its peak, where the ratio is huge and says nothing.",
    "open-interest": "Sum of the long positions of each market times its mark.",
    "liquidations-by-time": "Notional (|position| x mark) of the positions closed out by "
    "liquidation, summed per time bin, one panel per market with liquidations, on one "
    "shared log scale.",
    "liquidations-by-price": "Notional liquidated at each mark price: where the liquidation "
    "levels were.",
    "waterfall-over-time": "Running totals of each layer of the loss waterfall.",
    "deficit-coverage": "Every deficit left after a liquidation's close-out and fee is paid by "
    "the fund, then by clawbacks from accounts in profit, and the rest is bad debt.",
}


def _cards(data: ReportData, numbers: dict[str, Any], axis: Axis) -> str:
    liq = numbers["liquidations"]
    fund_oi = numbers["fund_to_open_interest"]
    rejects = sum(data.rejects_by_reason.values())
    bad_debt_e16 = sum(r.amount_e16 for r in data.bad_debts)
    liquidated_e16 = sum(r.notional_e16 for r in data.liquidations)
    lowest_e16, lowest_at = _lowest_fund(data, axis)
    deposited_e16 = _deposited_e16(data)
    before_top_ups_e16 = data.fund_equity_e16 - deposited_e16
    deposits = plural(len(data.fund_top_ups), "deposit")
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
            f"equity at the end, after {display_e16(deposited_e16)} deposited to it "
            f"({deposits}); lowest sampled {display_e16(lowest_e16)} at {lowest_at}",
            "warn" if lowest_e16 < 0 else "",
        ),
        _card(
            "fund before top-ups",
            display_e16(before_top_ups_e16),
            "what the fund earned or lost by itself: its final equity minus every deposit to it",
            "bad" if before_top_ups_e16 < 0 else "ok",
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
            replay_sentence(data.inputs, data.verified_records, data.unrecorded_outputs)
            + "; invariants hold",
            "ok" if data.invariants_ok else "bad",
        ),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document (figures embedded as base64 PNG)."""
    axis = Axis(data)
    numbers = summary(data)
    after_figure = {"fund-equity": _fund_deposits(data, axis)}
    figure_html = "".join(
        f'<figure id="fig-{fig_id}"><img alt="{fig_id}" src="data:image/png;base64,{png(draw())}">'
        f"<figcaption>{html.escape(_CAPTIONS[fig_id])}</figcaption></figure>"
        + after_figure.get(fig_id, "")
        for fig_id, draw in figures(data, axis).items()
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
        "engine; every recorded output was re-derived and compared. Amounts and prices "
        f"are in the ledger's quote currency (&ldquo;{MONEY_UNIT}&rdquo; on the axes), "
        "rounded to cents here; the exact values are in the JSON summary embedded in the "
        "page.</p>"
        f"{_cards(data, numbers, axis)}"
        f"{figure_html}"
        "<h2>Largest liquidations</h2>"
        "<p>By notional at the mark. <b>Position closed</b> is signed as the account held "
        "it: positive for a long (the fund took it over by selling into the bids), "
        "negative for a short (bought back from the asks). The last three columns show how "
        "that account's deficit was covered.</p>"
        f"{_largest_liquidations(data, axis)}"
        "<h2>Largest clawbacks</h2>"
        f"{_largest_clawbacks(data, axis)}"
        "<h2>Accounts that paid the most in clawbacks</h2>"
        f"{_clawback_payers(data)}"
        f"{rules_v2_html(data, axis)}"
        "<h2>Provenance</h2>"
        f"<p>Journal head hash <code>{data.journal_head_hex}</code><br>"
        f"Final state SHA-256 <code>{data.state_sha256}</code> (the same hash "
        "<code>clearing replay</code> prints)</p>"
        f'<script type="application/json" id="report-summary">{summary_json}</script>'
        "</body></html>\n"
    )
