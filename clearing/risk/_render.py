"""Formatting stress and risk results for people (tables) and tools (JSON). Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any, Final

from clearing.engine.money import format_e8, format_e16
from clearing.risk._outcome import MarketOutcome

__all__ = ["cash", "iso_ts", "outcome_json", "outcome_table", "price", "ratio_text", "table"]

_CENT: Final = Decimal("0.01")
_COLUMNS: Final = (
    ("liquidations", "liquidations"),
    ("accounts", "accounts_liquidated"),
    ("notional", "notional_e16"),
    ("fees", "fees_e16"),
    ("fund draws", "fund_draw_e16"),
    ("clawbacks", "clawback_e16"),
    ("ADL", "adl_e16"),
    ("bad debt", "bad_debt_e16"),
)


def cash(amount_e16: int) -> str:
    """An e16 amount for reading: thousands separators, rounded half-even to 0.01."""
    value = Decimal(format_e16(amount_e16)).quantize(_CENT, rounding=ROUND_HALF_EVEN)
    return f"{value:,}"


def ratio_text(ratio: Fraction | None, places: int = 4) -> str | None:
    """A ratio as a plain decimal rounded half-even (None stays None)."""
    if ratio is None:
        return None
    quantum = Decimal(1).scaleb(-places)
    exact = Decimal(ratio.numerator) / Decimal(ratio.denominator)
    return str(exact.quantize(quantum, rounding=ROUND_HALF_EVEN))


def iso_ts(ts_ns: int) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC, to the second."""
    moment = datetime.fromtimestamp(ts_ns // 10**9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def table(header: list[str], rows: list[list[str]]) -> str:
    """Plain text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def outcome_table(rows: list[tuple[list[str], MarketOutcome]], lead: list[str]) -> str:
    """The waterfall per market and in total; ``lead`` names the columns before the
    figures (each row brings its own cells for them)."""
    header = [*lead, *(title for title, _ in _COLUMNS)]
    body = []
    for cells, outcome in rows:
        figures = []
        for _, field in _COLUMNS:
            value = getattr(outcome, field)
            figures.append(cash(value) if field.endswith("_e16") else str(value))
        body.append([*cells, *figures])
    return table(header, body)


def outcome_json(outcome: MarketOutcome) -> dict[str, Any]:
    """A row's figures with exact amounts as decimal strings (``*_e16`` fields renamed)."""
    out: dict[str, Any] = {}
    for field in outcome.__struct_fields__:
        value = getattr(outcome, field)
        if field.endswith("_e16"):
            out[field.removesuffix("_e16")] = format_e16(value)
        else:
            out[field] = value
    return out


def price(price_e8: int) -> str:
    return format_e8(price_e8)
