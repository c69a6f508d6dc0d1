"""Each account's liability, read from an engine core through the engine-core contract.

A liability is what the venue owes the account if it closed everything at the marks:
its equity ``E = C + sum(q * m)`` (SPEC §2), floored at 0 (an account in deficit owes
the venue; it does not lower what the venue owes the others). Computed exactly in 1e-16
cash units from the §8 state document (``state_json``), which both cores write byte for
byte alike, so the tree does not depend on the core that built the ledger.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import msgspec

from clearing.engine import EngineCore, LedgerFigures
from clearing.engine.state import SYSTEM_ACCOUNTS
from clearing.heap import collector_paused

__all__ = ["LedgerLiabilities", "ledger_liabilities"]

_SCALE: Final = tuple(10**places for places in range(17))


class _Account(msgspec.Struct, frozen=True, gc=False):
    cash: str
    positions: dict[str, str] = {}


class _Market(msgspec.Struct, frozen=True, gc=False):
    mark: str | None = None


class _State(msgspec.Struct, frozen=True, gc=False):
    accounts: dict[str, _Account]
    markets: dict[str, _Market]


class LedgerLiabilities(NamedTuple):
    """Every non-system account's liability (ids in code-point order) and the system
    accounts' figures, at ``seq``."""

    seq: int
    liabilities: list[tuple[str, int]]
    figures: LedgerFigures


def _scaled(text: str, places: int) -> int:
    """A plain decimal (``-?[0-9]+(.[0-9]{1,places})?``) as an integer count of
    10^-places; ValueError for anything else. (``int`` alone would also take signs,
    spaces, underscores and other scripts' digits, hence the checks.)"""
    body = text[1:] if text.startswith("-") else text
    whole, dot, frac = body.partition(".")
    if not (
        whole.isascii()
        and whole.isdigit()
        and (not dot or (frac.isascii() and frac.isdigit() and len(frac) <= places))
    ):
        raise ValueError(f"{text!r} is not a decimal with at most {places} places")
    value = int(whole) * _SCALE[places]
    if frac:
        value += int(frac) * _SCALE[places - len(frac)]
    return -value if body is not text else value


def _equity_e16(account: _Account, marks_e8: dict[str, int | None]) -> int:
    equity_e16 = _scaled(account.cash, 16)
    for market_id, qty in account.positions.items():
        mark_e8 = marks_e8[market_id]
        if mark_e8 is None:
            raise ValueError(f"market {market_id} has positions but no mark")
        equity_e16 += _scaled(qty, 8) * mark_e8  # e8 quantity x e8 mark = e16 cash
    return equity_e16


def ledger_liabilities(engine: EngineCore) -> LedgerLiabilities:
    """The liabilities of ``engine``'s ledger as it stands (ValueError if its state
    document is not what SPEC §8 describes)."""
    with collector_paused():
        return _liabilities(engine)


def _liabilities(engine: EngineCore) -> LedgerLiabilities:
    state = msgspec.json.decode(engine.state_json(), type=_State)
    marks_e8 = {
        market_id: None if market.mark is None else _scaled(market.mark, 8)
        for market_id, market in state.markets.items()
    }
    liabilities = [
        (account_id, max(0, _equity_e16(account, marks_e8)))
        for account_id, account in sorted(state.accounts.items())
        if account_id not in SYSTEM_ACCOUNTS
    ]
    return LedgerLiabilities(engine.seq, liabilities, engine.figures())
