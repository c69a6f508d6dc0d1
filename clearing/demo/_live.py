"""The demo's running totals and its live terminal view (rich), refreshed a few times a second.

``Tally`` counts the waterfall from the output events as they come, exactly (integer e16
amounts). ``LiveView`` draws progress, marks, open interest, the waterfall so far and the
insurance fund; it reads the engine between batches, never during one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from clearing.engine import EngineCore, OutputEvent
from clearing.engine.events import BadDebt, Clawback, FundDraw, Liquidation, OracleHeld, Reject
from clearing.engine.money import E8
from clearing.report import display_e16, parse_scaled, plural

__all__ = ["REFRESH_S", "LiveView", "Tally"]

# Four redraws a second: smooth enough to watch, cheap enough (one open-interest scan per
# redraw) not to slow the run.
REFRESH_S: Final = 0.25
# Fixed, so the panel does not change size as the numbers grow.
PANEL_WIDTH: Final = 92


@dataclass
class Tally:
    """Waterfall totals so far, from the output events (amounts exact, in e16)."""

    liquidations: int = 0
    liquidated_accounts: int = 0
    liquidation_fees_e16: int = 0
    fund_draws: int = 0
    fund_draw_e16: int = 0
    clawbacks: int = 0
    clawback_e16: int = 0
    bad_debts: int = 0
    bad_debt_e16: int = 0
    held_ticks: int = 0
    rejects: int = 0
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


class LiveView:
    """A panel redrawn in place on the terminal while the demo runs."""

    def __init__(self, console: Console, title: str) -> None:
        self._title = title
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
            self._render(progress, clock, phase, inputs, inputs_per_s, tally, engine),
            refresh=True,
        )

    def close(self) -> None:
        self._live.stop()

    def _render(
        self,
        progress: float,
        clock: str,
        phase: str,
        inputs: int,
        inputs_per_s: float,
        tally: Tally,
        engine: EngineCore,
    ) -> Any:
        summary = engine.summary()
        markets = Table(box=None, pad_edge=False, expand=False)
        for header in ("market", "mark", "since start", "open interest"):
            markets.add_column(header, justify="left" if header == "market" else "right")
        total_oi_e16 = 0
        for market in summary.markets:
            market_id, mark_e8 = market.market, market.mark_e8
            if mark_e8 is None:
                markets.add_row(market_id, "-", "-", "-")
                continue
            first_e8 = self._first_marks_e8.setdefault(market_id, mark_e8)
            change = (mark_e8 - first_e8) / first_e8
            oi_e16 = market.long_open_interest_e8 * mark_e8
            total_oi_e16 += oi_e16
            style = "red" if change < -0.1 else ""
            markets.add_row(
                market_id,
                f"{mark_e8 / E8:,.2f}",
                Text(f"{change:+.1%}", style=style),
                display_e16(oi_e16, 0),
            )
        fund_e16 = summary.fund_equity_e16
        ratio = f"{fund_e16 / total_oi_e16:.2%}" if total_oi_e16 else "n/a"
        waterfall = Table.grid(padding=(0, 2))
        waterfall.add_column(justify="left")
        waterfall.add_column(justify="right")
        waterfall.add_column(justify="left")
        waterfall.add_row(
            "liquidations",
            f"{tally.liquidations:,}",
            f"{plural(tally.liquidated_accounts, 'account')}, "
            f"fees {display_e16(tally.liquidation_fees_e16, 0)}",
        )
        waterfall.add_row(
            "fund draws", f"{tally.fund_draws:,}", display_e16(tally.fund_draw_e16, 0)
        )
        waterfall.add_row("clawbacks", f"{tally.clawbacks:,}", display_e16(tally.clawback_e16, 0))
        waterfall.add_row(
            Text("bad debt", style="bold red" if tally.bad_debts else ""),
            f"{tally.bad_debts:,}",
            display_e16(tally.bad_debt_e16, 0),
        )
        fund_style = "bold red" if fund_e16 < 0 else "bold green"
        fund_line = Text.assemble(
            "insurance fund ",
            (display_e16(fund_e16, 0), fund_style),
            f"   fund / open interest {ratio}   open interest {display_e16(total_oi_e16, 0)}",
        )
        head = Table.grid(padding=(0, 1))
        head.add_row(
            ProgressBar(total=1.0, completed=min(1.0, progress), width=48),
            Text(f"{progress:.0%}", style="bold"),
        )
        status = Text.assemble(
            clock,
            "   ",
            (phase, "bold red" if phase == "crash" else "bold"),
            f"   {inputs:,} inputs, {inputs_per_s:,.0f}/s",
        )
        body = Group(
            head,
            status,
            Text(""),
            markets,
            Text(""),
            waterfall,
            fund_line,
            Text(tally.last_event or " ", style="dim"),
        )
        return Panel(body, title=self._title, title_align="left", width=PANEL_WIDTH)
