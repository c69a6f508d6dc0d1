"""The loss waterfall: close-out, fee, fund draw, clawback, bad debt (SPEC §4).

Functions here mutate the ledger and append output events; they never validate input
(the engine has already done that) and never touch I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from fractions import Fraction

from clearing.engine.events import (
    BadDebt,
    Clawback,
    FundDraw,
    Liquidation,
    OutputEvent,
)
from clearing.engine.margin import equity_e16, liquidation_key
from clearing.engine.money import CASH_PER_E8, E16, format_e8, format_e16, round_half_even_div
from clearing.engine.state import Account, Ledger

__all__ = ["resolve_accounts", "split_largest_remainder"]


def resolve_accounts(
    ledger: Ledger,
    seq: int,
    checked: Iterable[Account],
    bankrupt_market: str | None,
    out: list[OutputEvent],
) -> None:
    """Settle every checked account that is bankrupt or liquidatable, in SPEC §4 order.

    ``bankrupt_market`` is the market of the fill being applied (the market a bankrupt
    account is deemed to have held), or None when the input was not a fill.
    """
    markets = ledger.markets
    unique = {account.id: account for account in checked if not account.is_system}
    candidates = list(unique.values())
    if bankrupt_market is not None:
        bankrupt = sorted(
            (a for a in candidates if not a.positions and a.cash_e16 < 0), key=lambda a: a.id
        )
        for account in bankrupt:
            _cover_deficit(ledger, seq, account, [bankrupt_market], out, candidates)

    # Min-heap on (E/MM, id). Only a clawback debit changes another account's E/MM, and
    # it re-pushes the debited account, so a popped entry is current iff its key still is.
    # The push counter breaks exact ties so Account objects are never compared.
    heap: list[tuple[Fraction, str, int, Account]] = []
    pushes = 0
    for account in {a.id: a for a in candidates}.values():
        key = liquidation_key(account, markets)
        if key is not None:
            pushes += 1
            heap.append((key, account.id, pushes, account))
    heapq.heapify(heap)
    while heap:
        key, _, _, account = heapq.heappop(heap)
        if liquidation_key(account, markets) != key:
            continue
        debited: list[Account] = []
        _liquidate(ledger, seq, account, out, debited)
        for other in debited:
            other_key = liquidation_key(other, markets)
            if other_key is not None:
                pushes += 1
                heapq.heappush(heap, (other_key, other.id, pushes, other))


def _liquidate(
    ledger: Ledger, seq: int, account: Account, out: list[OutputEvent], debited: list[Account]
) -> None:
    markets = ledger.markets
    fund = ledger.fund
    held = sorted(account.positions)
    closed: list[tuple[str, int, int, int, int]] = []  # market, qty, proceeds, mark, fee
    for market_id in held:
        market = markets[market_id]
        qty_e8 = account.positions[market_id].qty_e8
        mark_e8 = market.mark_e8
        assert mark_e8 is not None  # a position implies a fill, which set a mark
        proceeds_e16 = market.book.close_out(qty_e8, mark_e8)
        ledger.move_cash(account, proceeds_e16)
        ledger.move_cash(fund, -proceeds_e16)
        ledger.set_position(account, market, 0, 0)
        fund_position = fund.positions.get(market_id)
        fund_qty_e8 = (fund_position.qty_e8 if fund_position else 0) + qty_e8
        # K of system accounts is never read (clawbacks skip them), so it stays 0.
        ledger.set_position(fund, market, fund_qty_e8, 0)
        fee_e8 = round_half_even_div(market.liq_fee_e8 * abs(proceeds_e16), E16)
        closed.append((market_id, qty_e8, proceeds_e16, mark_e8, fee_e8 * CASH_PER_E8))

    cash_left_e16 = max(0, account.cash_e16)
    for market_id, qty_e8, proceeds_e16, mark_e8, fee_e16 in closed:
        charged_e16 = min(fee_e16, cash_left_e16)
        cash_left_e16 -= charged_e16
        ledger.move_cash(account, -charged_e16)
        ledger.move_cash(fund, charged_e16)
        out.append(
            Liquidation(
                seq,
                account.id,
                market_id,
                format_e8(qty_e8),
                format_e16(proceeds_e16),
                format_e8(mark_e8),
                format_e16(charged_e16),
            )
        )
    if account.cash_e16 < 0:
        _cover_deficit(ledger, seq, account, held, out, debited)
    ledger.reindex(account)


def _cover_deficit(
    ledger: Ledger,
    seq: int,
    account: Account,
    held_markets: list[str],
    out: list[OutputEvent],
    debited: list[Account],
) -> None:
    """Steps 3-5: fund draw, clawback, bad debt. Leaves the account at exactly 0 cash."""
    markets = ledger.markets
    fund = ledger.fund
    deficit_e16 = -account.cash_e16
    available_e16 = max(0, equity_e16(fund, markets))
    draw_e16 = min(deficit_e16, available_e16)
    if draw_e16:
        ledger.move_cash(fund, -draw_e16)
        ledger.move_cash(account, draw_e16)
        out.append(FundDraw(seq, account.id, format_e16(draw_e16)))
    rest_e16 = deficit_e16 - draw_e16
    if rest_e16 == 0:
        return

    bases: dict[str, int] = {}
    payers: dict[str, Account] = {}
    for market_id in held_markets:
        market = markets[market_id]
        mark_e8 = market.mark_e8
        for holder_id, holder in market.holders.items():
            if holder.is_system or holder is account:
                continue
            position = holder.positions[market_id]
            base_e16 = position.qty_e8 * mark_e8 + position.k_e16  # type: ignore[operator]
            if base_e16 > 0:
                bases[holder_id] = bases.get(holder_id, 0) + base_e16
                payers[holder_id] = holder
    total_base_e16 = sum(bases.values())
    taken_e16 = min(rest_e16, total_base_e16)
    if taken_e16 == total_base_e16:
        parts = bases
    else:
        parts = split_largest_remainder(taken_e16, bases, total_base_e16)
    for payer_id in sorted(parts):
        amount_e16 = parts[payer_id]
        if amount_e16 == 0:
            continue
        payer = payers[payer_id]
        ledger.move_cash(payer, -amount_e16)
        ledger.move_cash(account, amount_e16)
        ledger.reindex_cash(payer)
        debited.append(payer)
        out.append(Clawback(seq, payer_id, format_e16(amount_e16), account.id))

    bad_debt_e16 = rest_e16 - taken_e16
    if bad_debt_e16:
        ledger.move_cash(ledger.bad_debt, -bad_debt_e16)
        ledger.move_cash(account, bad_debt_e16)
        out.append(BadDebt(seq, account.id, format_e16(bad_debt_e16)))
    assert account.cash_e16 == 0


def split_largest_remainder(total: int, weights: dict[str, int], weight_sum: int) -> dict[str, int]:
    """Split ``total`` pro rata to ``weights`` in whole units; parts sum exactly to it.

    Leftover units go to the largest remainders; ties go to the smaller id.
    """
    parts: dict[str, int] = {}
    remainders: list[tuple[int, str]] = []
    for key, weight in weights.items():
        part, remainder = divmod(total * weight, weight_sum)
        parts[key] = part
        remainders.append((-remainder, key))
    leftover = total - sum(parts.values())
    if leftover:
        remainders.sort()
        for _, key in remainders[:leftover]:
            parts[key] += 1
    return parts
