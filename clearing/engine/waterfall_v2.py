"""The loss waterfall under rules version 2 (SPEC §9 on top of §4).

One liquidation *step* at a time (§9.2): a partial step reduces each position by its
market's ``liq_step``; a full step is §4's close-out. Charged fees are split between the
fund and the fee pool by volatility (§9.3); a deficit left after the fund draw goes first
to auto-deleveraging in ``adl`` markets (§9.4), then to clawbacks that take only real,
remaining profit and lower ``K`` by what they take (§9.1), then to bad debt.

Version 1's waterfall (``waterfall``) is left untouched, so version-1 ledgers keep their
bytes; the two share only the pure helpers.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from fractions import Fraction

from clearing.engine.events import Adl, BadDebt, Clawback, FundDraw, Liquidation, OutputEvent
from clearing.engine.margin import equity_e16, liquidation_key, maintenance_requirement_e24
from clearing.engine.money import CASH_PER_E8, E8, E16, format_e8, format_e16, round_half_even_div
from clearing.engine.rules_v2 import ceil8_fraction, fund_share_e8, pool_part_e16
from clearing.engine.state import Account, Ledger, MarketState
from clearing.engine.waterfall import split_largest_remainder

__all__ = ["resolve_accounts_v2"]


def resolve_accounts_v2(
    ledger: Ledger,
    seq: int,
    checked: Iterable[Account],
    bankrupt_market: str | None,
    out: list[OutputEvent],
) -> None:
    """Settle every checked account that is bankrupt or liquidatable, one step at a time
    (SPEC §9.2's loop). ``bankrupt_market`` is the market of the fill being applied.

    Only a fill leaves an account bankrupt (flat with negative cash): a step, a clawback or
    an ADL payment never does (their caps keep a payer's cash at or above its
    requirement), so settling the fill's bankrupt accounts first is "before each step".
    """
    markets = ledger.markets
    candidates = list({a.id: a for a in checked if not a.is_system}.values())
    if bankrupt_market is not None:
        bankrupt = sorted(
            (a for a in candidates if not a.positions and a.cash_e16 < 0), key=lambda a: a.id
        )
        for account in bankrupt:
            _cover_deficit(ledger, seq, account, [(bankrupt_market, 0)], True, out, candidates)

    # Min-heap on (E/MM, id), as in version 1; a step re-pushes its account and every
    # account it debited, so a popped entry is current iff its key still is.
    heap: list[tuple[Fraction, str, int, Account]] = []
    pushes = 0
    for account in {a.id: a for a in candidates}.values():
        key = liquidation_key(account, markets)
        if key is not None:
            pushes += 1
            heap.append((key, account.id, pushes, account))
    heapq.heapify(heap)
    stepped: set[str] = set()  # accounts that took a partial step in this input
    while heap:
        key, _, _, account = heapq.heappop(heap)
        if liquidation_key(account, markets) != key:
            continue
        debited: list[Account] = [account]
        if _step(ledger, seq, account, account.id in stepped, out, debited):
            stepped.add(account.id)
        for other in debited:
            other_key = liquidation_key(other, markets)
            if other_key is not None:
                pushes += 1
                heapq.heappush(heap, (other_key, other.id, pushes, other))


def _step(
    ledger: Ledger,
    seq: int,
    account: Account,
    stepped_before: bool,
    out: list[OutputEvent],
    debited: list[Account],
) -> bool:
    """One liquidation step of a liquidatable account; True if it was a partial one."""
    markets = ledger.markets
    held = sorted(account.positions)
    equity_e24 = equity_e16(account, markets) * E8
    partial = not (
        stepped_before
        or 2 * equity_e24 < maintenance_requirement_e24(account, markets)
        or all(markets[market_id].liq_step_e8 == E8 for market_id in held)
    )
    closed = [_close_part(ledger, account, markets[market_id], partial) for market_id in held]
    _charge_fees(ledger, seq, account, closed, out)
    if not account.positions and account.cash_e16 < 0:
        taken = [(market.id, closed_e8) for market, closed_e8, _, _ in closed]
        _cover_deficit(ledger, seq, account, taken, False, out, debited)
    ledger.reindex(account)
    return partial


def _close_part(
    ledger: Ledger, account: Account, market: MarketState, partial: bool
) -> tuple[MarketState, int, int, int]:
    """Close the account's position in ``market`` (``ceil8(|q| * liq_step)`` of it in a
    partial step) against the book into the fund. Returns (market, signed quantity
    closed, proceeds e16, fee e16 before the cap)."""
    fund = ledger.fund
    position = account.positions[market.id]
    qty_e8 = position.qty_e8
    size_e8 = abs(qty_e8)
    if partial:
        size_e8 = min(size_e8, ceil8_fraction(size_e8, market.liq_step_e8))
    closed_e8 = size_e8 if qty_e8 > 0 else -size_e8
    mark_e8 = market.mark_e8
    assert mark_e8 is not None  # a position implies a fill, which set a mark
    proceeds_e16 = market.book.close_out(closed_e8, mark_e8)
    account.cash_e16 += proceeds_e16
    fund.cash_e16 -= proceeds_e16
    left_e8 = qty_e8 - closed_e8
    # The trade rule with the proceeds as the cash flow; K = 0 once flat.
    k_e16 = position.k_e16 + proceeds_e16 if left_e8 else 0
    ledger.set_position(account, market, left_e8, k_e16)
    fund_position = fund.positions.get(market.id)
    fund_qty_e8 = (fund_position.qty_e8 if fund_position else 0) + closed_e8
    ledger.set_position(fund, market, fund_qty_e8, 0)  # a system account's K is unread
    fee_e8 = round_half_even_div(market.liq_fee_e8 * abs(proceeds_e16), E16)
    return market, closed_e8, proceeds_e16, fee_e8 * CASH_PER_E8


def _charge_fees(
    ledger: Ledger,
    seq: int,
    account: Account,
    closed: list[tuple[MarketState, int, int, int]],
    out: list[OutputEvent],
) -> None:
    """Charge the closed parts' fees up to ``max(0, E)`` after the close-outs (= max(0, C)
    once flat), split between fee pool and fund by volatility; one event per part."""
    fund = ledger.fund
    cash_left_e16 = max(0, equity_e16(account, ledger.markets))
    for market, closed_e8, proceeds_e16, fee_e16 in closed:
        charged_e16 = min(fee_e16, cash_left_e16)
        cash_left_e16 -= charged_e16
        pool_e16 = pool_part_e16(charged_e16, fund_share_e8(market))
        account.cash_e16 -= charged_e16
        ledger.fee_pool.cash_e16 += pool_e16
        fund.cash_e16 += charged_e16 - pool_e16
        out.append(
            Liquidation(
                seq,
                account.id,
                market.id,
                format_e8(closed_e8),
                format_e16(proceeds_e16),
                format_e8(market.mark_e8),  # type: ignore[arg-type]
                format_e16(charged_e16),
                format_e16(charged_e16 - pool_e16),
            )
        )


def _cover_deficit(
    ledger: Ledger,
    seq: int,
    account: Account,
    taken: list[tuple[str, int]],
    bankrupt: bool,
    out: list[OutputEvent],
    debited: list[Account],
) -> None:
    """Steps 3-5 under version 2: fund draw, ADL, clawback, bad debt. ``taken`` lists the
    markets the step closed with the signed quantity the fund took over in each (market-id
    order); a bankrupt account's is the fill's market, with nothing to hand over."""
    markets = ledger.markets
    fund = ledger.fund
    deficit_e16 = -account.cash_e16
    draw_e16 = min(deficit_e16, max(0, equity_e16(fund, markets)))
    if draw_e16:
        fund.cash_e16 -= draw_e16
        account.cash_e16 += draw_e16
        out.append(FundDraw(seq, account.id, format_e16(draw_e16)))
    rest_e16 = deficit_e16 - draw_e16
    if rest_e16 == 0:
        return
    if bankrupt:
        claw_markets = [market_id for market_id, _ in taken]
    else:
        claw_markets = []
        for market_id, taken_e8 in taken:
            market = markets[market_id]
            if not market.adl:
                claw_markets.append(market_id)
            elif rest_e16 > 0:
                rest_e16 = _deleverage(
                    ledger, seq, account, market, taken_e8, rest_e16, out, debited
                )
    if rest_e16 > 0 and claw_markets:
        rest_e16 -= _claw_back(ledger, seq, account, claw_markets, rest_e16, out, debited)
    if rest_e16:
        ledger.bad_debt.cash_e16 -= rest_e16
        account.cash_e16 += rest_e16
        out.append(BadDebt(seq, account.id, format_e16(rest_e16)))
    assert account.cash_e16 == 0


def _deleverage(
    ledger: Ledger,
    seq: int,
    account: Account,
    market: MarketState,
    taken_e8: int,
    rest_e16: int,
    out: list[OutputEvent],
    debited: list[Account],
) -> int:
    """One ADL pass (SPEC §9.4) over ``market``; returns the deficit ``R`` left. Every
    candidate that traded joins ``debited`` (re-examined, like a clawback payer)."""
    handed_e8 = abs(taken_e8)  # U: left to hand over
    pass_rest_e16 = rest_e16  # R_M
    for holder, profit_e16, room_e24 in _adl_ranking(ledger, account, market, taken_e8):
        if handed_e8 == 0 or rest_e16 == 0:
            break
        qty_e8 = holder.positions[market.id].qty_e8
        size_e8 = min(abs(qty_e8), handed_e8)
        cap_e16 = min(profit_e16 * E8, room_e24) * size_e8 // (abs(qty_e8) * E8)
        # Pro rata to the part taken; the one that takes the last of Q owes what is left.
        last = size_e8 == handed_e8
        share_e16 = rest_e16 if last else size_e8 * pass_rest_e16 // abs(taken_e8)
        paid_e16 = min(rest_e16, cap_e16, share_e16)
        _hand_over(ledger, holder, market, size_e8, paid_e16)
        account.cash_e16 += paid_e16
        handed_e8 -= size_e8
        rest_e16 -= paid_e16
        debited.append(holder)
        closed_e8 = size_e8 if qty_e8 > 0 else -size_e8
        out.append(
            Adl(seq, holder.id, market.id, format_e8(closed_e8), format_e16(paid_e16), account.id)
        )
    return rest_e16


def _adl_ranking(
    ledger: Ledger, account: Account, market: MarketState, taken_e8: int
) -> list[tuple[Account, int, int]]:
    """ADL candidates in rank order, as (account, profit u e16, E - MM e24): opposite side
    to the position taken over, free margin, profit in ``market``; ``u/E`` descending,
    ties by account id, compared exactly."""
    markets = ledger.markets
    mark_e8: int = market.mark_e8  # type: ignore[assignment]
    ranked: list[tuple[Fraction, str, Account, int, int]] = []
    for holder in market.holders.values():
        if holder.is_system or holder is account:
            continue
        position = holder.positions[market.id]
        if (position.qty_e8 > 0) == (taken_e8 > 0):
            continue  # same side as the position taken over
        holder_equity_e16 = equity_e16(holder, markets)
        room_e24 = holder_equity_e16 * E8 - maintenance_requirement_e24(holder, markets)
        profit_e16 = position.qty_e8 * mark_e8 + position.k_e16
        if room_e24 <= 0 or profit_e16 <= 0:
            continue
        # E > MM > 0 here, so u/E is well defined; negated for an ascending sort.
        rank = Fraction(-profit_e16, holder_equity_e16)
        ranked.append((rank, holder.id, holder, profit_e16, room_e24))
    ranked.sort(key=lambda entry: (entry[0], entry[1]))
    return [(holder, profit_e16, room_e24) for _, _, holder, profit_e16, room_e24 in ranked]


def _hand_over(
    ledger: Ledger, holder: Account, market: MarketState, size_e8: int, paid_e16: int
) -> None:
    """The candidate closes ``size_e8`` of its position with the fund at the mark (a
    trade: K by the trade rule), then pays ``paid_e16`` out of cash and K (K = 0 if flat).
    The caller credits the liquidated account."""
    fund = ledger.fund
    mark_e8: int = market.mark_e8  # type: ignore[assignment]
    position = holder.positions[market.id]
    qty_e8 = position.qty_e8
    dq_e8 = size_e8 if qty_e8 < 0 else -size_e8  # towards 0: a short buys back
    left_e8 = qty_e8 + dq_e8
    k_e16 = position.k_e16 - dq_e8 * mark_e8 - paid_e16 if left_e8 else 0
    ledger.set_position(holder, market, left_e8, k_e16)
    holder.cash_e16 -= dq_e8 * mark_e8 + paid_e16
    fund.cash_e16 += dq_e8 * mark_e8
    fund_position = fund.positions.get(market.id)
    fund_qty_e8 = (fund_position.qty_e8 if fund_position else 0) - dq_e8
    ledger.set_position(fund, market, fund_qty_e8, 0)
    ledger.reindex(holder)


def _claw_back(
    ledger: Ledger,
    seq: int,
    account: Account,
    market_ids: list[str],
    rest_e16: int,
    out: list[OutputEvent],
    debited: list[Account],
) -> int:
    """Step 4 with SPEC §9.1: each payer's base is its profit in ``market_ids`` capped by
    ``floor16(E - MM)``; what it pays lowers its K per market. Returns the amount taken."""
    markets = ledger.markets
    profits: dict[str, dict[str, int]] = {}  # payer -> market -> max(0, q*m + K) > 0
    payers: dict[str, Account] = {}
    for market_id in market_ids:
        mark_e8: int = markets[market_id].mark_e8  # type: ignore[assignment]
        for holder_id, holder in markets[market_id].holders.items():
            if holder.is_system or holder is account:
                continue
            position = holder.positions[market_id]
            profit_e16 = position.qty_e8 * mark_e8 + position.k_e16
            if profit_e16 > 0:
                profits.setdefault(holder_id, {})[market_id] = profit_e16
                payers[holder_id] = holder
    bases: dict[str, int] = {}
    for holder_id, by_market in profits.items():
        holder = payers[holder_id]
        room_e24 = equity_e16(holder, markets) * E8 - maintenance_requirement_e24(holder, markets)
        base_e16 = min(sum(by_market.values()), max(0, room_e24 // E8))  # floor16
        if base_e16 > 0:
            bases[holder_id] = base_e16
    total_e16 = sum(bases.values())
    taken_e16 = min(rest_e16, total_e16)
    parts = (
        bases if taken_e16 == total_e16 else split_largest_remainder(taken_e16, bases, total_e16)
    )
    for payer_id in sorted(parts):
        amount_e16 = parts[payer_id]
        if amount_e16 == 0:
            continue
        payer = payers[payer_id]
        by_market = profits[payer_id]
        split = split_largest_remainder(amount_e16, by_market, sum(by_market.values()))
        for market_id, part_e16 in split.items():
            payer.positions[market_id].k_e16 -= part_e16
        payer.cash_e16 -= amount_e16
        account.cash_e16 += amount_e16
        ledger.reindex_cash(payer)
        debited.append(payer)
        out.append(Clawback(seq, payer_id, format_e16(amount_e16), account.id))
    return taken_e16
