"""The hostile-input catalogue, and generators of inputs with the outcome the SPEC requires.

One catalogue of invalid values and lines (bad numbers, ids, timestamps, book levels,
market parameters, non-objects, bad syntax, NaN/Infinity, bad UTF-8, lone surrogates,
BOMs) shared by the fuzzer (``tools/fuzz_inputs.py``), the stream strategies of the tests
(``testkit.streams``) and the simulator. ``StreamModel`` makes realistic valid inputs from a
seeded ``random.Random``; ``HostileGenerator`` mixes them with every kind of hostile one,
each a ``Case`` carrying the reject reasons (or acceptance) the SPEC allows for it, which
``check_outcome`` holds the engine's outputs to.
"""

from __future__ import annotations

import json
import random
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from clearing.engine import REJECT_REASONS, EngineCore, OutputEvent

__all__ = [
    "BAD_IDS",
    "BAD_LEVELS",
    "BAD_MARKET_PARAMS",
    "BAD_NUMBERS",
    "BAD_TS",
    "FUND",
    "MALFORMED_LINES",
    "NOT_POSITIVE",
    "OK",
    "Case",
    "HostileGenerator",
    "Raw",
    "StreamModel",
    "check_outcome",
    "dumps",
    "known_bug",
    "state_bytes",
    "valid_case",
]

MIB: Final = 1024 * 1024
E8: Final = 10**8
MAX_WIRE_E8: Final = 10**15 * E8
FUND: Final = "insurance-fund"
RESERVED: Final = ("fee-pool", "bad-debt")
SYSTEM: Final = (FUND, *RESERVED)
OK: Final = "ok"  # the outcome "accepted" (no reject) in expectation sets
MIB: Final = 1024 * 1024

# Code-point order differs from UTF-16 order for these ("\uff5e" < "\U0001f600").
USER_POOL: Final = ("a", "b", "c", "d", "e", "f", "g", "h", "B", "Ω", "\uff5e", "\U0001f600")
MARKET_POOL: Final = ("BTC-PERP", "ETH-PERP", "SOL-PERP", "XRP-PERP", "DOGE", "b-mkt", "Z9")

Expect = frozenset[str] | None
Fields = list[tuple[Any, Any]]  # an object as ordered (key, value) pairs: duplicates allowed


class Raw:
    """A JSON value (or key) written verbatim: ``1e3``, ``NaN``, a 5000-digit integer..."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _enc(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return json.dumps(value, ensure_ascii=False)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    if kind is Raw:
        return value.text
    if kind is list or kind is tuple:
        return "[" + ",".join(_enc(v) for v in value) + "]"
    if kind is dict:
        return "{" + ",".join(f"{_enc(k)}:{_enc(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot encode {kind.__name__}")


def dumps(fields: Fields, sep: str = ",", colon: str = ":") -> bytes:
    """An object from ordered pairs, compact unless told otherwise."""
    body = sep.join(f"{_enc(k)}{colon}{_enc(v)}" for k, v in fields)
    return ("{" + body + "}").encode("utf-8")


def fmt_e8(value: int) -> str:
    """Plain decimal text of an e8 integer (written here, not taken from the engine)."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), E8)
    return f"{sign}{whole}" if frac == 0 else f"{sign}{whole}.{frac:08d}".rstrip("0")


@dataclass(slots=True)
class Case:
    """One generated input and what the SPEC says must happen to it."""

    raw: bytes
    kind: str
    expect: Expect
    # For the simulator's independent money tally: ("deposit"|"withdraw", account, amount e8).
    money: tuple[str, str, int] | None = None


# Engine bugs found by this fuzzer and reported (repro: tests/faults/test_hostile_inputs.py).
# A mismatch they explain is counted apart, so a run still shows every other problem; once a
# bug is fixed its count drops to zero by itself.
_NEG_4300_DIGITS: Final = re.compile(rb"(?<![0-9])-[0-9]{4300}(?![0-9])")
KNOWN_BUGS: Final[dict[str, Callable[[Case, str], bool]]] = {
    # A negative JSON integer of exactly 4300 digits is "malformed", not invalid_field (or
    # unknown_type / ignored): msgspec refuses it, and the engine's huge-integer fallback only
    # starts at 4301 digits.
    "B1-negative-4300-digit-integer": lambda case, problem: (
        "Integer value out of range" in problem and _NEG_4300_DIGITS.search(case.raw) is not None
    ),
}


def known_bug(case: Case, problem: str) -> str | None:
    """The id of the known bug that explains ``problem``, if any."""
    for name, matches in KNOWN_BUGS.items():
        if matches(case, problem):
            return name
    return None


def check_outcome(case: Case, seq: int, outputs: list[OutputEvent]) -> str | None:
    """Why ``outputs`` break the contract for ``case`` (None if they do not)."""
    rejects = [e for e in outputs if type(e).__name__ == "Reject"]
    if rejects:
        if len(outputs) != 1:
            return f"a reject must be the only output; got {len(outputs)} outputs"
        reject = rejects[0]
        if reject.seq != seq:
            return f"reject has seq {reject.seq}, input was {seq}"
        if reject.reason not in REJECT_REASONS:
            return f"reason {reject.reason!r} is not a SPEC reason"
        if case.expect is not None and reject.reason not in case.expect:
            why = f"rejected as {reject.reason!r} ({reject.detail})"
            return f"{why}; expected {sorted(case.expect)}"
        return None
    if case.expect is not None and OK not in case.expect:
        return f"accepted; expected a reject among {sorted(case.expect)}"
    for event in outputs:
        if event.seq != seq:
            return f"output {type(event).__name__} has seq {event.seq}, input was {seq}"
    return None


def state_bytes(engine: EngineCore) -> bytes:
    """``dump_state`` with the input counter set aside (a reject still consumes a seq)."""
    seq = engine.seq
    engine.seq = 0
    try:
        return engine.dump_state()
    finally:
        engine.seq = seq


# ---------------------------------------------------------------------------------------
# Realistic valid inputs.


class StreamModel:
    """A seeded generator of realistic valid inputs that reach the whole loss waterfall.

    Levered fills (up to 30x), oracle crashes and spikes (held by the guard, then confirmed),
    thin or crossed books, a small insurance fund, fees and rebates, withdrawals, parameter
    changes and "round trips" (a levered position opened and closed far from the mark, which
    leaves an account bankrupt). A price model keeps numbers plausible; the engine decides
    what actually happens. Valid fills use fresh ids and distinct non-reserved sides, so the
    SPEC says they are always accepted.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        tag: str = "",
        users: int | None = None,
        markets: int | None = None,
    ) -> None:
        self.rng = rng
        self.tag = tag  # makes fill ids unique per independent stream (simulator feeders)
        n_markets = markets if markets is not None else rng.randint(2, 4)
        n_users = users if users is not None else rng.randint(3, 8)
        self.markets = rng.sample(MARKET_POOL, min(n_markets, len(MARKET_POOL)))
        self.users = rng.sample(USER_POOL, min(n_users, len(USER_POOL)))
        # Typical deposit size in e8 units: from dust to big accounts.
        self.scale = rng.choice((100_000, 10 * E8, 1000 * E8, 1000 * E8, 250_000 * E8))
        start = (12_345, 35_000_000, 3 * E8, 100 * E8, 2_500 * E8, 61_000 * E8)
        self.price = {m: rng.choice(start) for m in self.markets}
        self.pos: dict[tuple[str, str], int] = {}  # model positions, as if all accepted
        self.fill_ids: deque[tuple[str, Fields]] = deque(maxlen=256)  # accepted fills
        self.next_fill = 0
        self.ts = rng.randint(0, 2**40)

    # -- numbers ---------------------------------------------------------------------

    def places(self) -> int:
        return self.rng.choice((0, 1, 2, 2, 4, 6, 8, 8))

    def round_e8(self, value: int, places: int | None = None) -> int:
        """Round an e8 value to ``places`` decimals, keeping it in (0, 1e15]."""
        unit = 10 ** (8 - (self.places() if places is None else places))
        value = max(unit, (value // unit) * unit)
        return min(value, MAX_WIRE_E8)

    def wire(self, value_e8: int) -> str | int:
        """A wire number: usually plain text, sometimes an integer or zero-padded text."""
        text = fmt_e8(value_e8)
        style = self.rng.randrange(20)
        if "." not in text and style < 6 and abs(value_e8) <= MAX_WIRE_E8:
            return int(text)
        if style == 19:
            frac = text.partition(".")[2]
            if not frac:
                return text + "." + "0" * self.rng.randint(1, 8)
            return text + "0" * self.rng.randint(0, 8 - len(frac))
        if style == 18 and not text.startswith("-"):
            return "00" + text  # leading zeros match the SPEC pattern
        return text

    def scaled(self, low_ppm: int, high_ppm: int) -> int:
        return self.scale * self.rng.randint(low_ppm, high_ppm) // 1_000_000

    def extras(self, fields: Fields) -> Fields:
        """Maybe add ``ts`` and an unknown field (ignored by the engine)."""
        rng = self.rng
        if rng.random() < 0.6:
            self.ts += rng.randint(1, 10**9)
            fields.append(("ts", self.ts if rng.random() < 0.97 else -rng.randint(1, 2**62)))
        if rng.random() < 0.06:
            note = rng.choice(
                (
                    "hi",
                    {"nested": [1, Raw("2.5"), None, {"k": True}]},
                    [],
                    7,
                    Raw("1e999"),
                    Raw("-0.0"),
                    Raw("9" * 5000),
                    "\ufeffbom-inside",
                    Raw('"\\ud83d\\ude00 pair"'),
                    "\u0000nul",
                    None,
                )
            )
            fields.insert(rng.randrange(len(fields) + 1), ("x-note", note))
        return fields

    # -- events ----------------------------------------------------------------------

    def market_fields(self, name: str) -> Fields:
        rng = self.rng
        mmr = rng.randint(500_000, 25_000_000)  # 0.005 .. 0.25
        mmr = self.round_e8(mmr, rng.choice((2, 3, 4, 8)))
        imr = min(E8, mmr * rng.randint(100, 400) // 100)
        imr = max(imr, mmr)
        liq_fee = rng.choice((0, 500_000, 1_000_000, rng.randint(0, 10_000) * 1_000))
        fields: Fields = [
            ("type", "market"),
            ("market", name),
            ("imr", self.wire(imr)),
            ("mmr", self.wire(mmr)),
            ("liq_fee", self.wire(liq_fee)),
        ]
        if rng.random() < 0.34:
            fields.append(("max_oracle_move", self.wire(rng.randint(5, 60) * E8 // 100)))
        return self.extras(fields)

    def deposit_fields(self, account: str | None = None) -> Fields:
        rng = self.rng
        if account is None:
            account = FUND if rng.random() < 0.15 else rng.choice(self.users)
        if account == FUND and rng.random() < 0.5:
            amount = rng.randint(1, 2 * E8)
        else:
            amount = self.scaled(50_000, 3_000_000)
        amount = self.round_e8(amount)
        if rng.random() < 0.002:
            amount = MAX_WIRE_E8  # exactly 1e15 is valid
        return self.extras(
            [("type", "deposit"), ("account", account), ("amount", self.wire(amount))]
        )

    def withdraw_fields(self, account: str | None = None) -> Fields:
        rng = self.rng
        if account is None:
            account = rng.choice(self.users) if rng.random() < 0.93 else f"ghost-{self.tag}"
        amount = self.round_e8(self.scaled(10_000, 2_000_000))
        return self.extras(
            [("type", "withdraw"), ("account", account), ("amount", self.wire(amount))]
        )

    def move(self, market: str) -> int:
        """Advance the price model of ``market``; return the new price (e8)."""
        rng = self.rng
        roll = rng.randrange(100)
        if roll < 60:
            ppm = rng.randint(960_000, 1_040_000)
        elif roll < 78:
            ppm = rng.randint(250_000, 850_000)  # crash
        elif roll < 92:
            ppm = rng.randint(1_150_000, 2_500_000)  # spike
        else:
            ppm = 1_000_000
        price = self.round_e8(self.price[market] * ppm // 1_000_000, rng.choice((0, 2, 4, 8)))
        # Keep the walk inside a sane band so positions stay meaningful.
        price = min(max(price, 100), 10**7 * E8)
        self.price[market] = price
        return price

    def oracle_fields(self, market: str | None = None) -> Fields:
        market = market or self.rng.choice(self.markets)
        price = self.move(market)
        return self.extras([("type", "oracle"), ("market", market), ("price", self.wire(price))])

    def _side(self, exclude: str | None = None) -> str:
        rng = self.rng
        while True:
            who = FUND if rng.random() < 0.08 else rng.choice(self.users)
            if who != exclude:
                return who

    def fill_fields(self, market: str | None = None, price: int | None = None) -> Fields:
        rng = self.rng
        open_positions = [k for k, v in self.pos.items() if v != 0]
        holder: str | None = None
        if market is None and open_positions and rng.random() < 0.33:
            # Close (or flip) a position, often far from the mark: bankrupt accounts.
            holder, market = rng.choice(open_positions)
            if rng.random() < 0.66:
                self.move(market)
        elif market is None:
            market = rng.choice(self.markets)
            if rng.random() < 0.1:
                self.move(market)
        if price is None:
            price = self.round_e8(
                self.price[market] * rng.randint(990_000, 1_010_000) // 1_000_000, 4
            )
        leverage = rng.choice((20, 100, 300, 800, 1500, 3000))  # x100
        notional = self.scale * leverage // 100 * rng.randint(10, 100) // 100
        qty = self.round_e8(max(1, notional * E8 // price), rng.choice((0, 1, 3, 8)))
        buyer = self._side()
        seller = self._side(exclude=buyer)
        if holder is not None:
            held = self.pos[(holder, market)]
            if rng.random() < 0.75:
                qty = min(abs(held), MAX_WIRE_E8)
            if held > 0:
                seller = holder
                if buyer == holder:
                    buyer = self._side(exclude=holder)
            else:
                buyer = holder
                if seller == holder:
                    seller = self._side(exclude=holder)
        self.pos[(buyer, market)] = self.pos.get((buyer, market), 0) + qty
        self.pos[(seller, market)] = self.pos.get((seller, market), 0) - qty
        fill_id = f"{self.tag}f{self.next_fill}"
        self.next_fill += 1
        fields: Fields = [
            ("type", "fill"),
            ("fill_id", fill_id),
            ("market", market),
            ("price", self.wire(price)),
            ("qty", self.wire(qty)),
            ("buyer", buyer),
            ("seller", seller),
        ]
        if rng.random() < 0.33:
            for side in ("buyer_fee", "seller_fee"):
                if rng.random() < 0.75:
                    fee_ppm = rng.randint(-6_000, 10_000)  # rebates too
                    fee = notional * fee_ppm // 1_000_000
                    unit = 10 ** (8 - rng.choice((0, 2, 8)))
                    fields.append((side, self.wire((fee // unit) * unit)))
        fields = self.extras(fields)
        self.fill_ids.append((fill_id, fields))
        return fields

    def book_fields(self, market: str | None = None) -> Fields:
        rng = self.rng
        market = market or rng.choice(self.markets)
        price = self.price[market]
        typical = max(1, self.scale * 5 * E8 // price)
        fields: Fields = [("type", "book"), ("market", market)]
        cross = rng.random() < 0.12
        for side, direction in (("bids", -1), ("asks", 1)):
            shape = rng.randrange(10)
            if shape == 0:
                continue  # side missing
            levels: list[list[str | int]] = []
            level = price
            for _ in range(0 if shape == 1 else rng.randint(1, 4)):
                step = rng.randint(0, 30_000) * (-1 if cross else 1)
                level = self.round_e8(level * (1_000_000 + direction * step) // 1_000_000, 4)
                size = self.round_e8(typical * rng.randint(1, 200) // 100, 4)
                levels.append([self.wire(level), self.wire(size)])
            if levels and rng.random() < 0.15:
                levels.append(list(rng.choice(levels)))  # repeated prices add up
            fields.append((side, levels))
        return self.extras(fields)

    def round_trip(self) -> list[Fields]:
        """Open a levered position and close it far from the mark: a bankrupt account."""
        rng = self.rng
        market = rng.choice(self.markets)
        events: list[Fields] = []
        if rng.random() < 0.3:
            events.append(self.deposit_fields(FUND))
        opening = self.fill_fields(market=market)
        events.append(opening)
        values = dict(opening)
        long = rng.random() < 0.5
        trader = values["buyer"] if long else values["seller"]
        factor = rng.randint(500, 970)  # permille
        if not long:
            factor = 2000 - factor
        self.price[market] = self.round_e8(self.price[market] * factor // 1000, 4)
        closing = self.fill_fields(market=market)
        # Same size, the trader on the other side.
        closing_map = dict(closing)
        qty = values["qty"]
        other = self._side(exclude=trader)
        buyer, seller = (other, trader) if long else (trader, other)
        old_q = closing_map["qty"]
        q_e8 = _wire_to_e8(qty)
        self.pos[(closing_map["buyer"], market)] -= _wire_to_e8(old_q)
        self.pos[(closing_map["seller"], market)] += _wire_to_e8(old_q)
        self.pos[(buyer, market)] = self.pos.get((buyer, market), 0) + q_e8
        self.pos[(seller, market)] = self.pos.get((seller, market), 0) - q_e8
        replaced = {"qty": qty, "buyer": buyer, "seller": seller}
        events.append([(k, replaced.get(k, v)) for k, v in closing])
        return events

    def genesis(self) -> list[Fields]:
        rng = self.rng
        events = [self.market_fields(m) for m in self.markets]
        for user in self.users:
            if rng.random() < 0.85:
                events.append(self.deposit_fields(user))
        if rng.random() < 0.8:
            events.append(self.deposit_fields(FUND))
        events.extend(self.oracle_fields(m) for m in self.markets if rng.random() < 0.75)
        return events

    def next_events(self) -> list[Fields]:
        """The next valid input(s): usually one, a round trip gives two or three."""
        roll = self.rng.randrange(80)
        if roll < 30:
            return [self.fill_fields()]
        if roll < 50:
            return [self.oracle_fields()]
        if roll < 59:
            return [self.deposit_fields()]
        if roll < 67:
            return [self.withdraw_fields()]
        if roll < 75:
            return [self.book_fields()]
        if roll < 77:
            return [self.market_fields(self.rng.choice(self.markets))]
        return self.round_trip()


def _wire_to_e8(value: str | int) -> int:
    if type(value) is int:
        return value * E8
    whole, _, frac = str(value).partition(".")
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole)) * E8 + int(frac.ljust(8, "0") or "0"))


def valid_case(fields: Fields, rng: random.Random | None = None) -> Case:
    """A valid input with its outcome: fills, deposits, books, ticks and market events are
    always accepted; a withdrawal may be refused for cash or margin."""
    values = dict(fields)
    kind = values["type"]
    money: tuple[str, str, int] | None = None
    if kind == "withdraw":
        expect = frozenset((OK, "insufficient_cash", "insufficient_margin"))
        money = ("withdraw", values["account"], _wire_to_e8(values["amount"]))
    else:
        expect = frozenset((OK,))
        if kind == "deposit":
            money = ("deposit", values["account"], _wire_to_e8(values["amount"]))
    raw = dumps(fields)
    if rng is not None and rng.random() < 0.03:
        # Whitespace is JSON too: pretty printing, CR, tabs, leading/trailing blanks.
        style = rng.randrange(4)
        if style == 0:
            raw = dumps(fields, sep=",\n  ", colon=": ")
        elif style == 1:
            raw = b" \t" + raw + b"\r"
        elif style == 2:
            raw = dumps(fields, sep=" , ", colon=" :\t")
        else:
            raw = raw + b"\r\n"
    return Case(raw, "valid_" + kind, expect, money)


# ---------------------------------------------------------------------------------------
# Hostile inputs.

_NUMBER_FIELDS: Final = frozenset(
    ("amount", "price", "qty", "imr", "mmr", "liq_fee", "max_oracle_move")
)
_SIGNED_FIELDS: Final = frozenset(("buyer_fee", "seller_fee"))
_ID_FIELDS: Final = frozenset(("account", "market", "fill_id", "buyer", "seller"))
_REQUIRED: Final = {
    "market": ("market", "imr", "mmr", "liq_fee"),
    "deposit": ("account", "amount"),
    "withdraw": ("account", "amount"),
    "fill": ("fill_id", "market", "price", "qty", "buyer", "seller"),
    "oracle": ("market", "price"),
    "book": ("market",),
}
_M = frozenset(("malformed",))
_UT = frozenset(("unknown_type",))
_IF = frozenset(("invalid_field",))

# Values that are never a valid wire number (wrong type, float, out of range, bad text).
BAD_NUMBERS: Final[tuple[Any, ...]] = (
    None,
    True,
    False,
    Raw("1.5"),
    Raw("1e3"),
    Raw("100.0"),
    Raw("-0.0"),
    Raw("1E+2"),
    Raw("0.1"),
    Raw("1e999999"),
    Raw("-1e999999"),
    Raw("1e-999999"),
    Raw("12345678901234567890.5"),
    10**16,
    -(10**16),
    2**64,
    Raw("1" + "0" * 40),
    Raw("9" * 5000),
    Raw("-" + "9" * 4301),
    "1e5",
    "1.123456789",
    " 1",
    "1 ",
    "+1",
    "",
    "abc",
    "1.",
    ".5",
    "0x10",
    "1_000",
    "Infinity",
    "NaN",
    [],
    {},
    ["1"],
    "1000000000000000.00000001",
    "-1000000000000001",
    "1,5",
    "\u0661",
    "\uff11",
    "9" * 5000,
    "0." + "0" * 5000 + "1",
    "1" + "0" * 20 + ".5",
    "1" * 100_000,
)
# Extra values invalid where a number must be > 0 (fine for fees).
NOT_POSITIVE: Final[tuple[Any, ...]] = ("0", "-1", 0, -5, "-0", "0.00000000", "-0.5")
BAD_IDS: Final[tuple[Any, ...]] = (
    None,
    "",
    5,
    0,
    Raw("1.5"),
    True,
    [],
    {},
    ["a"],
    {"id": "a"},
    Raw("7" * 4400),
)
BAD_TS: Final[tuple[Any, ...]] = (
    "123",
    Raw("1.5"),
    Raw("1e9"),
    True,
    None,
    [],
    {},
    2**63,
    -(2**63) - 1,
    2**64 + 5,
    Raw("5" * 4400),
)
BAD_LEVELS: Final[tuple[Any, ...]] = (
    [[1]],
    [["1", "1", "1"]],
    [{"price": "1", "qty": "1"}],
    {"1": "1"},
    "1",
    [None],
    [["0", "1"]],
    [["1", "0"]],
    [["-1", "1"]],
    [["1", Raw("1.5")]],
    [[]],
    None,
    [["1", "1"], ["2", None]],
    [[Raw("1e999"), "1"]],
    [["1", "1e2"]],
)
BAD_MARKET_PARAMS: Final[tuple[dict[str, Any], ...]] = (
    {"imr": "1.5"},
    {"imr": "1.00000001"},
    {"mmr": "0"},
    {"mmr": "-0.01"},
    {"mmr": "0.5", "imr": "0.2"},
    {"liq_fee": "1"},
    {"liq_fee": "-0.01"},
    {"max_oracle_move": "0"},
    {"max_oracle_move": "-1"},
    {"max_oracle_move": None},
    {"imr": "-0.1"},
)
NOT_OBJECTS: Final[tuple[bytes, ...]] = (
    b"[]",
    b"[1, 2]",
    b'"deposit"',
    b"42",
    b"-0",
    b"1e5",
    b"null",
    b"true",
    b"false",
    b'[{"type":"deposit","account":"a","amount":"1"}]',
    b'"{\\"type\\":\\"deposit\\",\\"account\\":\\"a\\",\\"amount\\":\\"1\\"}"',
    b'""',
)
BAD_SYNTAX: Final[tuple[bytes, ...]] = (
    b"",
    b"{",
    b"}",
    b"not json",
    b'{"type": "deposit", "account": "a", "amount": "1",}',
    b"{'type': 'deposit', 'account': 'a', 'amount': '1'}",
    b'{type: "deposit", account: "a", amount: "1"}',
    b'{"type": "deposit", "account": "a", "amount": 01}',
    b'{"type": "deposit", "account": "a", "amount": +1}',
    b'{"type": "deposit", "account": "a", "amount": .5}',
    b'{"type": "deposit", "account": "a", "amount": 1.}',
    b'{"type": "deposit", "account": "a", "amount": 0x10}',
    b'{"type": "deposit" "account": "a"}',
    b'{"type": "deposit", "account" "a"}',
    b'{"type": "deposit", "account": "a", "amount": "1"} {}',
    b'{"type": "deposit", "account": "a", "amount": "1"}{"type":"deposit"}',
    b'{"type": "deposit", "account": "a", "amount": "1"} x',
    b'{"type": "deposit", "account": "a\x01", "amount": "1"}',
    b'{"type": "deposit", "account": "a\tb", "amount": "1"}',
    b'{"type": "deposit", "account": "a\nb", "amount": "1"}',
    b'{"type": "deposit", "account": "a\\x41", "amount": "1"}',
    b'{"type": "deposit", "account": "a\\u12", "amount": "1"}',
    b'{"type": "deposit", "account": "a\\", "amount": "1"}',
    b'{"type": "deposit", "account": "a", "amount": "1" /* c */}',
    b'{"type": "deposit", "account": "a", "amount": "1"} // c',
    b'{"type": "deposit", "account": "a", "amount": "1"',
    b'{"type": "deposit", "account": "a", "amount": tru}',
    b'{"type": "deposit", "account": "a", "amount": undefined}',
    b'{"type": "deposit", "account": "a", "amount": "1", "x": [1, 2}',
    b"\x00",
    b"\x00" * 64,
    b"{}\x00",
    b'{"type":"deposit",,"account":"a","amount":"1"}',
    b'{"type":"deposit","account":"a","amount":"1",,}',
    b'{"":}',
    b'{"type":"deposit","account":\'a\',"amount":"1"}',
)
NAN_INF: Final = (
    "NaN",
    "Infinity",
    "-Infinity",
    "nan",
    "inf",
    "-inf",
    "+Infinity",
    "NAN",
    "-NaN",
)
BAD_UTF8: Final[tuple[bytes, ...]] = (
    b"\xff",
    b"\xfe",
    b"\xc3",  # truncated 2-byte sequence
    b"\xc3(",
    b"\xc0\xaf",  # overlong '/'
    b"\xe0\x80\x80",  # overlong NUL
    b"\xed\xa0\x80",  # UTF-8 encoded surrogate
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf8\x88\x80\x80\x80",  # 5-byte form
    b"\x80",  # lone continuation byte
    b"\xe2\x82",  # truncated 3-byte sequence
    b"\xf0\x9f\x98",  # truncated 4-byte sequence
)
LONE_SURROGATES: Final = (
    "\\ud800",
    "\\udbff",
    "\\udc00",
    "\\udfff",
    "\\ud800\\u0041",
    "\\udc00\\ud800",
    "a\\ud83d",
    "\\ude00x",
)
BOMS: Final[tuple[bytes, ...]] = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf" * 2)
_INJECT: Final = "@@INJECT@@"

_DEPOSIT: Final = '{{"type":"deposit","account":{account},"amount":{amount}}}'
# Whole lines the SPEC calls ``malformed``, one .jsonl line each (no newline inside): for
# stream generators that splice a bad line in at random (testkit.streams).
MALFORMED_LINES: Final[tuple[bytes, ...]] = (
    *NOT_OBJECTS,
    *(line for line in BAD_SYNTAX if line and b"\n" not in line),
    *(_DEPOSIT.format(account='"a"', amount=lit).encode() for lit in NAN_INF[:3]),
    *(b'{"type":"deposit","account":"a' + bad + b'","amount":"1"}' for bad in BAD_UTF8[:4]),
    *(_DEPOSIT.format(account=f'"{esc}"', amount='"1"').encode() for esc in LONE_SURROGATES[:3]),
    *(bom + b"{}" for bom in BOMS[:2]),
)  # fmt: skip


class HostileGenerator:
    """Inputs with expected outcomes: valid ones mixed with every kind of hostile one.

    ``valid_share`` of the inputs are valid (from ``model``); the rest are hostile. With
    ``state_free`` the generator avoids expectations that depend on inputs generated by
    other streams (the simulator's feeders interleave): ``out_of_order`` creates markets.
    """

    def __init__(
        self,
        rng: random.Random,
        model: StreamModel,
        *,
        valid_share: float = 0.25,
        oversized_every: int = 0,
        state_free: bool = False,
    ) -> None:
        self.rng = rng
        self.model = model
        self.valid_share = valid_share
        self.oversized_every = oversized_every
        self.state_free = state_free
        self.count = 0
        self.pending: deque[Case] = deque()
        self.recent: deque[Case] = deque(maxlen=64)  # for verbatim replays
        self.future_markets = [m for m in MARKET_POOL if m not in model.markets]
        kinds: list[tuple[int, Callable[[], Case]]] = [
            (6, self.truncated),
            (5, self.byte_flip),
            (3, self.random_bytes),
            (2, self.not_object),
            (4, self.bad_syntax),
            (4, self.nan_inf),
            (5, self.invalid_utf8),
            (4, self.lone_surrogate),
            (2, self.bom),
            (3, self.deep_nesting),
            (5, self.unknown_type),
            (14, self.invalid_field),
            (6, self.float_number),
            (6, self.huge_number),
            (3, self.duplicate_keys),
            (3, self.reserved_account),
            (2, self.self_trade),
            (3, self.duplicate_fill),
            (2, self.withdraw_without_cash),
            (3, self.unknown_market),
        ]
        kinds.append((3, self.replay))  # replays stay within one stream: state-free
        if not state_free:
            kinds.append((3, self.out_of_order))
        self.kinds = kinds
        self.total_weight = sum(w for w, _ in kinds)

    # -- driver ----------------------------------------------------------------------

    def genesis(self) -> list[Case]:
        return [valid_case(f) for f in self.model.genesis()]

    def next_case(self) -> Case:
        self.count += 1
        if self.pending:
            case = self.pending.popleft()
        elif self.oversized_every and self.count % self.oversized_every == 0:
            case = self.oversized()
        elif self.rng.random() < self.valid_share:
            events = self.model.next_events()
            cases = [valid_case(f, self.rng) for f in events]
            case = cases[0]
            self.pending.extend(cases[1:])
        else:
            roll = self.rng.randrange(self.total_weight)
            for weight, make in self.kinds:
                if roll < weight:
                    case = make()
                    break
                roll -= weight
        if len(case.raw) < 4096:
            self.recent.append(case)
        return case

    def __iter__(self) -> Iterator[Case]:
        while True:
            yield self.next_case()

    # -- helpers ---------------------------------------------------------------------

    def base(self) -> Fields:
        """A valid event to break, never a withdrawal (its outcome depends on cash)."""
        make = self.rng.choice(
            (
                self.model.fill_fields,
                self.model.fill_fields,
                self.model.deposit_fields,
                self.model.oracle_fields,
                self.model.book_fields,
                lambda: self.model.market_fields(self.rng.choice(self.model.markets)),
            )
        )
        fields = make()
        if dict(fields)["type"] == "fill":
            # A broken fill is never accepted: forget its id (it stays free).
            self.model.fill_ids.pop()
        return fields

    def _inject(self, fields: Fields, payload: bytes, where: str | None = None) -> bytes:
        """Serialize with ``payload`` spliced into a string: an id, a key or a new field."""
        rng = self.rng
        where = where or rng.choice(("id", "key", "extra"))
        fields = list(fields)
        if where == "id":
            index = next(i for i, (k, _) in enumerate(fields) if k in _ID_FIELDS)
            key, value = fields[index]
            fields[index] = (key, value + _INJECT)
        elif where == "key":
            fields.insert(rng.randrange(1, len(fields) + 1), ("k" + _INJECT, 1))
        else:
            fields.insert(rng.randrange(1, len(fields) + 1), ("note", "x" + _INJECT + "y"))
        return dumps(fields).replace(_INJECT.encode(), payload)

    # -- kinds -----------------------------------------------------------------------

    def truncated(self) -> Case:
        raw = dumps(self.base())
        return Case(raw[: self.rng.randrange(len(raw))], "truncated", _M)

    def byte_flip(self) -> Case:
        rng = self.rng
        # A flipped fill may still be valid and accepted: its id gets a prefix that three
        # edits cannot remove, so it never takes the id of a later valid fill.
        fields = [(k, "~flip~" + v if k == "fill_id" else v) for k, v in self.base()]
        raw = bytearray(dumps(fields))
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(3)
            at = rng.randrange(len(raw))
            if op == 0:
                raw[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                raw.insert(at, rng.randrange(256))
            elif len(raw) > 1:
                del raw[at]
        return Case(bytes(raw), "byte_flip", None)

    def random_bytes(self) -> Case:
        rng = self.rng
        if rng.random() < 0.5:
            raw = rng.randbytes(rng.randint(0, 200))
        else:  # JSON-looking token soup
            tokens = ("{", "}", "[", "]", ":", ",", '"type"', '"deposit"', "1", '"a"', "null")
            raw = "".join(rng.choice(tokens) for _ in range(rng.randint(1, 40))).encode()
        return Case(raw, "random_bytes", None)

    def not_object(self) -> Case:
        return Case(self.rng.choice(NOT_OBJECTS), "not_object", _M)

    def bad_syntax(self) -> Case:
        return Case(self.rng.choice(BAD_SYNTAX), "bad_syntax", _M)

    def nan_inf(self) -> Case:
        rng = self.rng
        fields = self.base()
        literal = Raw(rng.choice(NAN_INF))
        numbers = [i for i, (k, _) in enumerate(fields) if k in _NUMBER_FIELDS | _SIGNED_FIELDS]
        if numbers and rng.random() < 0.6:
            index = rng.choice(numbers)
            fields[index] = (fields[index][0], literal)
        else:  # not JSON even where the field is ignored
            fields.append(("x", [1, literal] if rng.random() < 0.5 else literal))
        return Case(dumps(fields), "nan_inf", _M)

    def invalid_utf8(self) -> Case:
        payload = self.rng.choice(BAD_UTF8)
        return Case(self._inject(self.base(), payload), "invalid_utf8", _M)

    def lone_surrogate(self) -> Case:
        payload = self.rng.choice(LONE_SURROGATES).encode()
        return Case(self._inject(self.base(), payload), "lone_surrogate", _M)

    def bom(self) -> Case:
        return Case(self.rng.choice(BOMS) + dumps(self.base()), "bom", _M)

    def deep_nesting(self) -> Case:
        rng = self.rng
        fields = self.base()
        # The top-level object is level 1: an array nested d deep makes the input 1 + d.
        depth = rng.choice((64, 65, 66, 100, 1000, rng.randint(64, 5000)))
        if rng.random() < 0.02:
            depth = 100_000  # ~0.6 MB of brackets: the byte-by-byte depth scan is slow
        if rng.random() < 0.2:
            depth = 63  # exactly 64 levels: still fine (the boundary)
        opener, closer = rng.choice((("[", "]"), ('{"a":', "}")))
        nested = Raw(opener * depth + "1" + closer * depth)
        if rng.random() < 0.7:
            fields.append(("x", nested))
        else:  # in a known field: still malformed, nesting is checked first
            known = [i for i, (k, _) in enumerate(fields) if k in _NUMBER_FIELDS | _ID_FIELDS]
            index = rng.choice(known)
            fields[index] = (fields[index][0], nested)
        if depth == 63:
            if any(k == "x" for k, _ in fields):
                return Case(dumps(fields), "nesting_64_ok", frozenset((OK,)))
            return Case(dumps(fields), "nesting_64_bad_field", _IF)
        if rng.random() < 0.1:
            return Case(dumps(fields)[:-1], "deep_nesting", _M)  # unterminated as well
        return Case(dumps(fields), "deep_nesting", _M)

    def unknown_type(self) -> Case:
        rng = self.rng
        fields = self.base()
        if rng.random() < 0.25:
            fields = [(k, v) for k, v in fields if k != "type"]
        else:
            value = rng.choice(
                (
                    "Deposit",
                    "DEPOSIT",
                    "trade",
                    "",
                    " deposit",
                    "deposit ",
                    "withdrawal",
                    "liquidation",
                    "reject",
                    "fill\u0000",
                    5,
                    None,
                    True,
                    ["deposit"],
                    {"t": "deposit"},
                    Raw("1.5"),
                    Raw("1" * 4400),
                )
            )
            fields = [(k, value if k == "type" else v) for k, v in fields]
            if rng.random() < 0.3:  # the first failure wins: a bad field too
                fields.append(("amount", Raw("1.5")))
        return Case(dumps(fields), "unknown_type", _UT)

    def invalid_field(self) -> Case:
        rng = self.rng
        fields = self.base()
        kind = dict(fields)["type"]
        how = rng.randrange(10)
        if how == 0:
            name = rng.choice(_REQUIRED[kind])
            fields = [(k, v) for k, v in fields if k != name]
            return Case(dumps(fields), "missing_field", _IF)
        if how == 1:
            fields = [(k, v) for k, v in fields if k != "ts"]
            fields.append(("ts", rng.choice(BAD_TS)))
            return Case(dumps(fields), "bad_ts", _IF)
        if how == 2 and kind == "book":
            side = rng.choice(("bids", "asks"))
            fields = [(k, v) for k, v in fields if k != side]
            fields.append((side, rng.choice(BAD_LEVELS)))
            return Case(dumps(fields), "bad_levels", _IF)
        if how == 3 and kind == "market":
            broken = rng.choice(BAD_MARKET_PARAMS)
            fields = [(k, v) for k, v in fields if k not in broken] + list(broken.items())
            return Case(dumps(fields), "bad_market_params", _IF)
        names = [k for k, _ in fields if k in _NUMBER_FIELDS | _SIGNED_FIELDS | _ID_FIELDS]
        name = rng.choice(names)
        if name in _ID_FIELDS:
            value = rng.choice(BAD_IDS)
        elif name in _SIGNED_FIELDS:
            value = rng.choice(BAD_NUMBERS)
        else:
            value = rng.choice(BAD_NUMBERS + NOT_POSITIVE)
            if name in ("liq_fee",) and value in ("0", 0, "-0", "0.00000000"):
                value = "abc"  # a zero liquidation fee is valid
        fields = [(k, value if k == name else v) for k, v in fields]
        return Case(dumps(fields), "wrong_value", _IF)

    def float_number(self) -> Case:
        rng = self.rng
        fields = self.base()
        literal = Raw(rng.choice(("1.5", "1e3", "100.0", "-0.0", "1E+2", "0.1", "2.5e-3", "1.0")))
        names = [i for i, (k, _) in enumerate(fields) if k in _NUMBER_FIELDS | _SIGNED_FIELDS]
        if rng.random() < 0.8 and names:
            index = rng.choice(names)
            fields[index] = (fields[index][0], literal)
            return Case(dumps(fields), "float_number", _IF)
        fields.append(("x-float", literal))  # ignored where unknown
        return Case(dumps(fields), "float_ignored", frozenset((OK,)))

    def huge_number(self) -> Case:
        rng = self.rng
        fields = self.base()
        digits = rng.choice((17, 20, 40, 4300, 4301, 5000, rng.randint(16, 20_000)))
        huge = rng.choice(
            (
                Raw("9" * digits),
                Raw("-" + "9" * digits),
                "9" * digits,
                "1" + "0" * digits + ".5",
                "0." + "0" * digits,
                Raw("1e" + "9" * min(digits, 30)),
                10**16 + rng.randint(0, 10**6),
                "1000000000000001",
            )
        )
        names = [i for i, (k, _) in enumerate(fields) if k in _NUMBER_FIELDS | _SIGNED_FIELDS]
        if rng.random() < 0.8 and names:
            index = rng.choice(names)
            fields[index] = (fields[index][0], huge)
            return Case(dumps(fields), "huge_number", _IF)
        fields.append(("x-huge", huge))
        return Case(dumps(fields), "huge_ignored", frozenset((OK,)))

    def duplicate_keys(self) -> Case:
        """Repeated keys: the last one wins (reference decision A5)."""
        rng = self.rng
        fields = self.base()
        numbers = [(k, v) for k, v in fields if k in _NUMBER_FIELDS]
        if not numbers:
            fields.append(("type", "nope"))
            return Case(dumps(fields), "duplicate_key_type", _UT)
        key, good = rng.choice(numbers)
        if rng.random() < 0.5:
            fields.append((key, Raw("1.5")))  # the bad value last
            return Case(dumps(fields), "duplicate_key_bad_last", _IF)
        fields = [(k, Raw("1.5") if k == key else v) for k, v in fields] + [(key, good)]
        return Case(dumps(fields), "duplicate_key_good_last", frozenset((OK,)))

    def reserved_account(self) -> Case:
        rng = self.rng
        model = self.model
        roll = rng.randrange(3)
        if roll == 0:
            fields = model.deposit_fields(rng.choice(RESERVED))
        elif roll == 1:
            fields = model.withdraw_fields(rng.choice(SYSTEM))
        else:
            fields = model.fill_fields()
            model.fill_ids.pop()
            side = rng.choice(("buyer", "seller"))
            fields = [(k, rng.choice(RESERVED) if k == side else v) for k, v in fields]
        return Case(dumps(fields), "reserved_account", frozenset(("reserved_account",)))

    def self_trade(self) -> Case:
        fields = self.model.fill_fields()
        self.model.fill_ids.pop()
        values = dict(fields)
        fields = [(k, values["buyer"] if k == "seller" else v) for k, v in fields]
        return Case(dumps(fields), "self_trade", frozenset(("self_trade",)))

    def duplicate_fill(self) -> Case:
        rng = self.rng
        if not self.model.fill_ids:
            return self.self_trade()
        _fill_id, fields = rng.choice(self.model.fill_ids)
        if rng.random() < 0.5:
            # Same id, different terms: still a duplicate (the id alone decides).
            model = self.model
            fresh = dict(model.fill_fields(market=dict(fields)["market"]))
            model.fill_ids.pop()
            changed = {"price": fresh["price"], "qty": fresh["qty"]}
            fields = [(k, changed.get(k, v)) for k, v in fields]
        return Case(dumps(fields), "duplicate_fill", frozenset(("duplicate_fill",)))

    def withdraw_without_cash(self) -> Case:
        rng = self.rng
        who = rng.choice(("ghost", "nobody-", "\U0001f47b")) + str(rng.randrange(10**6))
        fields = self.model.withdraw_fields(who)
        return Case(dumps(fields), "withdraw_unknown_account", frozenset(("insufficient_cash",)))

    def unknown_market(self) -> Case:
        rng = self.rng
        model = self.model
        name = rng.choice(("NOPE", "btc-perp", "BTC-PERP ", "NOPE-2", "\u00c5-PERP"))
        make = rng.choice((model.fill_fields, model.oracle_fields, model.book_fields))
        fields = make()
        if dict(fields)["type"] == "fill":
            model.fill_ids.pop()
        fields = [(k, name if k == "market" else v) for k, v in fields]
        return Case(dumps(fields), "unknown_market", frozenset(("unknown_market",)))

    def out_of_order(self) -> Case:
        """A market used before its ``market`` event, which may come later in the stream."""
        rng = self.rng
        model = self.model
        if not self.future_markets:
            return self.unknown_market()
        name = self.future_markets[0]
        if rng.random() < 0.15:
            # Now create it: later inputs for it are fine.
            self.future_markets.pop(0)
            model.markets.append(name)
            model.price[name] = rng.choice((3 * E8, 100 * E8))
            return valid_case(model.market_fields(name))
        model.price.setdefault(name, 100 * E8)
        fields = model.fill_fields(market=name)
        model.fill_ids.pop()
        model.pos = {k: v for k, v in model.pos.items() if k[1] != name}
        return Case(dumps(fields), "out_of_order", frozenset(("unknown_market",)))

    def replay(self) -> Case:
        """A verbatim re-send of a recent input: a fill is a duplicate, a deposit counts
        again, anything else gets whatever the current state says."""
        if not self.recent:
            return self.truncated()
        old = self.rng.choice(self.recent)
        if old.kind == "valid_fill":
            return Case(old.raw, "replay_fill", frozenset(("duplicate_fill",)))
        if old.kind == "valid_deposit":
            return Case(old.raw, "replay_deposit", frozenset((OK,)), old.money)
        return Case(old.raw, "replay_other", None, None)

    def oversized(self) -> Case:
        """A 1-4 MiB input."""
        rng = self.rng
        size = rng.randint(1 * MIB, 4 * MIB)
        fields = self.model.deposit_fields(rng.choice(self.model.users))
        which = rng.randrange(8)
        if which == 0:  # valid: a huge ignored string
            fields.append(("blob", "z" * size))
            return Case(dumps(fields), "oversized_ok", frozenset((OK,)), _money_of(fields))
        if which == 1:
            fields = [(k, Raw("9" * size) if k == "amount" else v) for k, v in fields]
            return Case(dumps(fields), "oversized_digits", _IF)
        if which == 2:
            return Case(b"[" * size, "oversized_brackets", _M)
        if which == 3:
            fields = [("type", "deposit"), ("account", "q" * size), ("amount", Raw("1.5"))]
            return Case(dumps(fields), "oversized_id_bad_amount", _IF)
        if which == 4:
            fields.append(("blob", "\u20ac" * (size // 3) + _INJECT))
            return Case(dumps(fields).replace(_INJECT.encode(), b"\xff"), "oversized_utf8", _M)
        if which == 5:
            fields = [(k, "9" * size if k == "amount" else v) for k, v in fields]
            return Case(dumps(fields), "oversized_digit_string", _IF)
        if which == 6:
            return Case(rng.randbytes(size), "oversized_random", None)
        fields.append(("blob", Raw("[" + ",".join(["[[1]]"] * (size // 6)) + "]")))
        return Case(dumps(fields), "oversized_wide_ok", frozenset((OK,)), _money_of(fields))


def _money_of(fields: Fields) -> tuple[str, str, int]:
    values = dict(fields)
    return ("deposit", values["account"], _wire_to_e8(values["amount"]))
