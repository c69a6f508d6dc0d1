"""A deterministic market simulator: the input stream ``clearing demo`` feeds the sequencer.

Everything comes from one ``random.Random(seed)`` and a synthetic clock (``ts`` counts
nanoseconds from a fixed epoch, never the wall clock), so a seed gives the same bytes on
every run and every machine.

What it simulates
-----------------
* Three perpetual markets with different margin parameters and an oracle guard each.
* Thousands of traders: lognormal deposits, a home market (some trade two, on cross
  margin), a leverage between 2x and 20x capped by the market's initial margin, a
  long/short bias per market. They open, add to, cut, close and flip positions, top up and
  withdraw. Each keeps a rough view of its own margin in floats, only to steer what it
  does next: the engine decides what really happens, exactly.
* Market makers who quote ten levels a side around the mark (the ``book`` inputs close-outs
  are priced against) and are the counterparty of most fills, at prices around the mark.
* Oracle ticks as a random walk.
* A scripted black swan in ``SOL-PERP`` at 55% of the run (see ``_schedule_crash``): the book thins,
  the price falls in two accepted ticks, a third tick too far from the mark is held by the
  oracle guard while early shorts and the market makers take profit, then the next tick
  confirms it. Liquidations pay fees, drain the insurance fund, claw back what the fund
  cannot pay and leave some bad debt; the venue then recapitalizes the fund.

Floats only steer the simulation; every number written is an exact decimal string built
from integers (``_dec``).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CRASH_MARKET",
    "FUND_ID",
    "MARKETS",
    "START_TS_NS",
    "MarketSpec",
    "SimConfig",
    "Simulator",
]

# 2026-01-01T00:00:00Z: a fixed epoch, so timestamps never depend on when the demo runs.
START_TS_NS: Final = 1_767_225_600 * 10**9
FUND_ID: Final = "insurance-fund"
MM_IDS: Final = ("mm-1", "mm-2", "mm-3", "mm-4")
# Momentum sellers: in the crash they open the shorts that early shorts and market makers
# buy back from when they take profit.
PROP_IDS: Final = ("prop-1", "prop-2", "prop-3")
# A large leveraged long and a large short in the crash market, both opened just before it.
WHALE_ID: Final = "whale-1"
BEAR_ID: Final = "bear-1"
CRASH_MARKET: Final = "SOL-PERP"
# The whale's second market, under the clawback policy.
CLAWBACK_MARKET: Final = "ETH-PERP"
# The whale's ETH long, in multiples of its deposit: small enough that it still survives
# the first two crash ticks.
WHALE_ETH_LEVERAGE: Final = 0.5

E8: Final = 10**8
# Taker fee and maker rebate in basis points (a negative fee is a rebate from fee-pool).
TAKER_FEE_BP: Final = 5
MAKER_FEE_BP: Final = -1
# Book levels per side the market makers show.
BOOK_LEVELS: Final = 10
# Per trader, one trade decision every ~7 simulated minutes: with 5,000 traders about 12
# fills a second, the load of a small but busy venue.
TRADE_INTERVAL_PER_TRADER_S: Final = 420.0
# Deposits and withdrawals: one per trader every ~2 simulated hours.
FLOW_INTERVAL_PER_TRADER_S: Final = 7200.0
ORACLE_INTERVAL_S: Final = 2.0
# A funding input per market every 8 simulated minutes (venues charge every 1 to 8 hours;
# a demo hour needs several to show).
FUNDING_INTERVAL_S: Final = 480.0
BOOK_INTERVAL_S: Final = 3.0
# Chance that a fill's counterparty is sought among the traders rather than the makers.
TRADER_VS_TRADER: Final = 0.15
# New traders arrive during the first 20% of the run, so open interest builds up.
ONBOARDING_SHARE: Final = 0.2
# The crash starts at this share of the run: late enough for the book of positions to be
# built up, early enough to show the recovery afterwards.
CRASH_AT_SHARE: Final = 0.55
# Share of the crash market's short traders who take profit while the oracle guard holds
# the crash tick. The rest keep their positions, and so the profit clawbacks reclaim.
TAKE_PROFIT_SHARE: Final = 0.92


@dataclass(frozen=True)
class MarketSpec:
    """One market: the wire parameters (exact strings) and how the simulation moves it."""

    market: str
    price0: float
    imr: str
    mmr: str
    liq_fee: str
    max_oracle_move: str
    # Random-walk volatility per sqrt(second): a volatile hour, so liquidations happen
    # outside the crash too.
    vol_per_sqrt_s: float
    price_places: int
    qty_places: int
    # Distance between the market makers' book levels, as a share of the mark.
    level_spacing: float
    # Share of traders whose home market this is, and their chance of opening long.
    popularity: float
    long_bias: float
    # Rules version 2 (SPEC §9). The defaults are the rules' own, under which a market
    # behaves as in version 1: close-outs in one go, clawbacks, the whole fee to the fund.
    liq_step: str = "1"
    loss_policy: str = "clawback"
    fund_share: str = "1"
    vol_tiers: tuple[tuple[str, str], ...] = ()
    # The funding rate each funding input charges (longs pay when positive).
    funding_rate: str = "0"

    def rules_v2_members(self) -> str:
        """The market input's version-2 fields that differ from the defaults, as JSON
        members each followed by a comma."""
        members = []
        if self.liq_step != "1":
            members.append(f'"liq_step":"{self.liq_step}",')
        if self.loss_policy != "clawback":
            members.append(f'"loss_policy":"{self.loss_policy}",')
        if self.fund_share != "1":
            members.append(f'"fund_share":"{self.fund_share}",')
        if self.vol_tiers:
            tiers = ",".join(f'["{sigma}","{share}"]' for sigma, share in self.vol_tiers)
            members.append(f'"vol_tiers":[{tiers}],')
        return "".join(members)


MARKETS: Final = (
    MarketSpec(
        market="BTC-PERP",
        price0=60_000.0,
        imr="0.05",
        mmr="0.025",
        liq_fee="0.0075",
        max_oracle_move="0.1",
        vol_per_sqrt_s=9e-4,
        price_places=1,
        qty_places=4,
        level_spacing=4e-4,
        popularity=0.45,
        long_bias=0.55,
        funding_rate="0.00005",
    ),
    MarketSpec(
        market="ETH-PERP",
        price0=3_000.0,
        imr="0.08",
        mmr="0.04",
        liq_fee="0.01",
        max_oracle_move="0.12",
        vol_per_sqrt_s=1.2e-3,
        price_places=2,
        qty_places=3,
        level_spacing=6e-4,
        popularity=0.30,
        long_bias=0.50,
        funding_rate="-0.00002",
    ),
    MarketSpec(
        market="SOL-PERP",
        price0=150.0,
        imr="0.1",
        mmr="0.05",
        liq_fee="0.015",
        max_oracle_move="0.15",
        vol_per_sqrt_s=1.4e-3,
        price_places=3,
        qty_places=2,
        level_spacing=8e-4,
        popularity=0.25,
        # The crash market's crowd is the most bullish: the crash has longs to hit.
        long_bias=0.62,
        # Large accounts are cut a quarter at a time; a deficit the fund cannot pay is
        # taken from the most profitable shorts (ADL) instead of clawed from everyone; a
        # quarter of each liquidation fee goes to the fee pool in calm markets, more to
        # the fund as the volatility estimate crosses 0.4% and then 2% per tick.
        liq_step="0.25",
        loss_policy="adl",
        fund_share="0.75",
        vol_tiers=(("0.004", "0.9"), ("0.02", "1")),
        funding_rate="0.0001",
    ),
)


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. ``max_inputs`` stops the stream early (and sizes the duration)."""

    seed: int = 1
    accounts: int = 5_000
    duration_s: float = 3_600.0
    max_inputs: int | None = None
    # The clearing rules the stream is written for (SPEC §9). Version 1 is the stream as
    # it always was, byte for byte (the version-1 tests of both cores run on it); version
    # 2 (``clearing demo``) adds the markets' version-2 fields, funding inputs and the
    # whale's second market, and the traders expect partial liquidation.
    rules_version: int = 1

    def __post_init__(self) -> None:
        if self.accounts < 50:
            raise ValueError("accounts must be at least 50 (the crash needs a crowd)")
        if self.duration_s < 120:
            raise ValueError("duration must be at least 120 simulated seconds")
        if self.max_inputs is not None and self.max_inputs < 1:
            raise ValueError("max_inputs must be positive")
        if self.rules_version not in (1, 2):
            raise ValueError("rules_version must be 1 or 2")

    @classmethod
    def for_inputs(cls, seed: int, accounts: int, inputs: int, rules_version: int = 1) -> SimConfig:
        """A config whose run produces about ``inputs`` inputs, cut at exactly that many."""
        per_s = _inputs_per_second(accounts, rules_version)
        # A little longer than the estimate, so the cut, not the end of the simulated
        # session, is what stops the stream (the estimate runs a few percent high).
        duration_s = max(120.0, 1.08 * (inputs - _setup_inputs(accounts)) / per_s)
        return cls(seed, accounts, duration_s, max_inputs=inputs, rules_version=rules_version)

    @property
    def expected_inputs(self) -> int:
        """About how many inputs the run yields (exact when ``max_inputs`` cuts it)."""
        estimate = _setup_inputs(self.accounts) + int(
            self.duration_s * _inputs_per_second(self.accounts, self.rules_version)
        )
        return min(estimate, self.max_inputs) if self.max_inputs else estimate


def _inputs_per_second(accounts: int, rules_version: int) -> float:
    trades = accounts / TRADE_INTERVAL_PER_TRADER_S
    flows = accounts / FLOW_INTERVAL_PER_TRADER_S
    feeds = len(MARKETS) * (1 / ORACLE_INTERVAL_S + 1 / BOOK_INTERVAL_S)
    if rules_version >= 2:
        feeds += len(MARKETS) / FUNDING_INTERVAL_S
    # Roughly 90% of trade decisions become a fill (the rest find nothing to do).
    return trades * 0.9 + flows + feeds


def _setup_inputs(accounts: int) -> int:
    return accounts + 3 * len(MARKETS) + len(MM_IDS) + len(PROP_IDS) + 3


def _dec(units: int, places: int) -> str:
    """Exact decimal text of ``units`` * 10**-places, without trailing zeros."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**places)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}." + f"{frac:0{places}d}".rstrip("0")


class _Trader:
    """A trader's own rough view of its account, used only to decide what to do next."""

    __slots__ = (
        "cash",
        "id",
        "index",
        "leverage",
        "long_bias",
        "markets",
        "onboarded",
        "positions_e8",
        "version",
    )

    def __init__(
        self, index: int, markets: tuple[str, ...], leverage: float, long_bias: float
    ) -> None:
        self.index = index
        self.id = f"acct-{index:06d}"
        self.markets = markets
        self.leverage = leverage
        self.long_bias = long_bias
        self.cash = 0.0
        # Exact: positions change only through fills the simulator writes (and liquidations
        # it predicts), so it can close exactly what it holds.
        self.positions_e8: dict[str, int] = {}
        self.onboarded = False
        # Bumped on every change; stale entries of the liquidation heaps are skipped.
        self.version = 0


class Simulator:
    """Iterate over it for the input lines (bytes, no newline), in order.

    ``now_s`` (simulated seconds since the start), ``emitted`` and ``phase`` describe
    where the stream is, for a progress display.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.specs = {spec.market: spec for spec in MARKETS}
        self.now_s = 0.0
        self.emitted = 0
        self.phase = "setup"
        self.crash_at_s = CRASH_AT_SHARE * config.duration_s
        self._v2 = config.rules_version >= 2
        self._ts_ns = START_TS_NS
        self._fill_no = 0
        self._queue: list[tuple[float, int, Callable[[], Iterator[bytes]]]] = []
        self._order = 0
        self._marks = {spec.market: spec.price0 for spec in MARKETS}
        self._last_tick_s = dict.fromkeys(self._marks, 0.0)
        # Volatility multiplier and drift per second per market (raised after the crash).
        self._vol_boost = dict.fromkeys(self._marks, 1.0)
        self._drift_per_s = dict.fromkeys(self._marks, 0.0)
        # Markets whose price the crash script drives: no random walk, no random fills.
        self._scripted: dict[str, bool] = dict.fromkeys(self._marks, False)
        self._thin_book: dict[str, bool] = dict.fromkeys(self._marks, False)
        self._mm_positions_e8: dict[str, dict[str, int]] = {mm: {} for mm in MM_IDS}
        # Shadow liquidation index: per market, heaps of (threshold key, version, trader)
        # for traders holding only that market; traders on cross margin are checked on
        # every tick of a market they hold.
        self._long_heap: dict[str, list[tuple[float, int, int]]] = {m: [] for m in self._marks}
        self._short_heap: dict[str, list[tuple[float, int, int]]] = {m: [] for m in self._marks}
        self._multi: dict[str, dict[int, _Trader]] = {m: {} for m in self._marks}
        self.traders = self._make_traders()
        self._onboarded: list[_Trader] = []
        scale = config.accounts
        # Sizes scale with the crowd, so a small run tells the same story as a large one.
        self.fund_deposit = 60 * scale
        self.fund_topup = 600 * scale
        self.mm_deposit = 2_000 * scale
        self.prop_deposit = 800 * scale
        # The whale survives the first two crash ticks (3.5x: liquidated below -24%) and
        # is deep under water at the confirmed one (-37%): more than the fund and the
        # clawbacks can cover, so some of it becomes bad debt. The bear's profit is what
        # clawbacks reclaim even in a tiny run.
        self.whale_deposit = 400 * scale
        self.whale_leverage = 3.5
        self.bear_deposit = 25 * scale
        self.bear_leverage = 2.0
        self._depth_notional = 25.0 * scale
        # The crash tick the oracle guard holds back (set when it is sent).
        self._held_price = 0.0

    # -- setup -------------------------------------------------------------------------

    def _make_traders(self) -> list[_Trader]:
        rng = self.rng
        names = [spec.market for spec in MARKETS]
        weights = [spec.popularity for spec in MARKETS]
        traders = []
        for i in range(self.config.accounts):
            home = rng.choices(names, weights)[0]
            markets: tuple[str, ...] = (home,)
            if rng.random() < 0.08:  # a few trade two markets on cross margin
                other = rng.choice([m for m in names if m != home])
                markets = tuple(sorted((home, other)))
            # Median 10x; the tail reaches 20x where the market allows it.
            leverage = min(20.0, max(2.0, rng.lognormvariate(math.log(10.0), 0.5)))
            bias = self.specs[home].long_bias
            traders.append(_Trader(i, markets, leverage, bias))
        return traders

    def __iter__(self) -> Iterator[bytes]:
        limit = self.config.max_inputs
        for line in self._stream():
            self.emitted += 1
            yield line
            if limit is not None and self.emitted >= limit:
                return

    def _stream(self) -> Iterator[bytes]:
        yield from self._setup()
        duration = self.config.duration_s
        rng = self.rng
        for trader in self.traders:
            self._at(rng.uniform(1.0, ONBOARDING_SHARE * duration), self._onboard_action(trader))
        for spec in MARKETS:
            self._at(rng.uniform(0, ORACLE_INTERVAL_S), self._oracle_action(spec.market))
            self._at(rng.uniform(0, BOOK_INTERVAL_S), self._book_action(spec.market))
            if self._v2:
                self._at(FUNDING_INTERVAL_S, self._funding_action(spec.market))
        self._at(1.0, self._trade_action)
        self._at(2.0, self._flow_action)
        self._schedule_crash()
        self.phase = "trading"
        while self._queue:
            at_s, _, action = heapq.heappop(self._queue)
            if at_s > duration:
                break
            self.now_s = at_s
            yield from action()
        self.phase = "done"

    def _at(self, at_s: float, action: Callable[[], Iterator[bytes]]) -> None:
        self._order += 1
        heapq.heappush(self._queue, (at_s, self._order, action))

    def _ts(self) -> int:
        # Strictly increasing, even for inputs scheduled at the same simulated instant.
        self._ts_ns = max(self._ts_ns + 1, START_TS_NS + int(self.now_s * 1e9))
        return self._ts_ns

    def _setup(self) -> Iterator[bytes]:
        for spec in MARKETS:
            v2_members = spec.rules_v2_members() if self._v2 else ""
            yield (
                f'{{"type":"market","market":"{spec.market}","imr":"{spec.imr}",'
                f'"mmr":"{spec.mmr}","liq_fee":"{spec.liq_fee}",'
                f'"max_oracle_move":"{spec.max_oracle_move}",{v2_members}'
                f'"ts":{self._ts()}}}'
            ).encode()
        yield self._deposit(FUND_ID, self.fund_deposit * 100)
        for mm in MM_IDS:
            yield self._deposit(mm, self.mm_deposit * 100)
        for prop in PROP_IDS:
            yield self._deposit(prop, self.prop_deposit * 100)
        yield self._deposit(WHALE_ID, self.whale_deposit * 100)
        yield self._deposit(BEAR_ID, self.bear_deposit * 100)
        for spec in MARKETS:
            yield self._oracle_line(spec.market)
            yield self._book_line(spec.market)

    # -- wire lines --------------------------------------------------------------------

    def _deposit(self, account: str, cents: int) -> bytes:
        return (
            f'{{"type":"deposit","account":"{account}","amount":"{_dec(cents, 2)}",'
            f'"ts":{self._ts()}}}'
        ).encode()

    def _withdraw(self, account: str, cents: int) -> bytes:
        return (
            f'{{"type":"withdraw","account":"{account}","amount":"{_dec(cents, 2)}",'
            f'"ts":{self._ts()}}}'
        ).encode()

    def _price_units(self, market: str, price: float) -> int:
        places = self.specs[market].price_places
        return max(1, round(price * 10**places))

    def _oracle_line(self, market: str, price: float | None = None) -> bytes:
        places = self.specs[market].price_places
        units = self._price_units(market, self._marks[market] if price is None else price)
        return (
            f'{{"type":"oracle","market":"{market}","price":"{_dec(units, places)}",'
            f'"ts":{self._ts()}}}'
        ).encode()

    def _book_line(self, market: str) -> bytes:
        spec = self.specs[market]
        rng = self.rng
        mark = self._marks[market]
        spacing = spec.level_spacing
        depth = self._depth_notional / mark
        if self._thin_book[market]:
            # Liquidity vacuum: makers pull most of their size and widen their quotes.
            spacing *= 6
            depth *= 0.1
        sides = []
        for sign in (-1, 1):
            levels = []
            for k in range(BOOK_LEVELS):
                price = self._price_units(market, mark * (1 + sign * spacing * (k + 0.5)))
                qty = round(depth * (1 + 0.5 * k) * rng.uniform(0.7, 1.3) * 10**spec.qty_places)
                if qty > 0:
                    levels.append(
                        f'["{_dec(price, spec.price_places)}","{_dec(qty, spec.qty_places)}"]'
                    )
            sides.append(",".join(levels))
        return (
            f'{{"type":"book","market":"{market}","bids":[{sides[0]}],"asks":[{sides[1]}],'
            f'"ts":{self._ts()}}}'
        ).encode()

    def _fill_line(
        self,
        market: str,
        price_units: int,
        qty_e8: int,
        buyer: str,
        seller: str,
        buyer_fee_bp: int,
        seller_fee_bp: int,
    ) -> bytes:
        spec = self.specs[market]
        self._fill_no += 1
        price_e8 = price_units * 10 ** (8 - spec.price_places)
        notional_e16 = price_e8 * qty_e8
        # Fees rounded down to 8 decimals, computed exactly from the exact notional.
        buyer_fee_e8 = _fee_e8(notional_e16, buyer_fee_bp)
        seller_fee_e8 = _fee_e8(notional_e16, seller_fee_bp)
        return (
            f'{{"type":"fill","fill_id":"F{self._fill_no:08d}","market":"{market}",'
            f'"price":"{_dec(price_units, spec.price_places)}","qty":"{_dec(qty_e8, 8)}",'
            f'"buyer":"{buyer}","seller":"{seller}","buyer_fee":"{_dec(buyer_fee_e8, 8)}",'
            f'"seller_fee":"{_dec(seller_fee_e8, 8)}","ts":{self._ts()}}}'
        ).encode()

    # -- recurring actions -------------------------------------------------------------

    def _onboard_action(self, trader: _Trader) -> Callable[[], Iterator[bytes]]:
        def action() -> Iterator[bytes]:
            # Lognormal deposits: median 2,000, a long tail of large accounts.
            amount = min(2_000_000.0, max(50.0, self.rng.lognormvariate(math.log(2_000), 1.1)))
            cents = round(amount * 100)
            trader.cash += cents / 100
            trader.onboarded = True
            self._onboarded.append(trader)
            yield self._deposit(trader.id, cents)

        return action

    def _oracle_action(self, market: str) -> Callable[[], Iterator[bytes]]:
        spec = self.specs[market]

        def action() -> Iterator[bytes]:
            rng = self.rng
            self._at(self.now_s + rng.uniform(0.5, 1.5) * ORACLE_INTERVAL_S, action)
            if self._scripted[market]:
                return
            dt_s = max(1e-3, self.now_s - self._last_tick_s[market])
            self._last_tick_s[market] = self.now_s
            sigma = spec.vol_per_sqrt_s * self._vol_boost[market] * math.sqrt(dt_s)
            step = self._drift_per_s[market] * dt_s + rng.gauss(0.0, sigma)
            # Never more than a quarter of the guard: ordinary ticks are never held.
            cap = float(spec.max_oracle_move) / 4
            self._marks[market] *= math.exp(max(-cap, min(cap, step)))
            # Raised volatility and drift fade out after the crash.
            self._vol_boost[market] = 1.0 + (self._vol_boost[market] - 1.0) * math.exp(-dt_s / 600)
            self._drift_per_s[market] *= math.exp(-dt_s / 300)
            yield self._oracle_line(market)
            self._shadow_liquidations(market)

        return action

    def _funding_action(self, market: str) -> Callable[[], Iterator[bytes]]:
        spec = self.specs[market]
        rate = float(spec.funding_rate)

        def action() -> Iterator[bytes]:
            self._at(self.now_s + FUNDING_INTERVAL_S, action)
            if self._scripted[market]:
                return  # no funding in the middle of the crash
            mark = self._marks[market]
            for trader in self._onboarded:
                qty_e8 = trader.positions_e8.get(market)
                if qty_e8:
                    trader.cash -= qty_e8 / E8 * mark * rate
            yield (
                f'{{"type":"funding","market":"{market}","rate":"{spec.funding_rate}",'
                f'"ts":{self._ts()}}}'
            ).encode()

        return action

    def _book_action(self, market: str) -> Callable[[], Iterator[bytes]]:
        def action() -> Iterator[bytes]:
            self._at(self.now_s + self.rng.uniform(0.5, 1.5) * BOOK_INTERVAL_S, action)
            if not self._scripted[market]:
                yield self._book_line(market)

        return action

    def _trade_action(self) -> Iterator[bytes]:
        rng = self.rng
        # Thinning: decisions arrive at the rate of the whole crowd; one drawn for a
        # trader who has not arrived yet is dropped, so the rate follows onboarding.
        rate_per_s = self.config.accounts / TRADE_INTERVAL_PER_TRADER_S
        self._at(self.now_s + rng.expovariate(rate_per_s), self._trade_action)
        pick = rng.randrange(self.config.accounts)
        if pick >= len(self._onboarded):
            return
        trader = self._onboarded[pick]
        market = rng.choice(trader.markets)
        if self._scripted[market]:
            return
        line = self._trader_fill(trader, market)
        if line is not None:
            yield line

    def _flow_action(self) -> Iterator[bytes]:
        rng = self.rng
        rate_per_s = self.config.accounts / FLOW_INTERVAL_PER_TRADER_S
        self._at(self.now_s + rng.expovariate(rate_per_s), self._flow_action)
        pick = rng.randrange(self.config.accounts)
        if pick >= len(self._onboarded):
            return
        trader = self._onboarded[pick]
        equity = self._equity(trader)
        initial = self._requirement(trader, "imr")
        if trader.cash < 10 and not trader.positions_e8:
            # Wiped out: some come back with a fresh deposit.
            if rng.random() < 0.5:
                cents = round(min(200_000.0, rng.lognormvariate(math.log(1_000), 0.9)) * 100)
                trader.cash += cents / 100
                yield self._deposit(trader.id, cents)
        elif equity > 1.5 * initial and trader.cash > 20 and rng.random() < 0.5:
            if rng.random() < 0.03:
                # Over-reaching: more than the cash; the engine refuses it.
                yield self._withdraw(trader.id, int(trader.cash * 102))
                return
            room = min(trader.cash, equity - initial)
            cents = int(room * rng.uniform(0.1, 0.6) * 100)
            if cents > 0:
                trader.cash -= cents / 100
                yield self._withdraw(trader.id, cents)
        else:
            cents = round(max(10.0, trader.cash * rng.uniform(0.05, 0.3)) * 100)
            trader.cash += cents / 100
            yield self._deposit(trader.id, cents)

    # -- trading decisions -------------------------------------------------------------

    def _equity(self, trader: _Trader) -> float:
        marks = self._marks
        return trader.cash + sum(q * marks[m] for m, q in trader.positions_e8.items()) / E8

    def _requirement(self, trader: _Trader, ratio: str) -> float:
        total = 0.0
        for market, qty_e8 in trader.positions_e8.items():
            spec = self.specs[market]
            total += abs(qty_e8) / E8 * self._marks[market] * float(getattr(spec, ratio))
        return total

    def _trader_fill(self, trader: _Trader, market: str) -> bytes | None:
        rng = self.rng
        spec = self.specs[market]
        mark = self._marks[market]
        equity = self._equity(trader)
        if equity <= 1.0:
            return None
        held_e8 = trader.positions_e8.get(market, 0)
        # The most this trader may hold here: its leverage, within the market's IM.
        max_leverage = min(trader.leverage, 0.9 / float(spec.imr))
        budget = equity * max_leverage / len(trader.markets)
        held = held_e8 / E8
        roll = rng.random()
        if held_e8 == 0:
            side = 1 if roll < trader.long_bias else -1
            delta = side * budget * rng.uniform(0.6, 1.0) / mark
        elif roll < 0.3:
            delta = -held  # close
        elif roll < 0.5:
            delta = -held * rng.uniform(0.3, 0.7)  # cut
        elif roll < 0.9:
            room = budget / mark - abs(held)
            if room > 0:
                delta = math.copysign(room * rng.uniform(0.2, 1.0), held)  # add
            else:
                delta = -held * rng.uniform(0.2, 0.5)  # over budget: cut instead
        else:
            delta = -held - math.copysign(budget * rng.uniform(0.3, 0.8) / mark, held)  # flip
        # A close is exact, whatever the lot size; anything else is rounded to lots.
        delta_e8 = -held_e8 if held_e8 and delta == -held else _round_qty(delta, spec.qty_places)
        if delta_e8 == 0:
            return None
        # The taker crosses the spread: buys a little above the mark, sells a little below.
        side = 1 if delta_e8 > 0 else -1
        price = mark * (1 + side * spec.level_spacing * rng.uniform(0.1, 1.0))
        price_units = self._price_units(market, price)
        counterparty = self._counterparty(trader, market, -delta_e8)
        if counterparty is None:
            maker = MM_IDS[rng.randrange(len(MM_IDS))]
            mm_pos = self._mm_positions_e8[maker]
            mm_pos[market] = mm_pos.get(market, 0) - delta_e8
        else:
            maker = counterparty.id
            self._apply_fill(counterparty, market, -delta_e8, price_units, MAKER_FEE_BP)
        self._apply_fill(trader, market, delta_e8, price_units, TAKER_FEE_BP)
        if delta_e8 > 0:
            return self._fill_line(
                market, price_units, delta_e8, trader.id, maker, TAKER_FEE_BP, MAKER_FEE_BP
            )
        return self._fill_line(
            market, price_units, -delta_e8, maker, trader.id, MAKER_FEE_BP, TAKER_FEE_BP
        )

    def _counterparty(self, trader: _Trader, market: str, delta_e8: int) -> _Trader | None:
        """Another trader glad to take the other side (by its own view), or None."""
        rng = self.rng
        if rng.random() >= TRADER_VS_TRADER:
            return None
        spec = self.specs[market]
        mark = self._marks[market]
        for _ in range(3):
            other = self._onboarded[rng.randrange(len(self._onboarded))]
            if other is trader or market not in other.markets:
                continue
            held_e8 = other.positions_e8.get(market, 0)
            new_e8 = held_e8 + delta_e8
            equity = self._equity(other)
            cap = equity * min(other.leverage, 0.9 / float(spec.imr)) / len(other.markets)
            if equity > 0 and abs(new_e8) / E8 * mark <= cap:
                return other
        return None

    def _apply_fill(
        self, trader: _Trader, market: str, delta_e8: int, price_units: int, fee_bp: int
    ) -> None:
        spec = self.specs[market]
        price = price_units / 10**spec.price_places
        notional = abs(delta_e8) / E8 * price
        trader.cash -= delta_e8 / E8 * price + notional * fee_bp / 10_000
        new_e8 = trader.positions_e8.get(market, 0) + delta_e8
        if new_e8:
            trader.positions_e8[market] = new_e8
        else:
            trader.positions_e8.pop(market, None)
        self._reindex(trader)

    # -- the traders' own liquidation forecast -----------------------------------------

    def _reindex(self, trader: _Trader) -> None:
        trader.version += 1
        for multi in self._multi.values():
            multi.pop(trader.index, None)
        held = trader.positions_e8
        if len(held) == 1:
            ((market, qty_e8),) = held.items()
            mmr = float(self.specs[market].mmr)
            qty = qty_e8 / E8
            index = trader.index
            if qty > 0:
                # E < MM  <=>  mark < -C / (q (1 - mmr))
                threshold = -trader.cash / (qty * (1 - mmr))
                heapq.heappush(self._long_heap[market], (-threshold, trader.version, index))
            else:
                # E < MM  <=>  mark > C / (|q| (1 + mmr))
                threshold = trader.cash / (-qty * (1 + mmr))
                heapq.heappush(self._short_heap[market], (threshold, trader.version, index))
        elif len(held) > 1:
            for market in held:
                self._multi[market][trader.index] = trader

    def _shadow_liquidations(self, market: str) -> None:
        """Forget the positions of traders the engine is about to liquidate at this mark."""
        mark = self._marks[market]
        traders = self.traders
        longs = self._long_heap[market]
        while longs and -longs[0][0] > mark:
            _, version, index = heapq.heappop(longs)
            trader = traders[index]
            if trader.version == version:
                self._liquidate(trader)
        shorts = self._short_heap[market]
        while shorts and shorts[0][0] < mark:
            _, version, index = heapq.heappop(shorts)
            trader = traders[index]
            if trader.version == version:
                self._liquidate(trader)
        for trader in list(self._multi[market].values()):
            if self._equity(trader) < self._requirement(trader, "mmr"):
                self._liquidate(trader)

    def _liquidate(self, trader: _Trader) -> None:
        """The engine's close-out as the trader sees it: a partial step (SPEC §9.2) when
        its equity is at least half its maintenance margin in a market with
        ``liq_step < 1``, and a full close-out if that is not enough (or not allowed)."""
        if not self._v2:
            self._close_out_v1(trader)
            return
        if 2 * self._equity(trader) >= self._requirement(trader, "mmr") and any(
            self.specs[m].liq_step != "1" for m in trader.positions_e8
        ):
            self._close(trader, partial=True)
            if self._equity(trader) >= self._requirement(trader, "mmr"):
                self._reindex(trader)
                return
        self._close(trader, partial=False)
        self._reindex(trader)

    def _close_out_v1(self, trader: _Trader) -> None:
        """Version 1's close-out as the traders have always forecast it (so the version-1
        stream stays what it was)."""
        fee = sum(
            abs(q) / E8 * self._marks[m] * float(self.specs[m].liq_fee)
            for m, q in trader.positions_e8.items()
        )
        trader.cash = max(0.0, self._equity(trader) - fee)
        trader.positions_e8.clear()
        self._reindex(trader)

    def _close(self, trader: _Trader, partial: bool) -> None:
        """Close (a step's share of) each position at the mark, paying the fee on it."""
        for market, qty_e8 in list(trader.positions_e8.items()):
            spec = self.specs[market]
            step = float(spec.liq_step) if partial else 1.0
            closed_e8 = min(abs(qty_e8), math.ceil(abs(qty_e8) * step))
            notional = closed_e8 / E8 * self._marks[market]
            fee = min(max(0.0, self._equity(trader)), notional * float(spec.liq_fee))
            trader.cash += math.copysign(notional, qty_e8) - fee
            left_e8 = qty_e8 - int(math.copysign(closed_e8, qty_e8))
            if left_e8:
                trader.positions_e8[market] = left_e8
            else:
                del trader.positions_e8[market]
        if not partial:
            trader.cash = max(0.0, trader.cash)

    # -- the black swan ----------------------------------------------------------------

    def _schedule_crash(self) -> None:
        start = self.crash_at_s
        # The whale and the bear build their positions from the makers in the two minutes
        # (or 3% of the run) before the crash, so they enter near the pre-crash price.
        build_from = start - min(120.0, 0.03 * self.config.duration_s)
        build_to = start - 10.0
        chunks = 20
        for i in range(chunks):
            at_s = build_from + (build_to - build_from) * i / chunks
            whale_notional = self.whale_deposit * self.whale_leverage / chunks
            bear_notional = self.bear_deposit * self.bear_leverage / chunks
            self._at(at_s, self._scripted_trade(WHALE_ID, whale_notional))
            self._at(at_s + 0.5, self._scripted_trade(BEAR_ID, -bear_notional))
            if self._v2:
                # The whale also holds ETH on cross margin: its close-out there leaves a
                # deficit in a market that claws back (the crash market deleverages).
                eth_notional = self.whale_deposit * WHALE_ETH_LEVERAGE / chunks
                eth_trade = self._scripted_trade(WHALE_ID, eth_notional, CLAWBACK_MARKET)
                self._at(at_s + 0.25, eth_trade)
        self._at(start - 5.0, self._crash_begin)
        self._at(start, self._crash_tick(0.92))
        self._at(start + 2.0, self._crash_book)
        self._at(start + 3.0, self._crash_tick(0.88))
        self._at(start + 4.0, self._crash_book)
        self._at(start + 5.0, self._crash_held_tick)
        self._at(start + 5.5, self._crash_take_profit)
        self._at(start + 8.0, self._crash_confirm)
        after_s = self.config.duration_s - start
        self._at(start + min(120.0, 0.3 * after_s), self._recapitalize)

    def _scripted_trade(
        self, account: str, notional: float, market: str = CRASH_MARKET
    ) -> Callable[[], Iterator[bytes]]:
        """``account`` takes ``notional`` (signed: > 0 buys) of ``market`` from a maker."""

        def action() -> Iterator[bytes]:
            spec = self.specs[market]
            mark = self._marks[market]
            qty_e8 = _round_qty(abs(notional) / mark, spec.qty_places)
            side = 1 if notional > 0 else -1
            price_units = self._price_units(market, mark * (1 + side * spec.level_spacing / 2))
            maker = MM_IDS[self.rng.randrange(len(MM_IDS))]
            mm_pos = self._mm_positions_e8[maker]
            mm_pos[market] = mm_pos.get(market, 0) - side * qty_e8
            buyer, seller = (account, maker) if side > 0 else (maker, account)
            buyer_fee, seller_fee = (
                (TAKER_FEE_BP, MAKER_FEE_BP) if side > 0 else (MAKER_FEE_BP, TAKER_FEE_BP)
            )
            yield self._fill_line(market, price_units, qty_e8, buyer, seller, buyer_fee, seller_fee)

        return action

    def _crash_begin(self) -> Iterator[bytes]:
        market = CRASH_MARKET
        self.phase = "crash"
        self._scripted[market] = True
        self._thin_book[market] = True
        yield self._book_line(market)

    def _crash_book(self) -> Iterator[bytes]:
        yield self._book_line(CRASH_MARKET)

    def _crash_tick(self, factor: float) -> Callable[[], Iterator[bytes]]:
        def action() -> Iterator[bytes]:
            market = CRASH_MARKET
            self._marks[market] *= factor
            yield self._oracle_line(market)
            self._shadow_liquidations(market)

        return action

    def _crash_held_tick(self) -> Iterator[bytes]:
        # Too far from the mark for the guard (-23% > 15%): held, the mark stays.
        market = CRASH_MARKET
        self._held_price = self._marks[market] * 0.77
        yield self._oracle_line(market, self._held_price)
        # The makers quote where the market really trades now, not at the lagging mark.
        lagging_mark = self._marks[market]
        self._marks[market] = self._held_price
        yield self._book_line(market)
        self._marks[market] = lagging_mark

    def _crash_take_profit(self) -> Iterator[bytes]:
        """While the guard holds the tick, the market trades at the crashed price: early
        shorts and the makers buy back from momentum sellers (who open shorts there)."""
        market = CRASH_MARKET
        rng = self.rng
        held = self._held_price
        confirm = held * 1.015
        sellers = list(PROP_IDS)
        buys: list[tuple[str, int, _Trader | None]] = []
        for trader in self._onboarded:
            qty_e8 = trader.positions_e8.get(market, 0)
            if qty_e8 < 0 and rng.random() < TAKE_PROFIT_SHARE:
                buys.append((trader.id, -qty_e8, trader))
        for mm in MM_IDS:
            qty_e8 = self._mm_positions_e8[mm].get(market, 0)
            if qty_e8 < 0:
                buys.append((mm, -qty_e8, None))
                self._mm_positions_e8[mm][market] = 0
        # Spread over at most two simulated seconds, well before the confirming tick.
        spacing_s = min(0.001, 2.0 / max(1, len(buys)))
        for n, (buyer, qty_e8, trader) in enumerate(buys):
            # Fills between the held price and just under the confirming one: the
            # sellers' shorts are not in profit at the confirmed mark.
            price_units = self._price_units(market, rng.uniform(held * 0.995, confirm * 0.998))
            if trader is not None:
                self._apply_fill(trader, market, qty_e8, price_units, TAKER_FEE_BP)
            self.now_s += spacing_s
            seller = sellers[n % len(sellers)]
            yield self._fill_line(
                market, price_units, qty_e8, buyer, seller, TAKER_FEE_BP, MAKER_FEE_BP
            )

    def _crash_confirm(self) -> Iterator[bytes]:
        market = CRASH_MARKET
        # Within the guard of the held price: the jump is confirmed.
        self._marks[market] = self._held_price * 1.015
        yield self._oracle_line(market)
        self._shadow_liquidations(market)
        self._thin_book[market] = False
        self._scripted[market] = False
        self._last_tick_s[market] = self.now_s
        # Aftershocks: volatility stays high and the price bounces for a while.
        self._vol_boost[market] = 3.0
        self._drift_per_s[market] = 1.5e-4
        self.phase = "recovery"
        yield self._book_line(market)

    def _recapitalize(self) -> Iterator[bytes]:
        # The venue tops the drained insurance fund up again.
        yield self._deposit(FUND_ID, self.fund_topup * 100)


def _round_qty(qty: float, places: int) -> int:
    """A quantity in e8 units, rounded to the market's lot size."""
    return round(qty * 10**places) * 10 ** (8 - places)


def _fee_e8(notional_e16: int, fee_bp: int) -> int:
    """``notional * fee_bp / 10,000`` in e8 units, rounded toward zero."""
    magnitude = abs(notional_e16) * abs(fee_bp) // (10_000 * E8)
    return magnitude if fee_bp >= 0 else -magnitude
