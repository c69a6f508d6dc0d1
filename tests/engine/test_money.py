from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearing.engine.money import (
    MAX_WIRE_E8,
    format_e8,
    format_e16,
    parse_wire_e8,
    round_half_even_div,
)


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("1", 10**8),
        ("0.00000001", 1),
        ("-0.5", -(5 * 10**7)),
        ("-0", 0),
        ("007.10", 710_000_000),
        (12, 12 * 10**8),
        ("1000000000000000", MAX_WIRE_E8),
        (10**15, MAX_WIRE_E8),
        (-(10**15), -MAX_WIRE_E8),
    ],
)
def test_parse_accepts_wire_numbers(wire: object, expected: int) -> None:
    assert parse_wire_e8(wire) == expected


@pytest.mark.parametrize(
    "wire",
    [
        "1.",
        ".5",
        "+1",
        " 1",
        "1 ",
        "1e3",
        "1.123456789",
        "1_000",
        "\u0661",  # Arabic-Indic digit one: int() would take it
        "1\n",
        "",
        "-",
        "1000000000000000.00000001",
        10**15 + 1,
        1.5,
        True,
        None,
        [1],
    ],
)
def test_parse_rejects_everything_else(wire: object) -> None:
    assert parse_wire_e8(wire) is None


@given(st.integers(min_value=-MAX_WIRE_E8, max_value=MAX_WIRE_E8))
def test_format_parse_round_trip(value_e8: int) -> None:
    text = format_e8(value_e8)
    assert parse_wire_e8(text) == value_e8
    assert Decimal(text) == Decimal(value_e8) / 10**8
    assert not (("." in text) and text.endswith("0"))
    assert text != "-0"


def test_format_e16_plain_notation() -> None:
    assert format_e16(0) == "0"
    assert format_e16(-1) == "-0.0000000000000001"
    assert format_e16(306 * 10**15) == "30.6"
    assert format_e16(-(10**40)) == "-" + "1" + "0" * 24


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(5, 10, 0), (15, 10, 2), (25, 10, 2), (26, 10, 3), (24, 10, 2), (0, 7, 0), (7, 7, 1)],
)
def test_round_half_even(numerator: int, denominator: int, expected: int) -> None:
    assert round_half_even_div(numerator, denominator) == expected


@given(
    st.text(alphabet="0123456789.-+ e\u0663\u00b2_", max_size=30)
    | st.from_regex(r"[0-9]{1,20}(\.[0-9]{0,10})?", fullmatch=True)
)
def test_fast_decimal_path_agrees_with_the_exact_one(text: str) -> None:
    from clearing.engine.money import _parse_decimal, _parse_decimal_exact

    assert _parse_decimal(text) == _parse_decimal_exact(text)
