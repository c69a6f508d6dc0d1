"""VaR and expected shortfall on hand-made loss sets whose answers are known."""

from __future__ import annotations

from fractions import Fraction

import pytest

from clearing.risk import tail

P99 = Fraction(99, 100)
P999 = Fraction(999, 1000)


def test_a_thousand_losses_one_to_a_thousand() -> None:
    losses = list(range(1, 1001))[::-1]  # order does not matter
    # 99%: the worst ceil(1000 * 0.01) = 10 losses are 991..1000, mean 995.5, rounded up.
    assert tail(losses, P99) == (P99, 10, 991, 996)
    # 99.9%: the single worst loss.
    assert tail(losses, P999) == (P999, 1, 1000, 1000)


def test_the_tail_count_rounds_up() -> None:
    losses = [0] * 1495 + [10, 20, 30, 40, 50]
    # ceil(1500 * 0.001) = 2: the two worst, 50 and 40.
    assert tail(losses, P999) == (P999, 2, 40, 45)
    # ceil(1500 * 0.01) = 15: 50+40+30+20+10 over 15 = 10.
    assert tail(losses, P99) == (P99, 15, 0, 10)


def test_fewer_scenarios_than_the_tail_take_the_worst() -> None:
    assert tail([7, 3, 9], P999) == (P999, 1, 9, 9)
    assert tail([0, 0, 0], P99) == (P99, 1, 0, 0)


def test_the_mean_is_rounded_up_never_down() -> None:
    # 200 scenarios at 99%: k = 2, (5 + 4) / 2 = 4.5 -> 5 units of 1e-16.
    assert tail([5, 4] + [1] * 198, P99).es == 5


def test_no_losses_or_a_bad_level_is_refused() -> None:
    with pytest.raises(ValueError):
        tail([], P99)
    with pytest.raises(ValueError):
        tail([1], Fraction(1))
