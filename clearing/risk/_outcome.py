"""What one scenario did: its output events boiled down to the waterfall's figures.

Pure: it reads the engine's output events (JSON bytes) and adds them up exactly (e16
integers). Each event is booked to the market whose shock tick caused it (the input that
produced it), so the per-market rows of a stress sum to its total, whatever account or
market a clawback or bad debt names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from clearing.engine.money import parse_wire_e8

__all__ = ["MarketOutcome", "Outcome", "StepOutputs", "parse_e16", "summarise"]

_CASH_PLACES: Final = 16
_TOTAL: Final = "total"


class _Event(msgspec.Struct, gc=False):
    """The fields of an output event that the figures use (others are ignored)."""

    type: str
    account: str = ""
    qty: str = "0"
    mark: str = "0"
    fee: str = "0"
    amount: str = "0"


# One decode per input for all its events: a scenario can liquidate thousands of accounts.
_decode_events = msgspec.json.Decoder(list[_Event]).decode


class MarketOutcome(msgspec.Struct, frozen=True, gc=False):
    """The waterfall's figures for the outputs of one market's shock (or the total)."""

    market: str
    liquidations: int = 0  # liquidation events: positions closed (or partial steps)
    accounts_liquidated: int = 0  # distinct accounts
    notional_e16: int = 0  # sum of |qty| * mark over the liquidations
    fees_e16: int = 0  # liquidation fees charged
    fund_draw_e16: int = 0  # what the insurance fund paid out
    clawback_e16: int = 0
    adl_e16: int = 0  # auto-deleveraging payments (rules version 2)
    bad_debt_e16: int = 0


class StepOutputs(msgspec.Struct, frozen=True, gc=False):
    """One input a scenario applied (``raw``) and the output events it produced."""

    market: str
    raw: bytes
    outputs: list[bytes]


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """One scenario's result: the inputs applied, per-market and total figures, the
    fund's equity before and after (None when not measured), and the output events
    (only when asked for)."""

    inputs: list[bytes]
    markets: list[MarketOutcome]  # shocked markets, in the order their ticks went in
    total: MarketOutcome
    fund_equity_before_e16: int | None = None
    fund_equity_after_e16: int | None = None
    events: list[bytes] | None = None


def parse_e16(text: str) -> int:
    """An output event's plain decimal (at most 16 places) as an exact e16 integer."""
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    if len(frac) > _CASH_PLACES:
        raise ValueError(f"{text!r} has more than {_CASH_PLACES} decimals")
    value = int(whole) * 10**_CASH_PLACES + int(frac.ljust(_CASH_PLACES, "0") or "0")
    return -value if negative else value


def _wire_e8(text: str) -> int:
    value = parse_wire_e8(text)
    if value is None:
        raise ValueError(f"{text!r} is not a wire number")
    return value


class _Tally:
    """Running figures for one row."""

    def __init__(self) -> None:
        self.liquidations = 0
        self.accounts: set[str] = set()
        self.notional_e16 = self.fees_e16 = self.fund_draw_e16 = 0
        self.clawback_e16 = self.adl_e16 = self.bad_debt_e16 = 0

    def add(self, event: _Event) -> None:
        kind = event.type
        if kind == "liquidation":
            self.liquidations += 1
            self.accounts.add(event.account)
            # qty and mark are wire numbers (<= 8 places): their e8 product is e16, exact.
            self.notional_e16 += abs(_wire_e8(event.qty)) * _wire_e8(event.mark)
            self.fees_e16 += parse_e16(event.fee)
        elif kind == "fund_draw":
            self.fund_draw_e16 += parse_e16(event.amount)
        elif kind == "clawback":
            self.clawback_e16 += parse_e16(event.amount)
        elif kind == "adl":
            self.adl_e16 += parse_e16(event.amount)
        elif kind == "bad_debt":
            self.bad_debt_e16 += parse_e16(event.amount)

    def row(self, market: str) -> MarketOutcome:
        return MarketOutcome(
            market,
            self.liquidations,
            len(self.accounts),
            self.notional_e16,
            self.fees_e16,
            self.fund_draw_e16,
            self.clawback_e16,
            self.adl_e16,
            self.bad_debt_e16,
        )


def summarise(
    steps: Sequence[StepOutputs],
    *,
    fund_equity_before_e16: int | None = None,
    fund_equity_after_e16: int | None = None,
    keep_events: bool = False,
) -> Outcome:
    """Add up the outputs of a scenario's inputs, per shocked market and in total."""
    per_market: dict[str, _Tally] = {}
    total = _Tally()
    for step in steps:
        tally = per_market.setdefault(step.market, _Tally())
        if not step.outputs:
            continue
        for event in _decode_events(b"[" + b",".join(step.outputs) + b"]"):
            tally.add(event)
            total.add(event)
    events = [e for step in steps for e in step.outputs] if keep_events else None
    return Outcome(
        inputs=[step.raw for step in steps],
        markets=[tally.row(market) for market, tally in per_market.items()],
        total=total.row(_TOTAL),
        fund_equity_before_e16=fund_equity_before_e16,
        fund_equity_after_e16=fund_equity_after_e16,
        events=events,
    )
