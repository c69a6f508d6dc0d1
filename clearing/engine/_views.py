"""The Python core's read views (``EngineCore.account_view``, ``market_view``, ``rankings``).

Each is canonical JSON bytes: keys in code-point order, money as the SPEC's decimal
strings (cash and equity e16, margin requirements e24, prices and quantities e8), so the
native core (``native/src/views.rs``) can give the same bytes and the differential tests
compare them directly. The daemon's read API (``clearing.ops.read_api``) stamps them
with the seq they reflect.

Distance to liquidation, per position: with every other mark fixed, the mark in this
market at which the account first has E < MM (``liquidation_mark``), and its signed
distance from the current mark (``mark_move``: negative for a long, which is hurt by a
fall, positive for a short). The buffer ``E - MM`` is linear in one market's mark, so the
bound is exact in e8 price units, like the liquidation index's single-position
thresholds (``state.threshold_e8``). ``null`` when no positive mark gets there (a long
whose other holdings and cash cover it at any price, or ``mmr = 1``) and for system
accounts, which are never liquidated. An account already at E < MM (possible only for a
moment inside an input, never in a committed state) shows its current mark, move 0.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from itertools import islice

import msgspec

from clearing.engine.money import E8, E16, format_e8, format_e16, format_e24
from clearing.engine.state import Ledger

__all__ = ["account_view", "liquidation_mark_e8", "market_view", "rankings"]

_encoder = msgspec.json.Encoder()


def _opt_e8(value: int | None) -> str | None:
    return None if value is None else format_e8(value)


def _slope_e16(qty_e8: int, mmr_e8: int) -> int:
    """A position's buffer term per unit of mark: ``q * (1 - mmr)`` long, ``q * (1 + mmr)``
    short (e16), so its share of ``E - MM`` at mark m is ``m * slope`` (e24)."""
    return qty_e8 * (E8 - mmr_e8) if qty_e8 > 0 else qty_e8 * (E8 + mmr_e8)


def liquidation_mark_e8(rest_e24: int, qty_e8: int, mmr_e8: int) -> int | None:
    """The mark (e8) nearest the current one at which ``rest + m * slope < 0`` begins, where
    ``rest`` is the buffer without this position's term; None if no positive mark does."""
    slope = _slope_e16(qty_e8, mmr_e8)
    if qty_e8 > 0:
        if slope == 0:
            return None
        bound = -(rest_e24 // slope) - 1  # the largest m with rest + m * slope < 0
        return bound if bound >= 1 else None
    return rest_e24 // -slope + 1  # the smallest m with rest - m * |slope| < 0


def account_view(ledger: Ledger, account_id: str) -> bytes | None:
    account = ledger.accounts.get(account_id)
    if account is None:
        return None
    markets = ledger.markets
    equity = account.cash_e16
    im_e24 = mm_e24 = 0
    buffer_e24 = account.cash_e16 * E8
    for market_id, position in account.positions.items():
        market = markets[market_id]
        mark: int = market.mark_e8  # type: ignore[assignment]
        equity += position.qty_e8 * mark
        im_e24 += abs(position.qty_e8) * mark * market.imr_e8
        mm_e24 += abs(position.qty_e8) * mark * market.mmr_e8
        buffer_e24 += mark * _slope_e16(position.qty_e8, market.mmr_e8)
    positions = {}
    for market_id in sorted(account.positions):
        qty_e8 = account.positions[market_id].qty_e8
        market = markets[market_id]
        mark = market.mark_e8  # type: ignore[assignment]
        if account.is_system:
            bound = None
        elif buffer_e24 < 0:
            bound = mark
        else:
            rest_e24 = buffer_e24 - mark * _slope_e16(qty_e8, market.mmr_e8)
            bound = liquidation_mark_e8(rest_e24, qty_e8, market.mmr_e8)
        positions[market_id] = {
            "liquidation_mark": _opt_e8(bound),
            "mark": format_e8(mark),
            "mark_move": None if bound is None else format_e8(bound - mark),
            "notional": format_e16(qty_e8 * mark),
            "qty": format_e8(qty_e8),
        }
    return _encoder.encode(
        {
            "account": account_id,
            "cash": format_e16(account.cash_e16),
            "equity": format_e16(equity),
            "initial_margin": format_e24(im_e24),
            "maintenance_margin": format_e24(mm_e24),
            "positions": positions,
            "system": account.is_system,
        }
    )


def market_view(ledger: Ledger, market_id: str, depth: int, rules_version: int) -> bytes | None:
    """One market; under rules version 2 also its volatility estimate ``v`` (SPEC §9.3,
    a variance per tick, e16). A version-1 ledger has no estimate: the key is absent,
    so its answers stay what they were before version 2."""
    market = ledger.markets.get(market_id)
    if market is None:
        return None
    book = market.book
    view: dict[str, object] = {
        "ask_levels": len(book.asks),
        "asks": [[format_e8(p), format_e8(q)] for p, q in islice(book.asks.items(), depth)],
        "bid_levels": len(book.bids),
        "bids": [[format_e8(-k), format_e8(q)] for k, q in islice(book.bids.items(), depth)],
        "held": _opt_e8(market.held_e8),
        "holders": len(market.holders),
        "imr": format_e8(market.imr_e8),
        "liq_fee": format_e8(market.liq_fee_e8),
        "mark": _opt_e8(market.mark_e8),
        "market": market_id,
        "max_oracle_move": _opt_e8(market.max_oracle_move_e8),
        "mmr": format_e8(market.mmr_e8),
        "open_interest": format_e8(market.long_oi_e8),
    }
    if rules_version != 1:
        view["volatility"] = format_e16(market.vol_e16)  # the last key in code-point order
    return _encoder.encode(view)


class _ByRatio:
    """An account's E/MM for ordering, exact (MM > 0: cross-multiplied), ties by id."""

    __slots__ = ("account_id", "equity_e16", "mm_e24")

    def __init__(self, equity_e16: int, mm_e24: int, account_id: str) -> None:
        self.equity_e16 = equity_e16
        self.mm_e24 = mm_e24
        self.account_id = account_id

    def __lt__(self, other: _ByRatio) -> bool:
        left = self.equity_e16 * other.mm_e24
        right = other.equity_e16 * self.mm_e24
        return left < right or (left == right and self.account_id < other.account_id)


def _ratios(ledger: Ledger) -> Iterator[_ByRatio]:
    markets = ledger.markets
    for account in ledger.accounts.values():
        if account.is_system or not account.positions:
            continue
        equity_e16 = account.cash_e16
        mm_e24 = 0
        for market_id, position in account.positions.items():
            market = markets[market_id]
            notional_e16 = position.qty_e8 * market.mark_e8  # type: ignore[operator]
            equity_e16 += notional_e16
            mm_e24 += abs(notional_e16) * market.mmr_e8
        yield _ByRatio(equity_e16, mm_e24, account.id)


def rankings(ledger: Ledger, limit: int) -> bytes:
    """Per market the ``limit`` largest positions (|q| descending, ties by account id,
    system accounts included); and the ``limit`` non-system accounts holding a position
    with the smallest E/MM (exact; ties by account id), the order §4 liquidates in."""
    markets = ledger.markets
    largest = {}
    for market_id in sorted(markets):
        holders = markets[market_id].holders.values()
        qtys = ((a.positions[market_id].qty_e8, a.id) for a in holders)
        top = heapq.nsmallest(limit, ((-abs(q), a, q) for q, a in qtys))
        largest[market_id] = [{"account": a, "qty": format_e8(q)} for _, a, q in top]
    nearest = heapq.nsmallest(limit, _ratios(ledger))
    return _encoder.encode(
        {
            "largest_positions": largest,
            "nearest_liquidation": [
                {
                    "account": r.account_id,
                    "equity": format_e16(r.equity_e16),
                    "maintenance_margin": format_e24(r.mm_e24),
                    # E/MM floored to 8 decimals: E e16 * 1e16 / MM e24 is e8.
                    "margin_ratio": format_e8(r.equity_e16 * E16 // r.mm_e24),
                }
                for r in nearest
            ],
        }
    )
