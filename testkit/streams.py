"""Hypothesis strategies: long, realistic clearing input streams as lists of ``bytes`` lines.

The streams are built to reach the whole loss waterfall: levered fills, oracle crashes and
spikes (held by the guard, then confirmed), thin or crossed books, a small or empty insurance
fund, fees and rebates, repeated fill ids, withdrawals, and a sprinkling of bad lines covering
every reject reason.  A small price model runs alongside so prices and sizes stay plausible;
the generator does not model accounts (the reference decides what each line does).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import strategies as st

from testkit.hostile import (
    BAD_IDS,
    BAD_LEVELS,
    BAD_MARKET_PARAMS,
    BAD_NUMBERS,
    BAD_TS,
    MALFORMED_LINES,
    NOT_POSITIVE,
    Raw,
)

MARKET_POOL = ("BTC-PERP", "ETH-PERP", "SOL-PERP", "XRP-PERP", "DOGE", "b-mkt", "Z9")
# code-point order: "B" < "a" < "Ω" < "\uff5e" < "\U0001f600" (UTF-16 order would differ)
USER_POOL = ("a", "b", "c", "d", "e", "f", "g", "h", "B", "Ω", "\uff5e", "\U0001f600")
FUND = "insurance-fund"
RESERVED = ("fee-pool", "bad-debt")
NUMBER_FIELDS = frozenset(
    {
        "amount",
        "price",
        "qty",
        "imr",
        "mmr",
        "liq_fee",
        "max_oracle_move",
        "buyer_fee",
        "seller_fee",
    }
)
OPTIONAL = frozenset({"buyer_fee", "seller_fee", "max_oracle_move"})
ID_FIELDS = frozenset({"account", "market", "fill_id", "buyer", "seller"})
REQUIRED = {
    "market": ("market", "imr", "mmr", "liq_fee"),
    "deposit": ("account", "amount"),
    "withdraw": ("account", "amount"),
    "fill": ("fill_id", "market", "price", "qty", "buyer", "seller"),
    "oracle": ("market", "price"),
    "book": ("market",),
}

_RAW = "\x00raw{}\x00"  # placeholder for a literal spliced verbatim into the JSON text

Draw = Any  # hypothesis' draw callable


def dumps(obj: dict[str, Any]) -> bytes:
    """``json.dumps`` that splices ``Raw`` values in verbatim."""
    raws: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return _RAW.format(len(raws) - 1)
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(obj), ensure_ascii=False)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(_RAW.format(i)), raw)
    return text.encode("utf-8")


def plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


@dataclass
class Ctx:
    markets: list[str]
    price: dict[str, Decimal]
    users: list[str]
    scale: Decimal
    guarded: dict[str, bool]
    fill_ids: list[str] = field(default_factory=list)
    pos: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # as if all accepted
    next_fill: int = 0


# ---------------------------------------------------------------------------------------------
# numbers


def _decimal(draw: Draw, lo: Decimal, hi: Decimal, places: int | None = None) -> Decimal:
    """A decimal in [lo, hi] with at most ``places`` (drawn when None) decimals."""
    if places is None:
        places = draw(st.sampled_from((0, 1, 2, 2, 4, 6, 8, 8)))
    unit = Decimal(1).scaleb(-places)
    lo_units = int((lo / unit).to_integral_value(rounding="ROUND_CEILING"))
    hi_units = int((hi / unit).to_integral_value(rounding="ROUND_FLOOR"))
    if hi_units < lo_units:
        hi_units = lo_units
    return Decimal(draw(st.integers(lo_units, hi_units))) * unit


def _quantize(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding="ROUND_HALF_EVEN")


def wire(draw: Draw, value: Decimal) -> str | int:
    """The value as a decimal string (sometimes padded with zeros) or a JSON integer."""
    text = plain(value)
    style = draw(st.integers(0, 9))
    if "." not in text and style < 3:
        return int(text)
    if style == 9:
        digits = len(text.split(".")[1]) if "." in text else 0
        pad = draw(st.integers(digits, 8))
        if pad:
            return format(value.quantize(Decimal(1).scaleb(-pad)), "f")
    return text


def _positive(draw: Draw, value: Decimal, places: int | None = None) -> Decimal:
    if places is None:
        places = draw(st.sampled_from((0, 2, 4, 8)))
    q = _quantize(value, places)
    if q <= 0:
        q = Decimal(1).scaleb(-places)
    return min(q, Decimal(10) ** 15)


# ---------------------------------------------------------------------------------------------
# valid events


def _ts(draw: Draw, obj: dict[str, Any]) -> dict[str, Any]:
    if draw(st.booleans()):
        obj["ts"] = draw(st.integers(0, 2**62))
    if draw(st.integers(0, 19)) == 0:
        obj["x-note"] = draw(
            st.sampled_from(["hi", {"nested": [1, Raw("2.5"), None, {"k": True}]}, [], 7])
        )
    return obj


def market_event(draw: Draw, name: str) -> tuple[dict[str, Any], bool]:
    mmr = _decimal(draw, Decimal("0.005"), Decimal("0.25"), draw(st.sampled_from((2, 3, 4, 8))))
    imr = min(Decimal(1), _quantize(mmr * _decimal(draw, Decimal(1), Decimal(4), 2), 8))
    if imr < mmr:
        imr = mmr
    liq_fee = draw(st.sampled_from((Decimal(0), Decimal("0.005"), Decimal("0.01"))))
    if draw(st.booleans()):
        liq_fee = _decimal(draw, Decimal(0), Decimal("0.1"), 4)
    obj: dict[str, Any] = {
        "type": "market",
        "market": name,
        "imr": wire(draw, imr),
        "mmr": wire(draw, mmr),
        "liq_fee": wire(draw, liq_fee),
    }
    guarded = draw(st.integers(0, 2)) == 0
    if guarded:
        obj["max_oracle_move"] = wire(draw, _decimal(draw, Decimal("0.05"), Decimal("0.6"), 2))
    return _ts(draw, obj), guarded


def _account(draw: Draw, ctx: Ctx, fund: int = 10, reserved: int = 0, stranger: int = 0) -> str:
    roll = draw(st.integers(0, 99))
    if roll < fund:
        return FUND
    if roll < fund + reserved:
        return draw(st.sampled_from(RESERVED))
    if roll < fund + reserved + stranger:
        return "nobody"
    return draw(st.sampled_from(ctx.users))


def deposit_event(draw: Draw, ctx: Ctx) -> dict[str, Any]:
    account = _account(draw, ctx, fund=15, reserved=3)
    if account == FUND and draw(st.booleans()):
        amount = _decimal(draw, Decimal("0.00000001"), Decimal(2))
    else:
        amount = _decimal(draw, ctx.scale / 20, ctx.scale * 3)
    amount = _positive(draw, amount)
    if draw(st.integers(0, 199)) == 0:
        amount = Decimal(10) ** 15
    return _ts(draw, {"type": "deposit", "account": account, "amount": wire(draw, amount)})


def withdraw_event(draw: Draw, ctx: Ctx) -> dict[str, Any]:
    account = _account(draw, ctx, fund=4, reserved=3, stranger=4)
    amount = _positive(draw, _decimal(draw, ctx.scale / 100, ctx.scale * 2))
    return _ts(draw, {"type": "withdraw", "account": account, "amount": wire(draw, amount)})


def _move(draw: Draw, ctx: Ctx, market: str) -> Decimal:
    """Advance the price model of ``market`` and return the new price."""
    kind = draw(st.integers(0, 99))
    price = ctx.price[market]
    if kind < 60:
        factor = _decimal(draw, Decimal("0.96"), Decimal("1.04"), 4)
    elif kind < 78:
        factor = _decimal(draw, Decimal("0.25"), Decimal("0.85"), 3)  # crash
    elif kind < 92:
        factor = _decimal(draw, Decimal("1.15"), Decimal("2.5"), 3)  # spike
    else:
        factor = Decimal(1)
    new = _positive(draw, price * factor, draw(st.sampled_from((0, 2, 4, 8))))
    ctx.price[market] = new
    return new


def oracle_event(draw: Draw, ctx: Ctx) -> dict[str, Any]:
    market = draw(st.sampled_from(ctx.markets))
    price = _move(draw, ctx, market)
    return _ts(draw, {"type": "oracle", "market": market, "price": wire(draw, price)})


def fill_event(draw: Draw, ctx: Ctx) -> dict[str, Any]:
    open_positions = sorted(k for k, v in ctx.pos.items() if v != 0)
    closing = bool(open_positions) and draw(st.integers(0, 2)) == 0
    if closing:
        # close (or flip) a position the stream opened, often at a price far from the mark,
        # so the closing side can end flat with negative cash (a bankrupt account)
        holder, market = draw(st.sampled_from(open_positions))
        if draw(st.integers(0, 2)):
            _move(draw, ctx, market)
    else:
        market = draw(st.sampled_from(ctx.markets))
        if draw(st.integers(0, 9)) == 0:
            _move(draw, ctx, market)  # the trade prints away from the last tick
    price = _positive(draw, ctx.price[market] * _decimal(draw, Decimal("0.99"), Decimal("1.01"), 4))
    leverage = draw(
        st.sampled_from(
            (Decimal("0.2"), Decimal(1), Decimal(3), Decimal(8), Decimal(15), Decimal(30))
        )
    )
    notional = ctx.scale * leverage * _decimal(draw, Decimal("0.1"), Decimal(1), 2)
    qty = _positive(draw, notional / price, draw(st.sampled_from((0, 1, 3, 8))))
    buyer = _account(draw, ctx, fund=8, reserved=1)
    seller = _account(draw, ctx, fund=8, reserved=1)
    if closing:
        held = ctx.pos[(holder, market)]
        if draw(st.integers(0, 3)):
            qty = abs(held)
        if held > 0:
            seller = holder
        else:
            buyer = holder
    if buyer == seller and draw(st.integers(0, 3)):
        other = draw(st.sampled_from([u for u in ctx.users if u != buyer] or ["zz"]))
        if closing and seller == holder:
            buyer = other
        else:
            seller = other
    ctx.pos[(buyer, market)] = ctx.pos.get((buyer, market), Decimal(0)) + qty
    ctx.pos[(seller, market)] = ctx.pos.get((seller, market), Decimal(0)) - qty
    if ctx.fill_ids and draw(st.integers(0, 11)) == 0:
        fill_id = draw(st.sampled_from(ctx.fill_ids))
    else:
        fill_id = f"f{ctx.next_fill}"
        ctx.next_fill += 1
        ctx.fill_ids.append(fill_id)
    obj: dict[str, Any] = {
        "type": "fill",
        "fill_id": fill_id,
        "market": market,
        "price": wire(draw, price),
        "qty": wire(draw, qty),
        "buyer": buyer,
        "seller": seller,
    }
    if draw(st.integers(0, 2)) == 0:
        for side in ("buyer_fee", "seller_fee"):
            if draw(st.integers(0, 3)):
                fee = _quantize(
                    notional * _decimal(draw, Decimal("-0.006"), Decimal("0.01"), 4),
                    draw(st.sampled_from((0, 2, 8))),
                )
                obj[side] = wire(draw, fee)
    return _ts(draw, obj)


def round_trip_events(draw: Draw, ctx: Ctx) -> list[dict[str, Any]]:
    """Open a levered position and close it at once far away: a bankrupt account."""
    market = draw(st.sampled_from(ctx.markets))
    trader, first, second = (draw(st.sampled_from(ctx.users)) for _ in range(3))
    if draw(st.integers(0, 3)) == 0:
        second = FUND
    opening = fill_event(draw, ctx)
    opening.update(market=market, buyer=trader, seller=first)
    long = draw(st.booleans())
    if not long:
        opening.update(buyer=first, seller=trader)
    factor = _decimal(draw, Decimal("0.5"), Decimal("0.97"), 3)
    if not long:
        factor = 2 - factor
    _move(draw, ctx, market)
    ctx.price[market] = _positive(draw, ctx.price[market] * factor, 4)
    closing = fill_event(draw, ctx)
    closing.update(market=market, qty=opening["qty"])
    if long:
        closing.update(buyer=second, seller=trader)
    else:
        closing.update(buyer=trader, seller=second)
    events = [opening, closing]
    if draw(st.integers(0, 2)) == 0:
        top_up = _positive(draw, _decimal(draw, ctx.scale / 10, ctx.scale * 5))
        events.insert(0, {"type": "deposit", "account": FUND, "amount": wire(draw, top_up)})
    return events


def book_event(draw: Draw, ctx: Ctx) -> dict[str, Any]:
    market = draw(st.sampled_from(ctx.markets))
    price = ctx.price[market]
    typical = ctx.scale * 5 / price
    obj: dict[str, Any] = {"type": "book", "market": market}
    cross = draw(st.integers(0, 7)) == 0
    for side, direction in (("bids", -1), ("asks", 1)):
        shape = draw(st.integers(0, 9))
        if shape == 0:
            continue  # side missing
        n = 0 if shape == 1 else draw(st.integers(1, 4))
        levels: list[list[str | int]] = []
        level_price = price
        for _ in range(n):
            step = _decimal(draw, Decimal(0), Decimal("0.03"), 3)
            if cross:
                step = -step
            level_price = _positive(draw, level_price * (1 + direction * step), 4)
            size = _positive(draw, typical * _decimal(draw, Decimal("0.01"), Decimal(2), 2), 4)
            levels.append([wire(draw, level_price), wire(draw, size)])
        if levels and draw(st.integers(0, 5)) == 0:
            levels.append(list(draw(st.sampled_from(levels))))  # repeated price adds up
        obj[side] = levels
    return _ts(draw, obj)


def new_params_event(draw: Draw, ctx: Ctx) -> dict[str, Any]:
    market = draw(st.sampled_from(ctx.markets))
    obj, guarded = market_event(draw, market)
    ctx.guarded[market] = guarded
    return obj


# ---------------------------------------------------------------------------------------------
# bad lines


def _absurd(depth: int) -> bytes:
    inner = b"[" * depth + b"]" * depth
    return b'{"type": "deposit", "account": "a", "amount": "1", "x": ' + inner + b"}"


def bad_line(draw: Draw, ctx: Ctx) -> bytes:
    kind = draw(st.integers(0, 99))
    if kind < 14:
        if draw(st.integers(0, 9)) == 0:
            return _absurd(draw(st.sampled_from((100_000, 30_000, 64, 63, 200))))
        return draw(st.sampled_from(MALFORMED_LINES))
    if kind < 22:
        obj = deposit_event(draw, ctx)
        choice = draw(st.integers(0, 4))
        if choice == 0:
            del obj["type"]
        else:
            obj["type"] = draw(
                st.sampled_from(
                    ("Deposit", "trade", "", "withdrawal", 5, ["deposit"], Raw("1" * 4400))
                )
            )
        return dumps(obj)
    if kind < 30:
        obj = draw(st.sampled_from((fill_event, oracle_event, book_event)))(draw, ctx)
        obj["market"] = draw(st.sampled_from(("NOPE", "btc-perp", "BTC-PERP ")))
        if obj["market"] in ctx.markets:  # pragma: no cover - pool names differ
            obj["market"] = "NOPE"
        return dumps(obj)
    if kind < 38:
        obj = deposit_event(draw, ctx)
        obj["account"] = draw(st.sampled_from(RESERVED))
        which = draw(st.integers(0, 2))
        if which == 1:
            obj["type"] = "withdraw"
            obj["account"] = draw(st.sampled_from((FUND, *RESERVED)))
        elif which == 2:
            obj = fill_event(draw, ctx)
            obj[draw(st.sampled_from(("buyer", "seller")))] = draw(st.sampled_from(RESERVED))
        return dumps(obj)
    if kind < 44:
        obj = fill_event(draw, ctx)
        obj["seller"] = obj["buyer"]
        return dumps(obj)
    # invalid_field: one field of a valid event broken
    maker = draw(
        st.sampled_from(
            (
                fill_event,
                fill_event,
                deposit_event,
                withdraw_event,
                oracle_event,
                book_event,
                _market_for_corruption,
            )
        )
    )
    obj = maker(draw, ctx)
    how = draw(st.integers(0, 9))
    kind_name = obj["type"]
    if how == 0:
        del obj[draw(st.sampled_from(REQUIRED[kind_name]))]
    elif how == 1:
        obj["ts"] = draw(st.sampled_from(BAD_TS))
    elif how == 2 and kind_name == "book":
        side = draw(st.sampled_from(("bids", "asks")))
        obj[side] = draw(st.sampled_from(BAD_LEVELS))
    elif how == 3 and kind_name == "market":
        broken = draw(st.sampled_from(BAD_MARKET_PARAMS))
        obj.update(broken)
    else:
        names = [k for k in obj if k in NUMBER_FIELDS or k in ID_FIELDS]
        name = draw(st.sampled_from(names))
        if name in ID_FIELDS:
            obj[name] = draw(st.sampled_from(BAD_IDS))
        else:
            value = draw(st.sampled_from((*BAD_NUMBERS, *NOT_POSITIVE)))
            if name in OPTIONAL and (value is None or value in NOT_POSITIVE):
                value = "abc"  # null or a sign is fine/contested for an optional number
            obj[name] = value
    return dumps(obj)


def _market_for_corruption(draw: Draw, ctx: Ctx) -> dict[str, Any]:
    return market_event(draw, draw(st.sampled_from(ctx.markets)))[0]


# ---------------------------------------------------------------------------------------------
# whole streams


@st.composite
def input_streams(draw: Draw, min_events: int = 1, max_events: int = 200) -> list[bytes]:
    """A replayable ``.jsonl`` stream split into lines (no line contains ``\\n``)."""
    n_markets = draw(st.integers(2, 4))
    markets = draw(
        st.lists(st.sampled_from(MARKET_POOL), min_size=n_markets, max_size=n_markets, unique=True)
    )
    n_users = draw(st.integers(2, 6))
    users = draw(
        st.lists(st.sampled_from(USER_POOL), min_size=n_users, max_size=n_users, unique=True)
    )
    scale = draw(
        st.sampled_from(
            (Decimal("0.001"), Decimal(10), Decimal(1000), Decimal(1000), Decimal(250000))
        )
    )
    price = {
        m: draw(
            st.sampled_from(
                (
                    Decimal("0.00012345"),
                    Decimal("0.35"),
                    Decimal(3),
                    Decimal(100),
                    Decimal(2500),
                    Decimal(61000),
                )
            )
        )
        for m in markets
    }
    ctx = Ctx(markets=markets, price=price, users=users, scale=scale, guarded={})
    lines: list[bytes] = []
    for m in markets:
        obj, ctx.guarded[m] = market_event(draw, m)
        lines.append(dumps(obj))
    for u in users:
        if draw(st.integers(0, 4)):
            amount = _positive(draw, _decimal(draw, scale / 10, scale * 2))
            lines.append(dumps({"type": "deposit", "account": u, "amount": wire(draw, amount)}))
    fund_roll = draw(st.integers(0, 4))
    if fund_roll:
        top = Decimal(1) if fund_roll < 3 else scale
        amount = _positive(draw, _decimal(draw, Decimal("0.01"), top))
        lines.append(dumps({"type": "deposit", "account": FUND, "amount": wire(draw, amount)}))
    for m in markets:
        if draw(st.integers(0, 3)):
            lines.append(dumps({"type": "oracle", "market": m, "price": wire(draw, price[m])}))

    makers = (
        (30, fill_event),
        (20, oracle_event),
        (9, deposit_event),
        (8, withdraw_event),
        (8, book_event),
        (2, new_params_event),
        (3, round_trip_events),
    )
    total = sum(w for w, _ in makers)
    n = draw(st.integers(min_events, max_events))
    for _ in range(n):
        roll = draw(st.integers(0, total + 9))
        if roll >= total + 1:
            lines.append(bad_line(draw, ctx))
            continue
        if roll == total:
            lines.append(draw(st.sampled_from((b"", b"   ", b"\t", b"\r", b" \t\r "))))
            continue
        for weight, maker in makers:
            if roll < weight:
                made = maker(draw, ctx)
                lines.extend(dumps(obj) for obj in (made if isinstance(made, list) else [made]))
                break
            roll -= weight
    if draw(st.integers(0, 9)) == 0:
        lines = [line + b"\r" for line in lines]  # CRLF file
    return lines


def join(lines: list[bytes]) -> bytes:
    """The ``.jsonl`` file content for ``lines`` (trailing newline)."""
    return b"".join(line + b"\n" for line in lines)


# ---------------------------------------------------------------------------------------------
# ticks on liquidation boundaries

E8 = 10**8
MAX_PRICE_E8 = 10**15 * E8  # the largest wire price


@dataclass(frozen=True)
class Boundary:
    """The last mark (e8) of ``market`` at which ``account`` is liquidatable, the other
    marks held still: a long is liquidatable at marks <= ``mark_e8``, a short at >=."""

    account: str
    market: str
    mark_e8: int
    is_long: bool


def liquidation_boundaries(ledger: Any) -> list[Boundary]:
    """Every (account, held market) boundary of a Python-core ``Ledger``, worked out from
    SPEC §2 (E < MM) with exact fractions, independently of the engine's own index."""
    out: list[Boundary] = []
    for account in sorted(ledger.accounts.values(), key=lambda a: a.id):
        if account.is_system or not account.positions:
            continue
        terms = {}  # market -> its part of E - MM per unit of mark, and that mark
        for market_id, position in account.positions.items():
            market = ledger.markets[market_id]
            qty = Fraction(position.qty_e8, E8)
            mmr = Fraction(market.mmr_e8, E8)
            terms[market_id] = (qty - abs(qty) * mmr, Fraction(market.mark_e8, E8))
        whole = Fraction(account.cash_e16, E8 * E8) + sum(s * m for s, m in terms.values())
        for market_id, (slope, mark) in sorted(terms.items()):
            rest = whole - slope * mark  # E - MM without this market's part
            if slope > 0:  # liquidatable iff mark < -rest / slope
                last = math.ceil(-rest * E8 / slope) - 1
            elif slope < 0:  # liquidatable iff mark > rest / -slope
                last = math.floor(rest * E8 / -slope) + 1
            else:
                continue  # mmr = 1: the mark does not move E - MM
            if 1 < last < MAX_PRICE_E8:
                out.append(Boundary(account.id, market_id, last, slope > 0))
    return out


def tick_e8(market: str, price_e8: int) -> bytes:
    """An ``oracle`` input at an e8 price."""
    price = plain(Decimal(price_e8).scaleb(-8))
    return dumps({"type": "oracle", "market": market, "price": price})


@st.composite
def boundary_ticks(draw: Draw, max_events: int = 150) -> list[bytes]:
    """A random stream, then oracle ticks at a current holder's boundary mark or one unit
    (1e-8) either side: where an off-by-one in a liquidation threshold shows."""
    from clearing.engine import Engine

    lines = draw(input_streams(max_events=max_events))
    engine = Engine()
    for line in lines:
        if line.strip(b" \t\r"):
            engine.apply(line)
    for _ in range(draw(st.integers(1, 3))):
        boundaries = liquidation_boundaries(engine.ledger)
        if not boundaries:
            break
        boundary = draw(st.sampled_from(boundaries))
        tick = tick_e8(boundary.market, boundary.mark_e8 + draw(st.sampled_from((-1, 0, 1))))
        engine.apply(tick)
        lines.append(tick)
    return lines
