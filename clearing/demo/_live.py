"""The demo's running totals and its live terminal view (rich), refreshed a few times a second.

``Tally`` counts the waterfall from the output events as they come, exactly (integer e16
amounts). ``LiveView`` draws progress, marks, open interest, the waterfall so far and the
insurance fund; it reads the engine between batches, never during one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from clearing.engine import EngineCore, LedgerSummary, OutputEvent
from clearing.engine.events import (
    Adl,
    BadDebt,
    Clawback,
    FundDraw,
    Liquidation,
    OracleHeld,
    Reject,
)
from clearing.engine.money import E8
from clearing.engine.state import INSURANCE_FUND
from clearing.report import MONEY_UNIT, display_e16, parse_scaled, plural

__all__ = ["REFRESH_S", "UNIT", "LiveView", "Tally"]

# Four redraws a second: smooth enough to watch, cheap enough (one open-interest scan per
# redraw) not to slow the run.
REFRESH_S: Final = 0.25
# Fixed, so the panel does not change size as the numbers grow.
PANEL_WIDTH: Final = 92
# The ledger's one cash unit (the SPEC names no currency), as the report's axes say it.
UNIT: Final = MONEY_UNIT


@dataclass
class Tally:
    """Waterfall totals so far, from the output events, and the deposits to the fund, from
    the inputs (amounts exact, in e16)."""

    liquidations: int = 0
    liquidated_accounts: int = 0
    liquidation_fees_e16: int = 0
    fund_draws: int = 0
    fund_draw_e16: int = 0
    clawbacks: int = 0
    clawback_e16: int = 0
    # Rules version 2 (SPEC §9.4): deleveraged hand-overs and what they paid.
    adls: int = 0
    adl_e16: int = 0
    bad_debts: int = 0
    bad_debt_e16: int = 0
    held_ticks: int = 0
    rejects: int = 0
    # Deposits to the insurance fund (inputs, not outputs: a top-up has no output event).
    fund_deposits: int = 0
    fund_deposit_e16: int = 0
    last_event: str = ""
    _last_liquidated: tuple[int, str] = field(default=(0, ""), repr=False)

    def observe(self, outputs: list[OutputEvent]) -> None:
        for event in outputs:
            kind = type(event)
            if kind is Liquidation:
                self.liquidations += 1
                self.liquidation_fees_e16 += parse_scaled(event.fee, 16)
                key = (event.seq, event.account)
                if key != self._last_liquidated:
                    self._last_liquidated = key
                    self.liquidated_accounts += 1
                self.last_event = (
                    f"seq {event.seq:,}: {event.account} liquidated, {event.qty} "
                    f"{event.market} at mark {event.mark}"
                )
            elif kind is FundDraw:
                self.fund_draws += 1
                self.fund_draw_e16 += parse_scaled(event.amount, 16)
            elif kind is Adl:
                self.adls += 1
                self.adl_e16 += parse_scaled(event.amount, 16)
            elif kind is Clawback:
                self.clawbacks += 1
                self.clawback_e16 += parse_scaled(event.amount, 16)
            elif kind is BadDebt:
                self.bad_debts += 1
                amount_e16 = parse_scaled(event.amount, 16)
                self.bad_debt_e16 += amount_e16
                left = display_e16(amount_e16, 0)
                self.last_event = f"seq {event.seq:,}: {event.account} left {left} of bad debt"
            elif kind is OracleHeld:
                self.held_ticks += 1
                self.last_event = (
                    f"seq {event.seq:,}: oracle guard held {event.market} at {event.price}"
                )
            elif kind is Reject:
                self.rejects += 1

    def observe_inputs(
        self, first_seq: int, payloads: Sequence[bytes], outputs: list[OutputEvent]
    ) -> None:
        """Count the accepted deposits to the insurance fund among a batch's inputs."""
        rejected = {event.seq for event in outputs if type(event) is Reject}
        for seq, payload in enumerate(payloads, start=first_seq):
            # Cheap test first: nearly every input names neither.
            if _FUND_MARKER not in payload or seq in rejected:
                continue
            amount_e16 = _fund_deposit_e16(payload)
            if amount_e16 is None:
                continue
            self.fund_deposits += 1
            self.fund_deposit_e16 += amount_e16
            self.last_event = (
                f"seq {seq:,}: {display_e16(amount_e16, 0)} {UNIT} deposited to the insurance fund"
            )


_FUND_MARKER: Final = f'"{INSURANCE_FUND}"'.encode()


def _fund_deposit_e16(payload: bytes) -> int | None:
    """The amount of a deposit to the insurance fund (e16), or None for any other input."""
    try:
        entry = msgspec.json.decode(payload)
        if entry.get("type") != "deposit" or entry.get("account") != INSURANCE_FUND:
            return None
        return parse_scaled(str(entry["amount"]), 16)
    except (msgspec.DecodeError, AttributeError, KeyError, ValueError, RecursionError):
        return None


class LiveView:
    """A panel redrawn in place on the terminal while the demo runs.

    Every number has a label beside or above it, and amounts say their unit: the ledger's
    quote currency (whatever the markets' prices are in), rounded to whole units here.
    """

    def __init__(self, console: Console, title: str, note: str = "") -> None:
        self._title = title
        self._note = note
        self._first_marks_e8: dict[str, int] = {}
        self._live = Live(console=console, auto_refresh=False, transient=False)
        self._live.start()

    def show(
        self,
        *,
        progress: float,
        clock: str,
        phase: str,
        inputs: int,
        inputs_per_s: float,
        tally: Tally,
        engine: EngineCore,
    ) -> None:
        self._live.update(
            self.render(progress, clock, phase, inputs, inputs_per_s, tally, engine),
            refresh=True,
        )

    def close(self) -> None:
        self._live.stop()

    def render(
        self,
        progress: float,
        clock: str,
        phase: str,
        inputs: int,
        inputs_per_s: float,
        tally: Tally,
        engine: EngineCore,
    ) -> Panel:
        """The panel for this moment (``show`` draws it; tests read it)."""
        summary = engine.summary()
        markets, total_oi_e16 = self._markets(summary)
        fund_e16 = summary.fund_equity_e16
        ratio = f"{fund_e16 / total_oi_e16:.2%}" if total_oi_e16 else "n/a"
        head = Table.grid(padding=(0, 1))
        head.add_row(
            ProgressBar(total=1.0, completed=min(1.0, progress), width=48),
            Text(f"{progress:.0%}", style="bold"),
        )
        status = Text.assemble(
            ("simulated time ", "dim"),
            clock,
            ("   phase ", "dim"),
            (phase, "bold red" if phase == "crash" else "bold"),
            ("   inputs ", "dim"),
            f"{inputs:,} ({inputs_per_s:,.0f}/s)",
        )
        fund_line = Text.assemble(
            ("insurance fund equity ", "dim"),
            (f"{display_e16(fund_e16, 0)} {UNIT}", "bold red" if fund_e16 < 0 else "bold green"),
            ("   fund / open interest ", "dim"),
            ratio,
        )
        deposits_line = Text.assemble(
            ("deposits to the fund ", "dim"),
            f"{display_e16(tally.fund_deposit_e16, 0)} {UNIT} "
            f"({plural(tally.fund_deposits, 'deposit')})",
        )
        parts: list[Any] = [head, status, Text(""), markets, Text(""), _waterfall(tally)]
        parts += [fund_line, deposits_line, Text(tally.last_event or " ", style="dim")]
        if self._note:
            parts.append(Text(self._note, style="dim italic"))
        return Panel(Group(*parts), title=self._title, title_align="left", width=PANEL_WIDTH)

    def _markets(self, summary: LedgerSummary) -> tuple[Table, int]:
        """Each market's mark, its move since the start and its open interest; the total
        open interest at the mark (e16)."""
        table = Table(box=None, pad_edge=False, expand=False)
        headers = ("market", f"mark ({UNIT})", "since start", f"open interest ({UNIT})")
        for header in headers:
            table.add_column(header, justify="left" if header == "market" else "right")
        total_oi_e16 = 0
        for market in summary.markets:
            market_id, mark_e8 = market.market, market.mark_e8
            if mark_e8 is None:
                table.add_row(market_id, "-", "-", "-")
                continue
            first_e8 = self._first_marks_e8.setdefault(market_id, mark_e8)
            change = (mark_e8 - first_e8) / first_e8
            oi_e16 = market.long_open_interest_e8 * mark_e8
            total_oi_e16 += oi_e16
            table.add_row(
                market_id,
                f"{mark_e8 / E8:,.2f}",
                Text(f"{change:+.1%}", style="red" if change < -0.1 else ""),
                display_e16(oi_e16, 0),
            )
        table.add_row("all markets", "", "", display_e16(total_oi_e16, 0), style="bold")
        return table, total_oi_e16


def _waterfall(tally: Tally) -> Table:
    """The loss waterfall so far: a header over every column, the amounts with a unit."""
    table = Table(box=None, pad_edge=False, expand=False)
    table.add_column("loss waterfall", justify="left")
    table.add_column("events", justify="right")
    table.add_column(f"amount ({UNIT})", justify="right")
    table.add_column("", justify="left")
    table.add_row(
        "liquidations",
        f"{tally.liquidations:,}",
        display_e16(tally.liquidation_fees_e16, 0),
        f"fees charged; {plural(tally.liquidated_accounts, 'account')}",
    )
    table.add_row(
        "fund draws",
        f"{tally.fund_draws:,}",
        display_e16(tally.fund_draw_e16, 0),
        "paid by the fund",
    )
    table.add_row(
        "deleveraging",
        f"{tally.adls:,}",
        display_e16(tally.adl_e16, 0),
        "ADL: paid by the most profitable opposite traders",
    )
    table.add_row(
        "clawbacks",
        f"{tally.clawbacks:,}",
        display_e16(tally.clawback_e16, 0),
        "debited from accounts in profit",
    )
    table.add_row(
        Text("bad debt", style="bold red" if tally.bad_debts else ""),
        f"{tally.bad_debts:,}",
        display_e16(tally.bad_debt_e16, 0),
        "left unrecovered",
    )
    return table
