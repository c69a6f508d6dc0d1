"""Historical simulation: scenarios from the ledger's own oracle history. Pure.

The price of a market at time ``t`` is the price of its last oracle input stamped at or
before ``t`` (the feed, as the journal recorded it). A scenario is one horizon interval
``(t - horizon, t]``: every market's return over it, ``P(t) / P(t - horizon)``, taken
together (the joint move). Interval ends step back from the last tick by ``step``
(default: the horizon, so intervals do not overlap), inside the window, and an interval
counts only if it starts at or after the window's first tick. A market without a price
at both ends of an interval does not move in that scenario.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import NamedTuple

import msgspec

from clearing.engine.money import parse_wire_e8
from clearing.risk._shock import Move, shocked_price_e8

__all__ = [
    "HistoricalScenario",
    "OracleTick",
    "horizon_scenarios",
    "oracle_tick",
    "sample",
    "to_moves",
]


class OracleTick(NamedTuple):
    ts_ns: int
    market: str
    price_e8: int


class _Tick(msgspec.Struct, gc=False):
    type: str
    market: object = None
    price: object = None
    ts: object = None


_decode_tick = msgspec.json.Decoder(_Tick).decode


def oracle_tick(payload: bytes) -> OracleTick | None:
    """The tick of a stamped, well-formed oracle input; None for any other input."""
    if b'"oracle"' not in payload:
        return None
    try:
        tick = _decode_tick(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if tick.type != "oracle" or type(tick.market) is not str or type(tick.ts) is not int:
        return None
    price_e8 = parse_wire_e8(tick.price)
    if price_e8 is None or price_e8 <= 0:
        return None
    return OracleTick(tick.ts, tick.market, price_e8)


class HistoricalScenario(NamedTuple):
    """One horizon interval: ``returns`` maps a market to ``P(end) / P(start)``."""

    start_ns: int
    end_ns: int
    returns: dict[str, Fraction]


class _Series:
    """One market's price path: tick times (ascending) and their prices."""

    def __init__(self) -> None:
        self.ts_ns: list[int] = []
        self.price_e8: list[int] = []

    def at(self, ts_ns: int) -> int | None:
        """The last price stamped at or before ``ts_ns``; None before the first tick."""
        i = bisect.bisect_right(self.ts_ns, ts_ns)
        return self.price_e8[i - 1] if i else None


def _series(ticks: Iterable[OracleTick], markets: Iterable[str]) -> dict[str, _Series]:
    wanted = set(markets)
    series: dict[str, _Series] = {}
    for tick in sorted(t for t in ticks if t.market in wanted):
        path = series.setdefault(tick.market, _Series())
        if path.ts_ns and path.ts_ns[-1] == tick.ts_ns:
            path.price_e8[-1] = tick.price_e8  # same stamp: the later input wins
        else:
            path.ts_ns.append(tick.ts_ns)
            path.price_e8.append(tick.price_e8)
    return series


def horizon_scenarios(
    ticks: Sequence[OracleTick],
    markets: Iterable[str],
    horizon_ns: int,
    step_ns: int | None = None,
    window_ns: int | None = None,
) -> list[HistoricalScenario]:
    """Every horizon interval of the history, oldest first (module docstring)."""
    if horizon_ns <= 0 or (step_ns is not None and step_ns <= 0):
        raise ValueError("the horizon and the step must be positive")
    series = _series(ticks, markets)
    if not series:
        return []
    last_ns = max(path.ts_ns[-1] for path in series.values())
    first_ns = min(path.ts_ns[0] for path in series.values())
    if window_ns is not None:
        first_ns = max(first_ns, last_ns - window_ns)
    step = horizon_ns if step_ns is None else step_ns
    scenarios: list[HistoricalScenario] = []
    end_ns = last_ns
    while end_ns - horizon_ns >= first_ns:
        start_ns = end_ns - horizon_ns
        returns: dict[str, Fraction] = {}
        for market, path in sorted(series.items()):
            before, after = path.at(start_ns), path.at(end_ns)
            if before is not None and after is not None and after != before:
                returns[market] = Fraction(after, before)
        scenarios.append(HistoricalScenario(start_ns, end_ns, returns))
        end_ns -= step
    scenarios.reverse()
    return scenarios


def sample(scenarios: list[HistoricalScenario], limit: int, seed: int) -> list[HistoricalScenario]:
    """At most ``limit`` scenarios: all of them if there are no more, else a uniform
    sample without replacement drawn with ``random.Random(seed)``, kept in time order."""
    if len(scenarios) <= limit:
        return scenarios
    chosen = sorted(random.Random(seed).sample(range(len(scenarios)), limit))
    return [scenarios[i] for i in chosen]


def to_moves(scenario: HistoricalScenario, marks_e8: dict[str, int], scale: Fraction) -> list[Move]:
    """The scenario applied to today's marks: each market moves by ``scale`` times its
    historical return, ``mark * (1 + scale * (ratio - 1))`` (rounded half-even to 1e-8,
    at least 1e-8); markets whose price would not change get no tick. Market-id order."""
    moves: list[Move] = []
    for market, ratio in sorted(scenario.returns.items()):
        mark_e8 = marks_e8.get(market)
        if mark_e8 is None:
            continue
        price_e8 = shocked_price_e8(mark_e8, scale * (ratio - 1))
        if price_e8 != mark_e8:
            moves.append(Move(market, price_e8))
    return moves
