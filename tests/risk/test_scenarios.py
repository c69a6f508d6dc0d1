"""Shocks as prices and inputs, and historical horizon scenarios (pure code)."""

from __future__ import annotations

from fractions import Fraction

import msgspec
import pytest

from clearing.errors import UserError
from clearing.risk._history import OracleTick, horizon_scenarios, sample, to_moves
from clearing.risk._shock import Move, oracle_input, parse_shock, shocked_price_e8

S = 10**9  # one second in ns
E8 = 10**8


@pytest.mark.parametrize(
    ("text", "market", "move"),
    [
        ("BTC-PERP=-30%", "BTC-PERP", Fraction(-3, 10)),
        ("ETH=+12.5%", "ETH", Fraction(1, 8)),
        ("A=B=5%", "A=B", Fraction(1, 20)),
        ("SOL=-99.99%", "SOL", Fraction(-9999, 10000)),
    ],
)
def test_shocks_parse_exactly(text: str, market: str, move: Fraction) -> None:
    shock = parse_shock(text)
    assert (shock.market, shock.move) == (market, move)


@pytest.mark.parametrize("text", ["BTC=-30", "=-30%", "BTC=abc%", "BTC", "BTC=-1e2%", "BTC=--3%"])
def test_malformed_shocks_are_user_errors(text: str) -> None:
    with pytest.raises(UserError, match="expected MARKET=PERCENT%"):
        parse_shock(text)


@pytest.mark.parametrize("text", ["BTC=-100%", "BTC=-150%"])
def test_a_move_to_zero_or_below_is_refused(text: str) -> None:
    with pytest.raises(UserError, match="-100%"):
        parse_shock(text)


def test_shocked_prices_round_half_even_to_the_wire() -> None:
    assert shocked_price_e8(100 * E8, Fraction(-3, 10)) == 70 * E8
    assert shocked_price_e8(3, Fraction(1, 2)) == 4  # 4.5 -> 4
    assert shocked_price_e8(5, Fraction(1, 2)) == 8  # 7.5 -> 8
    assert shocked_price_e8(1, Fraction(-9, 10)) == 1  # never below the smallest price


def test_the_oracle_input_is_valid_json_with_the_exact_price() -> None:
    raw = oracle_input('we"ird', 8_512_345_678)
    assert msgspec.json.decode(raw) == {
        "type": "oracle",
        "market": 'we"ird',
        "price": "85.12345678",
    }


def _ticks() -> list[OracleTick]:
    return [
        OracleTick(0 * S, "A", 100 * E8),
        OracleTick(0 * S, "B", 10 * E8),
        OracleTick(10 * S, "A", 110 * E8),
        OracleTick(20 * S, "A", 99 * E8),
        OracleTick(25 * S, "B", 12 * E8),
        OracleTick(30 * S, "A", 99 * E8),
        OracleTick(30 * S, "C", 5 * E8),  # not a market of the ledger: ignored
    ]


def test_horizon_intervals_step_back_from_the_last_tick() -> None:
    scenarios = horizon_scenarios(_ticks(), ["A", "B"], horizon_ns=10 * S)
    assert [(s.start_ns, s.end_ns) for s in scenarios] == [
        (0, 10 * S),
        (10 * S, 20 * S),
        (20 * S, 30 * S),
    ]
    assert [s.returns for s in scenarios] == [
        {"A": Fraction(11, 10)},
        {"A": Fraction(9, 10)},
        {"B": Fraction(6, 5)},  # A did not move over (20, 30]
    ]


def test_overlapping_intervals_and_a_window() -> None:
    overlapping = horizon_scenarios(_ticks(), ["A", "B"], horizon_ns=10 * S, step_ns=5 * S)
    assert len(overlapping) == 5  # ends at 30, 25, 20, 15, 10
    windowed = horizon_scenarios(_ticks(), ["A", "B"], 10 * S, step_ns=5 * S, window_ns=15 * S)
    assert [s.end_ns for s in windowed] == [25 * S, 30 * S]
    assert horizon_scenarios(_ticks(), ["A"], horizon_ns=31 * S) == []


def test_scaled_moves_apply_to_todays_marks() -> None:
    [first, second, _] = horizon_scenarios(_ticks(), ["A", "B"], horizon_ns=10 * S)
    marks = {"A": 50 * E8, "B": 20 * E8}
    assert to_moves(first, marks, Fraction(1)) == [Move("A", 55 * E8)]
    assert to_moves(first, marks, Fraction(3, 2)) == [Move("A", 5750 * E8 // 100)]
    # -10% scaled by 20 is -200%: the price stops at the smallest one.
    assert to_moves(second, marks, Fraction(20)) == [Move("A", 1)]


def test_sampling_is_seeded_and_keeps_time_order() -> None:
    scenarios = horizon_scenarios(_ticks(), ["A", "B"], horizon_ns=2 * S, step_ns=1 * S)
    one, again = sample(scenarios, 5, seed=7), sample(scenarios, 5, seed=7)
    assert one == again and len(one) == 5
    assert [s.end_ns for s in one] == sorted(s.end_ns for s in one)
    assert sample(scenarios, 10_000, seed=7) == scenarios
    assert any(sample(scenarios, 5, seed=s) != one for s in range(8, 20))
