"""Cross-margin arithmetic: equity and requirements, compared exactly, never rounded.

Equity is in e16 (cash plus ``q * m``); requirements ``|q| * m * ratio`` are in e24, so
equity is scaled by 1e8 before it is compared with them.
"""

from __future__ import annotations

from fractions import Fraction

from clearing.engine.money import E8
from clearing.engine.state import Account, MarketState

__all__ = [
    "equity_e16",
    "initial_requirement_e24",
    "liquidation_key",
    "maintenance_requirement_e24",
]


def equity_e16(account: Account, markets: dict[str, MarketState]) -> int:
    """E = C + sum(q * m)."""
    equity = account.cash_e16
    for market_id, position in account.positions.items():
        equity += position.qty_e8 * markets[market_id].mark_e8  # type: ignore[operator]
    return equity


def initial_requirement_e24(account: Account, markets: dict[str, MarketState]) -> int:
    """IM = sum(|q| * m * imr)."""
    total = 0
    for market_id, position in account.positions.items():
        market = markets[market_id]
        total += abs(position.qty_e8) * market.mark_e8 * market.imr_e8  # type: ignore[operator]
    return total


def maintenance_requirement_e24(account: Account, markets: dict[str, MarketState]) -> int:
    """MM = sum(|q| * m * mmr)."""
    total = 0
    for market_id, position in account.positions.items():
        market = markets[market_id]
        total += abs(position.qty_e8) * market.mark_e8 * market.mmr_e8  # type: ignore[operator]
    return total


def liquidation_key(account: Account, markets: dict[str, MarketState]) -> Fraction | None:
    """E/MM if the account is liquidatable (holds a position and E < MM), else None.

    System accounts are never liquidatable.
    """
    if account.is_system or not account.positions:
        return None
    equity_e24 = 0
    maintenance = 0
    for market_id, position in account.positions.items():
        market = markets[market_id]
        mark = market.mark_e8
        equity_e24 += position.qty_e8 * mark  # type: ignore[operator]
        maintenance += abs(position.qty_e8) * mark * market.mmr_e8  # type: ignore[operator]
    equity_e24 = (equity_e24 + account.cash_e16) * E8
    if equity_e24 < maintenance:
        return Fraction(equity_e24, maintenance)
    return None
