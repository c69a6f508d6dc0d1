"""Exact money: every number is a scaled Python integer, never a float.

Wire numbers (prices, quantities, amounts, fees, ratios) carry at most 8 decimals, so
they are held as integers in units of 1e-8 (``*_e8``). Cash moved by a trade is an exact
product ``price * qty`` and is held in units of 1e-16 (``*_e16``). Margin requirements are
products of three wire numbers (``|q| * m * ratio``) and are compared in units of 1e-24
without ever being rounded. Formatting and parsing happen only at the edges.
"""

from __future__ import annotations

import re

__all__ = [
    "CASH_PER_E8",
    "E8",
    "E16",
    "MAX_WIRE_E8",
    "format_e8",
    "format_e16",
    "format_e24",
    "parse_wire_e8",
    "round_half_even_div",
]

E8 = 10**8
E16 = 10**16
# Converting an e8 amount (deposit, fee) into e16 cash units.
CASH_PER_E8 = 10**8
# The SPEC caps wire magnitudes at 1e15; anything above is an invalid field.
MAX_WIRE_E8 = 10**15 * E8

# ASCII digits only: Python's int() and str.isdigit() would accept other scripts' digits.
_DECIMAL_RE = re.compile(r"-?[0-9]+(?:\.[0-9]{1,8})?")
# Integer parts longer than this get a cheap significant-digit check before int().
_MAX_WIRE_CHARS = 32


# Prices, fees and sizes repeat a lot in a stream, and parsing is a visible share of the
# cost per input, so short strings' results are remembered. A pure function's cache: it
# changes no result. Cleared when full, so its memory stays bounded.
_PARSED: dict[str, int | None] = {}
_PARSED_MAX_ENTRIES = 1 << 16
_PARSED_MAX_CHARS = 24
_MISSING = object()


def parse_wire_e8(value: object) -> int | None:
    """Parse a wire number into e8 units, or return None if it is not a valid one.

    Valid: a decimal string matching ``-?[0-9]+(\\.[0-9]{1,8})?`` or a JSON integer
    (not a bool), with magnitude at most 1e15.
    """
    if type(value) is str:
        parsed = _PARSED.get(value, _MISSING)
        if parsed is not _MISSING:
            return parsed  # type: ignore[return-value]
        parsed = _parse_decimal(value)
        if len(value) <= _PARSED_MAX_CHARS:
            if len(_PARSED) >= _PARSED_MAX_ENTRIES:
                _PARSED.clear()
            _PARSED[value] = parsed
        return parsed
    if type(value) is int:
        scaled = value * E8
        if -MAX_WIRE_E8 <= scaled <= MAX_WIRE_E8:
            return scaled
    return None


# 10 ** (8 - number of decimals given), to scale a fraction of 1 to 8 digits to e8.
_FRACTION_SCALE = tuple(10 ** (8 - digits) for digits in range(9))


def _parse_decimal(value: str) -> int | None:
    # Fast path for the common shape: unsigned ASCII digits, at most 16 before the point
    # and 1-8 after it. str.isdigit alone would accept other scripts' digits, hence the
    # isascii. Anything else (signs, errors, long digit runs) takes the exact path below.
    if value.isascii():
        whole, dot, frac = value.partition(".")
        if whole.isdigit() and len(whole) <= 16:
            if not dot:
                scaled = int(whole) * E8
                return scaled if scaled <= MAX_WIRE_E8 else None
            if frac.isdigit() and len(frac) <= 8:
                scaled = int(whole) * E8 + int(frac) * _FRACTION_SCALE[len(frac)]
                return scaled if scaled <= MAX_WIRE_E8 else None
    return _parse_decimal_exact(value)


def _parse_decimal_exact(value: str) -> int | None:
    if _DECIMAL_RE.fullmatch(value) is None:
        return None
    whole, dot, frac = value.partition(".")
    # 1e15 has 16 digits: longer integer parts (leading zeros aside) are out of range,
    # and must never reach int(), whose 4300-digit limit raises ValueError.
    negative = whole.startswith("-")
    if len(whole) > _MAX_WIRE_CHARS:
        whole = whole.lstrip("-").lstrip("0") or "0"
        if len(whole) > 16:
            return None
    scaled = abs(int(whole)) * E8 + (int(frac.ljust(8, "0")) if dot else 0)
    if negative:
        scaled = -scaled
    if -MAX_WIRE_E8 <= scaled <= MAX_WIRE_E8:
        return scaled
    return None


def _format_scaled(value: int, places: int, scale: int) -> str:
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), scale)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}." + f"{frac:0{places}d}".rstrip("0")


def format_e8(value: int) -> str:
    """Plain decimal notation of an e8 integer, no trailing zeros (``"30.6"``, ``"0"``)."""
    return _format_scaled(value, 8, E8)


def format_e16(value: int) -> str:
    """Plain decimal notation of an e16 integer, no trailing zeros."""
    return _format_scaled(value, 16, E16)


def format_e24(value: int) -> str:
    """Plain decimal notation of an e24 integer (a margin requirement), no trailing zeros."""
    return _format_scaled(value, 24, E16 * E8)


def round_half_even_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half to even; ``numerator >= 0, denominator > 0``."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient & 1):
        quotient += 1
    return quotient
