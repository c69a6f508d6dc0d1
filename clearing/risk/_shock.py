"""Shocks: what a person types (``BTC-PERP=-30%``) and the engine inputs that express it.

A shock moves a market's mark by a relative amount. It reaches the engine as an ordinary
``oracle`` input at the shocked price, so a stress result is by construction what the
engine would do if that tick arrived next (``docs/fund-risk.md`` states the exact rule,
including how a tick the oracle guard holds back is confirmed).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final, NamedTuple

import msgspec

from clearing.engine.money import format_e8
from clearing.errors import UserError

__all__ = [
    "GRID_MOVES",
    "Move",
    "Shock",
    "describe_move",
    "oracle_input",
    "parse_shock",
    "shock_grid",
    "shocked_price_e8",
]

# MARKET=<signed decimal>% : the market id is everything before the last "=".
_SHOCK_RE: Final = re.compile(r"(?P<market>.+)=(?P<pct>[+-]?[0-9]+(?:\.[0-9]+)?)%")
# The default stress grid: each market alone, down and up by 10, 20, 30 and 50%.
GRID_MOVES: Final = tuple(Fraction(pct, 100) for pct in (-50, -30, -20, -10, 10, 20, 30, 50))
# The smallest price the wire can carry (1e-8): a scaled historical move below -100%
# lands here rather than at a price the engine would refuse.
MIN_PRICE_E8: Final = 1


class Shock(NamedTuple):
    """A relative move of one market's mark: ``move`` is -3/10 for ``-30%``."""

    market: str
    move: Fraction


class Move(NamedTuple):
    """One market's mark set to ``price_e8`` (what a scenario is made of)."""

    market: str
    price_e8: int


def parse_shock(text: str) -> Shock:
    """``MARKET=-30%`` -> Shock; a UserError saying what is wrong otherwise."""
    match = _SHOCK_RE.fullmatch(text)
    if match is None:
        raise UserError(f"--shock {text!r}: expected MARKET=PERCENT%, e.g. --shock BTC-PERP=-30%")
    move = Fraction(match["pct"]) / 100
    if move <= -1:
        raise UserError(
            f"--shock {text!r}: a move of -100% or more leaves no price; give a move above -100%"
        )
    return Shock(match["market"], move)


def shocked_price_e8(mark_e8: int, move: Fraction) -> int:
    """``mark * (1 + move)`` rounded half-even to the wire's 1e-8, at least 1e-8."""
    exact = mark_e8 * (1 + move)
    rounded = round(exact)  # Fraction.__round__ rounds half to even
    return max(MIN_PRICE_E8, rounded)


def oracle_input(market: str, price_e8: int) -> bytes:
    """The oracle input that sets ``market``'s mark to ``price_e8`` (no ``ts``)."""
    return b'{"type":"oracle","market":%s,"price":"%s"}' % (
        msgspec.json.encode(market),
        format_e8(price_e8).encode(),
    )


def describe_move(mark_e8: int, price_e8: int) -> str:
    """The move as a percentage for people, e.g. ``-30%`` (rounded to 0.01%)."""
    pct = Fraction(price_e8 - mark_e8, mark_e8) * 100
    return f"{float(pct):+.2f}%"


def shock_grid(marks_e8: dict[str, int]) -> list[Shock]:
    """The default grid's shocks, one per scenario: market-id order, then by move."""
    return [Shock(market, move) for market in sorted(marks_e8) for move in GRID_MOVES]
