"""Exact amounts as text for people: rounded half-even, with thousands separators."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from clearing.engine.money import E8, E16

__all__ = ["display_e8", "display_e16", "plural", "ratio_text"]


def display_e16(value_e16: int, places: int = 2) -> str:
    """An exact e16 amount rounded half-even for display, with thousands separators."""
    quantum = Decimal(1).scaleb(-places)
    rounded = (Decimal(value_e16) / E16).quantize(quantum, rounding=ROUND_HALF_EVEN)
    return f"{rounded:,}"


def display_e8(value_e8: int, places: int = 4) -> str:
    """An exact e8 quantity or price, rounded to ``places`` and without trailing zeros."""
    quantum = Decimal(1).scaleb(-places)
    rounded = (Decimal(value_e8) / E8).quantize(quantum, rounding=ROUND_HALF_EVEN)
    return f"{rounded.normalize():,f}" if rounded else "0"


def plural(count: int, noun: str) -> str:
    """``"1 draw"``, ``"1,234 draws"``."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def ratio_text(numerator_e16: int, denominator_e16: int) -> str | None:
    """An exact ratio rounded to 6 decimals, as text; None when the denominator is 0."""
    if denominator_e16 == 0:
        return None
    value = (Decimal(numerator_e16) / Decimal(denominator_e16)).quantize(
        Decimal("0.000001"), rounding=ROUND_HALF_EVEN
    )
    return str(value)
