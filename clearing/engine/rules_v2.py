"""Rules version 2's arithmetic (SPEC §9): volatility, fee split, funding, rounding.

Pure integer functions, no ledger access: the waterfall and the engine call them. Units
as in ``money``: ratios and prices e8, cash e16, the volatility estimate (a variance per
tick) e16.
"""

from __future__ import annotations

from typing import Final

from clearing.engine.money import E8, E16, round_half_even_div
from clearing.engine.state import MarketState

__all__ = [
    "NEWEST_RULES",
    "RULES_VERSIONS",
    "ceil8_fraction",
    "fund_share_e8",
    "funding_payment_e16",
    "next_volatility_e16",
    "pool_part_e16",
    "signed_round_half_even_div",
]

# Every rules version this build implements; a ledger that recorded none is version 1.
RULES_VERSIONS: Final = (1, 2)
NEWEST_RULES: Final = 2


def signed_round_half_even_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half to even, any sign; ``denominator > 0``.
    (Half-even is symmetric, so the magnitude is rounded and the sign put back.)"""
    magnitude = round_half_even_div(abs(numerator), denominator)
    return -magnitude if numerator < 0 else magnitude


def ceil8_fraction(qty_e8: int, fraction_e8: int) -> int:
    """``ceil8(qty * fraction)`` in e8, for ``qty, fraction >= 0``."""
    return -(-(qty_e8 * fraction_e8) // E8)


def next_volatility_e16(vol_e16: int, mark_e8: int, price_e8: int, lambda_e8: int) -> int:
    """``round16(v + lambda * ((p - m)^2 / m^2 - v))``, exact before the one rounding.

    Over the common denominator ``1e8 * m^2`` (e16 result):
    ``(v * 1e8 * m^2 + lambda * ((p - m)^2 * 1e16 - v * m^2)) / (1e8 * m^2)``; the value
    is ``(1 - lambda) v + lambda r >= 0`` because ``lambda <= 1``, so the numerator is too.
    """
    mark_sq = mark_e8 * mark_e8
    move_sq = (price_e8 - mark_e8) ** 2
    numerator = vol_e16 * E8 * mark_sq + lambda_e8 * (move_sq * E16 - vol_e16 * mark_sq)
    return round_half_even_div(numerator, E8 * mark_sq)


def fund_share_e8(market: MarketState) -> int:
    """The fund's share of a charged fee: the last tier with ``sigma^2 <= v``, else
    ``fund_share``. (sigma e8 squared is e16, like v.)"""
    share_e8 = market.fund_share_e8
    for sigma_e8, tier_share_e8 in market.vol_tiers:
        if sigma_e8 * sigma_e8 > market.vol_e16:
            break  # sigmas ascend: no later tier qualifies
        share_e8 = tier_share_e8
    return share_e8


def pool_part_e16(charged_e16: int, share_e8: int) -> int:
    """``round16(charged * (1 - share))``: what ``fee-pool`` gets of a charged fee."""
    return round_half_even_div(charged_e16 * (E8 - share_e8), E8)


def funding_payment_e16(qty_e8: int, mark_e8: int, rate_e8: int) -> int:
    """``round16(q * m * rate)`` (e24 product to e16, half-even; negative = receives)."""
    return signed_round_half_even_div(qty_e8 * mark_e8 * rate_e8, E8)
