"""The Python core's ledger figures (``EngineCore.summary`` and ``figures``).

The same numbers the native core computes in ``native/src/state.rs`` (``summary``,
``figures``), from one pass over the accounts; the contract tests hold them equal.
"""

from __future__ import annotations

from clearing.engine._contract import LedgerFigures, LedgerSummary, MarketFigures, MarketSummary
from clearing.engine.margin import equity_e16, initial_requirement_e24
from clearing.engine.money import E8
from clearing.engine.rules_v2 import fund_share_e8
from clearing.engine.state import Ledger

__all__ = ["ledger_figures", "ledger_summary"]


def _long_open_interest_e8(ledger: Ledger) -> dict[str, int]:
    """Per market, the sum of the long positions' quantities (e8)."""
    long_e8 = dict.fromkeys(ledger.markets, 0)
    for account in ledger.accounts.values():
        for market_id, position in account.positions.items():
            if position.qty_e8 > 0:
                long_e8[market_id] += position.qty_e8
    return long_e8


def ledger_summary(ledger: Ledger) -> LedgerSummary:
    long_e8 = _long_open_interest_e8(ledger)
    markets = ledger.markets
    return LedgerSummary(
        accounts=len(ledger.accounts),
        positions=sum(len(account.positions) for account in ledger.accounts.values()),
        fund_equity_e16=equity_e16(ledger.fund, markets),
        markets=[
            MarketSummary(market_id, long_e8[market_id], markets[market_id].mark_e8)
            for market_id in sorted(markets)
        ],
    )


def ledger_figures(ledger: Ledger) -> LedgerFigures:
    markets = ledger.markets
    long_e8 = _long_open_interest_e8(ledger)
    traders = below_im = 0
    for account in ledger.accounts.values():
        if account.is_system or not account.positions:
            continue
        traders += 1
        # IM is e24 and equity e16: scale equity by 1e8 to compare exactly.
        if equity_e16(account, markets) * E8 < initial_requirement_e24(account, markets):
            below_im += 1
    return LedgerFigures(
        accounts=len(ledger.accounts),
        fund_cash_e16=ledger.fund.cash_e16,
        fund_equity_e16=equity_e16(ledger.fund, markets),
        fee_pool_cash_e16=ledger.fee_pool.cash_e16,
        bad_debt_cash_e16=ledger.bad_debt.cash_e16,
        markets=[
            MarketFigures(
                market_id,
                long_e8[market_id],
                markets[market_id].mark_e8,
                markets[market_id].held_e8 is not None,
                # Under version 1 these stay at their defaults (v = 0, share = 1).
                markets[market_id].vol_e16,
                fund_share_e8(markets[market_id]),
            )
            for market_id in sorted(markets)
        ],
        traders=traders,
        traders_below_im=below_im,
    )
