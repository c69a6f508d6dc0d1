"""``clearing stress --grid``: the default shock grid, each market moved alone by
-50/-30/-20/-10/+10/+20/+30/+50%, one scenario each, run like any stress."""

from __future__ import annotations

import json
from typing import Any

from clearing.engine.money import format_e16
from clearing.risk import _render as render
from clearing.risk._outcome import Outcome
from clearing.risk._runner import run_scenarios
from clearing.risk._shock import Move, describe_move, shock_grid, shocked_price_e8
from clearing.risk._source import Ledger

__all__ = ["run_grid"]


def run_grid(ledger: Ledger, marks: dict[str, int], jobs: int, as_json: bool) -> str:
    """Run the grid on ``ledger``; the table (or JSON document) to print."""
    shocks = shock_grid(marks)
    moves = [Move(s.market, shocked_price_e8(marks[s.market], s.move)) for s in shocks]
    outcomes = run_scenarios(ledger.engine, [[m] for m in moves], jobs=jobs, measure_fund=True)
    rows = [
        _row(move, marks[move.market], outcome)
        for move, outcome in zip(moves, outcomes, strict=True)
    ]
    if as_json:
        document = {"seq": ledger.seq, "core": ledger.engine.core_name, "grid": rows}
        return json.dumps(document, indent=2)
    header = ["market", "move", "liquidations", "accounts", "fund draws", "clawbacks + ADL"]
    header += ["bad debt", "fund equity after"]
    body = [
        [
            row["market"],
            row["move"],
            str(row["liquidations"]),
            str(row["accounts_liquidated"]),
            render.cash(row["fund_draw_e16"]),
            render.cash(row["clawback_and_adl_e16"]),
            render.cash(row["bad_debt_e16"]),
            render.cash(row["fund_equity_after_e16"]),
        ]
        for row in rows
    ]
    return (
        f"stress grid at seq {ledger.seq} ({ledger.engine.core_name} core): each market "
        f"alone; the ledger is not changed\n\n{render.table(header, body)}"
    )


def _row(move: Move, mark_e8: int, outcome: Outcome) -> dict[str, Any]:
    total = outcome.total
    after = outcome.fund_equity_after_e16 or 0
    shared = total.clawback_e16 + total.adl_e16
    return {
        "market": move.market,
        "move": describe_move(mark_e8, move.price_e8),
        "shocked_mark": render.price(move.price_e8),
        "liquidations": total.liquidations,
        "accounts_liquidated": total.accounts_liquidated,
        "fund_draw": format_e16(total.fund_draw_e16),
        "clawback_and_adl": format_e16(shared),
        "bad_debt": format_e16(total.bad_debt_e16),
        "fund_equity_after": format_e16(after),
        "fund_draw_e16": total.fund_draw_e16,
        "clawback_and_adl_e16": shared,
        "bad_debt_e16": total.bad_debt_e16,
        "fund_equity_after_e16": after,
    }
