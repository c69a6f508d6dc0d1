"""Reference model of the clearing contract (shared/SPEC.md), used only by tests.

Deliberately simple and slow: exact ``Fraction`` arithmetic, plain dicts, full scans of every
account after every input.  It is written from the SPEC text alone, independently of the
production engine in ``clearing/engine/``, so that the differential tests compare two readings
of the contract.

Choices made where the SPEC is vague or looks flawed (each is a decision, listed so other
implementations can be held to the same reading):

A1. System accounts ``bad-debt``, ``fee-pool`` and ``insurance-fund`` exist from the start and
    always appear in the state (team decision).  A user account is created by an accepted
    deposit or an accepted fill; a rejected input creates nothing.
A2. ``null`` is invalid for optional fields too (``max_oracle_move``, ``buyer_fee``,
    ``seller_fee``, ``bids``, ``asks``, ``ts``): §3 lists ``null`` next to "missing" as an
    ``invalid_field``, and only absence means "not given".
A3. ``ts`` is a known field: when present it must be a JSON integer (not a bool, float or
    string) that fits a signed 64-bit integer, else ``invalid_field``.  Negative values are
    accepted ("since the epoch" gives no lower bound; nothing depends on ``ts``).
A4. ``type`` present but not one of the six type strings (a number, ``null``, an object, a
    differently-cased string) is ``unknown_type``, never ``invalid_field``.
A5. Duplicate keys in one JSON object: the last one wins (RFC 8259 / Python behaviour).
A6. "Absurd nesting": an input whose arrays/objects nest deeper than ``MAX_DEPTH`` = 64
    levels (the top-level object is level 1; a valid event needs 3) is ``malformed``,
    wherever the nesting is (an ignored field included).  The SPEC gives no number.
A7. A JSON string holding an unpaired surrogate escape (``"\\ud800"``), anywhere in the input
    (key, id or ignored field), is not Unicode text: ``malformed``, like invalid UTF-8.
A8. A JSON integer literal of any length is JSON: one of more than 4300 digits (Python's
    default int conversion limit) is ``invalid_field`` in a number field like any value above
    1e15, ``unknown_type`` in ``type`` and ignored in an unknown field.  Likewise a decimal
    string of thousands of digits is ``invalid_field``.
A9. ``fill_id`` is an id, so a non-empty JSON string; fill ids form one namespace across all
    markets, and only accepted fills record theirs (a rejected fill's id is still free).
A10. A decimal string exactly matching the §1 regex is valid even with leading zeros
    (``"007.50"``) or as ``"-0"`` (= 0, so invalid where the value must be > 0, fine for a fee);
    ``1e15`` itself is valid, anything of larger magnitude is not.  Ratios (``imr``, ``mmr``,
    ``liq_fee``, ``max_oracle_move``) follow the same wire rules as money.  JSON floats are
    invalid wherever a number is expected, even ``1.0``; they are fine in ignored fields.
A11. An "accepted tick" (§2 mark rule) is one that set the mark; a held tick is not, so fills
    keep moving the mark of a market that has only seen held ticks.  A fill never touches a
    held price ``h``; only an accepted tick or a ``market`` event clears it.  A close-out is
    not a fill: it never moves the mark.
A12. Liquidation ``proceeds`` is signed like the cash it brings (negative for a short); the
    fee is ``round8(liq_fee * |proceeds|)``; ``mark`` is the market's mark at the close-out.
    The fee is paid by the liquidated account to ``insurance-fund``.  A bankrupt account
    (steps 3-5 only) pays no liquidation fee.
A13. Clawbacks do not touch ``K`` (the SPEC defines ``K`` from trades and close-outs only),
    so the same unrealised profit can be clawed back again by a later bankruptcy within the
    same or a later input.  Literal reading; arguably a flaw in the contract.
A14. ``fee-pool`` pays rebates (negative fees) even when that drives its cash negative; the
    fund's draw is capped by its equity but its cash may go negative through close-outs.
A15. Accounts are re-checked after every input by a full scan of all user accounts.  This is
    equivalent to §4's "accounts checked" list because after every input no user account is
    left liquidatable or bankrupt, and only the listed events can change that (a deposit only
    raises equity; an accepted withdrawal leaves ``E >= IM >= MM`` and ``C >= 0``).  Bankrupt
    accounts can only come from a fill (clawed accounts still hold a position), so the
    "markets held" of a bankrupt account is the fill's market.  ``E/MM`` is compared exactly.
A16. Book levels are ``[price, qty]`` JSON arrays of exactly two wire numbers, both > 0; a
    side given as ``[]`` is empty.  Levels are sorted by the model (the input order of levels
    does not matter); bids and asks may cross.
A17. A ``market`` event for an existing market re-checks all its holders even if the new
    parameters equal the old ones; it keeps mark, book (with its consumed levels) and the
    "a tick was accepted" flag.
A18. Lines: empty lines and lines of only spaces, tabs and ``\\r`` are skipped; any other
    whitespace is part of the input (JSON whitespace around the object is fine, a form feed
    or a BOM makes it ``malformed``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

FUND = "insurance-fund"
FEE_POOL = "fee-pool"
BAD_DEBT = "bad-debt"
SYSTEM_ACCOUNTS = (BAD_DEBT, FEE_POOL, FUND)

MAX_DEPTH = 64
LIMIT = Fraction(10**15)
UNIT = Fraction(1, 10**16)
TS_MIN, TS_MAX = -(2**63), 2**63 - 1

_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]{1,8})?")
_INT_RE = re.compile(r"-?[0-9]+")
_BLANK = frozenset(b" \t\r")

TYPES = ("market", "deposit", "withdraw", "fill", "oracle", "book")


# ---------------------------------------------------------------------------------------------
# numbers


def fmt(value: Fraction) -> str:
    """Plain notation, no trailing zeros, no ``-0``, no exponent."""
    scaled = value / UNIT
    if scaled.denominator != 1:
        raise AssertionError(f"value {value} is not a multiple of 1e-16")
    n = scaled.numerator
    sign = "-" if n < 0 else ""
    n = abs(n)
    whole, frac = divmod(n, 10**16)
    if frac == 0:
        return f"{sign}{whole}" if whole else "0"
    digits = f"{frac:016d}".rstrip("0")
    return f"{sign}{whole}.{digits}"


def round8(value: Fraction) -> Fraction:
    """Round to 8 decimal places, half to even."""
    scaled = value * 10**8
    floor = scaled.numerator // scaled.denominator
    rest = scaled - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
        floor += 1
    return Fraction(floor, 10**8)


# ---------------------------------------------------------------------------------------------
# decoding and validation


class Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class _JsonInt:
    """A JSON integer literal, kept as text (no int-size limit, never confused with bool)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _JsonFloat:
    """A JSON number with a fraction or exponent: never valid where a number is expected."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _nesting_depth(text: str) -> int:
    """Deepest array/object nesting, counting brackets outside strings."""
    depth = best = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def decode(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Reject("malformed", "not valid UTF-8") from exc
    if _nesting_depth(text) > MAX_DEPTH:
        raise Reject("malformed", "absurd nesting")
    try:
        obj = json.loads(
            text,
            parse_int=_JsonInt,
            parse_float=_JsonFloat,
            parse_constant=_no_constants,
        )
    except (ValueError, RecursionError) as exc:
        raise Reject("malformed", f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise Reject("malformed", "not a JSON object")
    if _has_lone_surrogate(obj):
        raise Reject("malformed", "unpaired surrogate in a string")
    return obj


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _bad(name: str, why: str) -> Reject:
    return Reject("invalid_field", f"{name}: {why}")


def _wire_number(value: Any, name: str) -> Fraction:
    if isinstance(value, _JsonInt):
        text = value.text
        if not _INT_RE.fullmatch(text):  # pragma: no cover - json only yields such text
            raise _bad(name, "not an integer")
    elif isinstance(value, str):
        text = value
        if not _DECIMAL_RE.fullmatch(text):
            raise _bad(name, "not a decimal string")
    else:
        raise _bad(name, "wrong type")
    whole = text.lstrip("-").split(".")[0].lstrip("0")
    if len(whole) > 16:
        raise _bad(name, "magnitude above 1e15")
    number = Fraction(text)
    if abs(number) > LIMIT:
        raise _bad(name, "magnitude above 1e15")
    return number


def _number(obj: dict[str, Any], name: str) -> Fraction:
    if name not in obj:
        raise _bad(name, "missing")
    if obj[name] is None:
        raise _bad(name, "null")
    return _wire_number(obj[name], name)


def _positive(obj: dict[str, Any], name: str) -> Fraction:
    value = _number(obj, name)
    if value <= 0:
        raise _bad(name, "must be > 0")
    return value


def _optional_number(obj: dict[str, Any], name: str) -> Fraction | None:
    if name not in obj:
        return None
    return _number(obj, name)


def _id(obj: dict[str, Any], name: str) -> str:
    if name not in obj:
        raise _bad(name, "missing")
    value = obj[name]
    if not isinstance(value, str) or value == "":
        raise _bad(name, "must be a non-empty string")
    return value


def _levels(obj: dict[str, Any], name: str) -> list[tuple[Fraction, Fraction]]:
    if name not in obj:
        return []
    value = obj[name]
    if not isinstance(value, list):
        raise _bad(name, "must be a list")
    levels = []
    for level in value:
        if not isinstance(level, list) or len(level) != 2:
            raise _bad(name, "levels are [price, qty]")
        price = _wire_number(level[0], name)
        qty = _wire_number(level[1], name)
        if price <= 0 or qty <= 0:
            raise _bad(name, "level price and qty must be > 0")
        levels.append((price, qty))
    return levels


def _check_ts(obj: dict[str, Any]) -> None:
    if "ts" not in obj:
        return
    value = obj["ts"]
    if not isinstance(value, _JsonInt):
        raise _bad("ts", "must be an integer")
    if len(value.text.lstrip("-").lstrip("0")) > 19 or not TS_MIN <= int(value.text) <= TS_MAX:
        raise _bad("ts", "out of 64-bit range")


# ---------------------------------------------------------------------------------------------
# state


@dataclass
class Market:
    imr: Fraction
    mmr: Fraction
    liq_fee: Fraction
    guard: Fraction | None
    mark: Fraction | None = None
    ticked: bool = False  # an oracle tick has set the mark
    held: Fraction | None = None
    bids: list[list[Fraction]] = field(default_factory=list)  # [price, qty], best first
    asks: list[list[Fraction]] = field(default_factory=list)


@dataclass
class Account:
    cash: Fraction = Fraction(0)
    pos: dict[str, Fraction] = field(default_factory=dict)
    k: dict[str, Fraction] = field(default_factory=dict)

    def q(self, market: str) -> Fraction:
        return self.pos.get(market, Fraction(0))

    def holds(self) -> list[str]:
        return sorted(m for m, q in self.pos.items() if q != 0)


def _sign(x: Fraction) -> int:
    return (x > 0) - (x < 0)


class Ledger:
    def __init__(self) -> None:
        self.markets: dict[str, Market] = {}
        self.accounts: dict[str, Account] = {name: Account() for name in SYSTEM_ACCOUNTS}
        self.fill_ids: set[str] = set()
        self.net_deposits = Fraction(0)

    # --- measures --------------------------------------------------------------------------

    def _mark(self, market: str) -> Fraction:
        mark = self.markets[market].mark
        assert mark is not None, "a position exists only in a market with a mark"
        return mark

    def equity(self, acct: Account) -> Fraction:
        return acct.cash + sum(
            (q * self._mark(m) for m, q in acct.pos.items() if q != 0), Fraction(0)
        )

    def requirement(self, acct: Account, ratio: str) -> Fraction:
        total = Fraction(0)
        for m, q in acct.pos.items():
            if q != 0:
                total += abs(q) * self._mark(m) * getattr(self.markets[m], ratio)
        return total

    def _users(self) -> list[str]:
        return sorted(n for n in self.accounts if n not in SYSTEM_ACCOUNTS)

    def _account(self, name: str) -> Account:
        if name not in self.accounts:
            self.accounts[name] = Account()
        return self.accounts[name]

    # --- one input -------------------------------------------------------------------------

    def apply(self, seq: int, raw: bytes) -> list[dict[str, Any]]:
        try:
            obj = decode(raw)
            kind = obj.get("type")
            if "type" not in obj or not isinstance(kind, str) or kind not in TYPES:
                raise Reject("unknown_type", f"type {kind!r}")
            handler = getattr(self, f"_do_{kind}")
            out: list[dict[str, Any]] = handler(seq, obj)
        except Reject as rej:
            return [{"type": "reject", "seq": seq, "reason": rej.reason, "detail": rej.detail}]
        self._check_invariants()
        return out

    def _do_market(self, seq: int, obj: dict[str, Any]) -> list[dict[str, Any]]:
        name = _id(obj, "market")
        imr = _number(obj, "imr")
        mmr = _number(obj, "mmr")
        liq_fee = _number(obj, "liq_fee")
        guard = _optional_number(obj, "max_oracle_move")
        _check_ts(obj)
        if not 0 < mmr <= imr <= 1:
            raise _bad("mmr/imr", "need 0 < mmr <= imr <= 1")
        if not 0 <= liq_fee < 1:
            raise _bad("liq_fee", "need 0 <= liq_fee < 1")
        if guard is not None and guard <= 0:
            raise _bad("max_oracle_move", "must be > 0")
        market = self.markets.get(name)
        if market is None:
            self.markets[name] = Market(imr, mmr, liq_fee, guard)
        else:
            market.imr, market.mmr, market.liq_fee, market.guard = imr, mmr, liq_fee, guard
            market.held = None
        return self._settle(seq, None)

    def _do_deposit(self, seq: int, obj: dict[str, Any]) -> list[dict[str, Any]]:
        name = _id(obj, "account")
        amount = _positive(obj, "amount")
        _check_ts(obj)
        if name in (FEE_POOL, BAD_DEBT):
            raise Reject("reserved_account", f"{name} cannot deposit")
        self._account(name).cash += amount
        self.net_deposits += amount
        return []

    def _do_withdraw(self, seq: int, obj: dict[str, Any]) -> list[dict[str, Any]]:
        name = _id(obj, "account")
        amount = _positive(obj, "amount")
        _check_ts(obj)
        if name in SYSTEM_ACCOUNTS:
            raise Reject("reserved_account", f"{name} cannot withdraw")
        acct = self.accounts.get(name)
        if acct is None or amount > acct.cash:
            raise Reject("insufficient_cash", "amount above cash")
        if self.equity(acct) - amount < self.requirement(acct, "imr"):
            raise Reject("insufficient_margin", "E - amount < IM")
        acct.cash -= amount
        self.net_deposits -= amount
        return [{"type": "withdrawal", "seq": seq, "account": name, "amount": fmt(amount)}]

    def _do_fill(self, seq: int, obj: dict[str, Any]) -> list[dict[str, Any]]:
        fill_id = _id(obj, "fill_id")
        market_name = _id(obj, "market")
        price = _positive(obj, "price")
        qty = _positive(obj, "qty")
        buyer = _id(obj, "buyer")
        seller = _id(obj, "seller")
        buyer_fee = _optional_number(obj, "buyer_fee") or Fraction(0)
        seller_fee = _optional_number(obj, "seller_fee") or Fraction(0)
        _check_ts(obj)
        if market_name not in self.markets:
            raise Reject("unknown_market", market_name)
        if buyer in (FEE_POOL, BAD_DEBT) or seller in (FEE_POOL, BAD_DEBT):
            raise Reject("reserved_account", "fee-pool and bad-debt cannot trade")
        if buyer == seller:
            raise Reject("self_trade", buyer)
        if fill_id in self.fill_ids:
            raise Reject("duplicate_fill", fill_id)
        self.fill_ids.add(fill_id)
        self._trade(self._account(buyer), market_name, qty, price)
        self._account(buyer).cash -= qty * price + buyer_fee
        self._trade(self._account(seller), market_name, -qty, price)
        self._account(seller).cash += qty * price - seller_fee
        self.accounts[FEE_POOL].cash += buyer_fee + seller_fee
        market = self.markets[market_name]
        if not market.ticked:
            market.mark = price
        return self._settle(seq, market_name)

    def _trade(self, acct: Account, market: str, dq: Fraction, price: Fraction) -> None:
        old = acct.q(market)
        new = old + dq
        if new == 0:
            acct.k[market] = Fraction(0)
        elif old != 0 and _sign(new) != _sign(old):
            acct.k[market] = -new * price
        else:
            acct.k[market] = acct.k.get(market, Fraction(0)) - dq * price
        acct.pos[market] = new

    def _do_oracle(self, seq: int, obj: dict[str, Any]) -> list[dict[str, Any]]:
        name = _id(obj, "market")
        price = _positive(obj, "price")
        _check_ts(obj)
        market = self.markets.get(name)
        if market is None:
            raise Reject("unknown_market", name)
        g, m, h = market.guard, market.mark, market.held
        accept = (
            g is None
            or m is None
            or (h is not None and abs(price - h) <= g * h)
            or abs(price - m) <= g * m
        )
        if not accept:
            market.held = price
            return [{"type": "oracle_held", "seq": seq, "market": name, "price": fmt(price)}]
        market.mark = price
        market.ticked = True
        market.held = None
        return self._settle(seq, None)

    def _do_book(self, seq: int, obj: dict[str, Any]) -> list[dict[str, Any]]:
        name = _id(obj, "market")
        bids = _levels(obj, "bids")
        asks = _levels(obj, "asks")
        _check_ts(obj)
        market = self.markets.get(name)
        if market is None:
            raise Reject("unknown_market", name)
        market.bids = _aggregate(bids, best_high=True)
        market.asks = _aggregate(asks, best_high=False)
        return self._settle(seq, None)

    # --- liquidation -----------------------------------------------------------------------

    def _settle(self, seq: int, fill_market: str | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in self._users():
            acct = self.accounts[name]
            if not acct.holds() and acct.cash < 0:
                assert fill_market is not None, "only a fill can leave an account bankrupt"
                out += self._cover(seq, name, [fill_market])
        while True:
            worst: tuple[Fraction, str] | None = None
            for name in self._users():
                acct = self.accounts[name]
                assert acct.holds() or acct.cash >= 0, "bankrupt account after settlement"
                if not acct.holds():
                    continue
                e, mm = self.equity(acct), self.requirement(acct, "mmr")
                if e < mm and (worst is None or (e / mm, name) < worst):
                    worst = (e / mm, name)
            if worst is None:
                return out
            out += self._liquidate(seq, worst[1])

    def _liquidate(self, seq: int, name: str) -> list[dict[str, Any]]:
        acct = self.accounts[name]
        fund = self.accounts[FUND]
        held = acct.holds()
        closes = []
        for m in held:
            q = acct.pos[m]
            market = self.markets[m]
            proceeds = _close_out(market, q)
            acct.cash += proceeds
            acct.pos[m] = Fraction(0)
            acct.k[m] = Fraction(0)
            fund.cash -= proceeds
            fund.pos[m] = fund.q(m) + q  # the fund's K is never used (system account)
            fee = round8(market.liq_fee * abs(proceeds))
            closes.append((m, q, proceeds, market.mark, fee))
        left = max(Fraction(0), acct.cash)
        out: list[dict[str, Any]] = []
        for m, q, proceeds, mark, fee in closes:
            charged = min(fee, left)
            left -= charged
            acct.cash -= charged
            fund.cash += charged
            assert mark is not None
            out.append(
                {
                    "type": "liquidation",
                    "seq": seq,
                    "account": name,
                    "market": m,
                    "qty": fmt(q),
                    "proceeds": fmt(proceeds),
                    "mark": fmt(mark),
                    "fee": fmt(charged),
                }
            )
        if acct.cash >= 0:
            return out
        return out + self._cover(seq, name, held)

    def _cover(self, seq: int, name: str, held: list[str]) -> list[dict[str, Any]]:
        """Steps 3-5 of §4 for an account with no position and negative cash."""
        acct = self.accounts[name]
        fund = self.accounts[FUND]
        out: list[dict[str, Any]] = []
        deficit = -acct.cash
        available = max(Fraction(0), self.equity(fund))
        draw = min(deficit, available)
        if draw:
            fund.cash -= draw
            acct.cash += draw
            out.append({"type": "fund_draw", "seq": seq, "account": name, "amount": fmt(draw)})
        rest = deficit - draw
        if rest > 0:
            bases: dict[str, Fraction] = {}
            for other in self._users():
                if other == name:
                    continue
                o = self.accounts[other]
                base = sum(
                    (
                        max(Fraction(0), o.q(m) * self._mark(m) + o.k.get(m, Fraction(0)))
                        for m in held
                        if o.q(m) != 0
                    ),
                    Fraction(0),
                )
                if base > 0:
                    bases[other] = base
            total = sum(bases.values(), Fraction(0))
            taken = min(rest, total)
            parts = bases if taken == total else _largest_remainder(taken, bases)
            for other in sorted(parts):
                amount = parts[other]
                if amount:
                    self.accounts[other].cash -= amount
                    acct.cash += amount
                    out.append(
                        {
                            "type": "clawback",
                            "seq": seq,
                            "account": other,
                            "amount": fmt(amount),
                            "cause": name,
                        }
                    )
            bad = rest - taken
            if bad:
                self.accounts[BAD_DEBT].cash -= bad
                acct.cash += bad
                out.append({"type": "bad_debt", "seq": seq, "account": name, "amount": fmt(bad)})
        assert acct.cash == 0
        return out

    # --- checks and output -----------------------------------------------------------------

    def _check_invariants(self) -> None:
        cash = sum((a.cash for a in self.accounts.values()), Fraction(0))
        assert cash == self.net_deposits, "money created or lost"
        for m in self.markets:
            assert sum((a.q(m) for a in self.accounts.values()), Fraction(0)) == 0

    def state(self) -> dict[str, Any]:
        return {
            "accounts": {
                name: {
                    "cash": fmt(acct.cash),
                    "positions": {m: fmt(acct.pos[m]) for m in acct.holds()},
                }
                for name, acct in sorted(self.accounts.items())
            },
            "markets": {
                name: {"mark": None if market.mark is None else fmt(market.mark)}
                for name, market in sorted(self.markets.items())
            },
        }


def _aggregate(levels: list[tuple[Fraction, Fraction]], best_high: bool) -> list[list[Fraction]]:
    depth: dict[Fraction, Fraction] = {}
    for price, qty in levels:
        depth[price] = depth.get(price, Fraction(0)) + qty
    return [[p, depth[p]] for p in sorted(depth, reverse=best_high)]


def _close_out(market: Market, q: Fraction) -> Fraction:
    """Signed proceeds of closing position ``q`` against the book, consuming the levels used."""
    side = market.bids if q > 0 else market.asks
    need = abs(q)
    if not side:
        assert market.mark is not None
        return q * market.mark
    value = Fraction(0)
    worst = side[0][0]
    while need > 0 and side:
        price, avail = side[0]
        take = min(need, avail)
        value += take * price
        need -= take
        worst = price
        if take == avail:
            side.pop(0)
        else:
            side[0][1] = avail - take
    value += need * worst
    return value if q > 0 else -value


def _largest_remainder(total: Fraction, weights: dict[str, Fraction]) -> dict[str, Fraction]:
    """Split ``total`` pro rata to ``weights`` in units of 1e-16; ties to the smaller id."""
    units = total / UNIT
    assert units.denominator == 1
    weight_sum = sum(weights.values(), Fraction(0))
    floors: dict[str, int] = {}
    remainders: dict[str, Fraction] = {}
    for name, weight in weights.items():
        exact = units * weight / weight_sum
        floors[name] = exact.numerator // exact.denominator
        remainders[name] = exact - floors[name]
    spare = int(units) - sum(floors.values())
    for name in sorted(weights, key=lambda n: (-remainders[n], n))[:spare]:
        floors[name] += 1
    return {name: units_ * UNIT for name, units_ in floors.items()}


def reference_run(lines: list[bytes]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Replay input lines (already split on ``\\n``) as SPEC §8 does: events and final state."""
    ledger = Ledger()
    events: list[dict[str, Any]] = []
    seq = 0
    for raw in lines:
        if all(b in _BLANK for b in raw):
            continue
        seq += 1
        events += ledger.apply(seq, raw)
    return events, ledger.state()
