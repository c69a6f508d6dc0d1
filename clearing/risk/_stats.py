"""Value at risk and expected shortfall of a finite sample of losses. Pure and exact.

For ``n`` losses and a confidence level ``a`` (e.g. 999/1000), let ``k = ceil(n * (1 - a))``
(at least 1) and sort the losses from the largest down:

- ``VaR_a`` is the k-th largest loss;
- ``ES_a`` is the mean of the k largest losses, rounded up to the unit (1e-16 of cash),
  so it never understates the tail.

With fewer than 1000 scenarios ``k`` is 1 at 99.9%: both are the worst loss seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from math import ceil
from typing import NamedTuple

__all__ = ["Tail", "tail"]


class Tail(NamedTuple):
    level: Fraction
    tail_count: int  # k: how many of the largest losses the ES averages
    var: int
    es: int


def tail(losses: Sequence[int], level: Fraction) -> Tail:
    """VaR and ES of ``losses`` (non-negative integers) at ``level`` (module docstring)."""
    if not losses:
        raise ValueError("no losses to measure")
    if not 0 < level < 1:
        raise ValueError("the level must be strictly between 0 and 1")
    k = max(1, ceil(len(losses) * (1 - level)))
    worst = sorted(losses, reverse=True)[:k]
    return Tail(level, k, worst[-1], -(-sum(worst) // k))
