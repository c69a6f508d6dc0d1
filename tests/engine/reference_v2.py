"""Reference model of rules version 2 (SPEC §9), used only by tests.

Written from §9's text on top of the version-1 reference model (``reference``): exact
``Fraction`` arithmetic, full scans, no index, no shortcuts. The production core
(``clearing/engine/waterfall_v2.py``) is compared with it byte for byte.

Readings of §9 (the same list is in docs/clearing-rules.md):

B1. A tick updates the volatility estimate whenever the market had a mark before it, even
    a mark set by a fill (only "the tick that gives a market its first mark" is excluded).
B2. A bankrupt account is settled before the first step only: no step, ADL or clawback
    under version 2 can leave an account flat with negative cash, so "before each step"
    finds nothing new.
B3. ``loss_policy`` must be a JSON string, exactly ``"clawback"`` or ``"adl"``.
B4. ``vol_tiers`` is a list of ``[sigma, share]`` pairs of wire numbers; an empty list is
    no tiers.
B5. Funding with ``rate`` 0, or on a market without holders, is accepted and emits a
    ``funding`` event with ``paid`` 0.
B6. The ``fund_fee`` field is on every version-2 ``liquidation`` event (0 when nothing was
    charged).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from tests.engine.reference import (
    _BLANK,
    BAD_DEBT,
    FEE_POOL,
    FUND,
    UNIT,
    Ledger,
    Market,
    Reject,
    _bad,
    _check_ts,
    _close_out,
    _id,
    _largest_remainder,
    _number,
    _wire_number,
    decode,
    fmt,
    round8,
)

TYPES_V2 = ("market", "deposit", "withdraw", "fill", "oracle", "book", "funding")
ZERO = Fraction(0)
ONE = Fraction(1)


def round16(value: Fraction) -> Fraction:
    """Round to 16 decimal places, half to even (any sign)."""
    scaled = value / UNIT
    floor = scaled.numerator // scaled.denominator
    rest = scaled - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
        floor += 1
    return floor * UNIT


def floor16(value: Fraction) -> Fraction:
    scaled = value / UNIT
    return (scaled.numerator // scaled.denominator) * UNIT


def ceil8(value: Fraction) -> Fraction:
    scaled = value * 10**8
    return Fraction(-(-scaled.numerator // scaled.denominator), 10**8)


def _ratio(obj: dict[str, Any], name: str, default: Fraction, low_open: bool) -> Fraction:
    if name not in obj:
        return default
    value = _number(obj, name)
    if value > 1 or value < 0 or (low_open and value == 0):
        raise _bad(name, "out of range")
    return value


def _tiers(obj: dict[str, Any]) -> list[tuple[Fraction, Fraction]]:
    if "vol_tiers" not in obj:
        return []
    value = obj["vol_tiers"]
    if not isinstance(value, list):
        raise _bad("vol_tiers", "must be a list")
    tiers: list[tuple[Fraction, Fraction]] = []
    for tier in value:
        if not isinstance(tier, list) or len(tier) != 2:
            raise _bad("vol_tiers", "tiers are [sigma, share]")
        sigma = _wire_number(tier[0], "vol_tiers")
        share = _wire_number(tier[1], "vol_tiers")
        if sigma <= 0 or not 0 <= share <= 1:
            raise _bad("vol_tiers", "need sigma > 0 and 0 <= share <= 1")
        if tiers and sigma <= tiers[-1][0]:
            raise _bad("vol_tiers", "sigmas must ascend strictly")
        tiers.append((sigma, share))
    return tiers


class LedgerV2(Ledger):
    """The version-1 reference ledger with SPEC §9's changes."""

    def __init__(self) -> None:
        super().__init__()
        # Version-2 market parameters and volatility, by market (defaults from §9's table).
        self.v2: dict[str, dict[str, Any]] = {}

    def apply(self, seq: int, raw: bytes) -> list[dict[str, Any]]:
        try:
            obj = decode(raw)
            kind = obj.get("type")
            if "type" not in obj or not isinstance(kind, str) or kind not in TYPES_V2:
                raise Reject("unknown_type", f"type {kind!r}")
            out: list[dict[str, Any]] = getattr(self, f"_do_{kind}")(seq, obj)
        except Reject as rej:
            return [{"type": "reject", "seq": seq, "reason": rej.reason, "detail": rej.detail}]
        self._check_invariants()
        return out

    # --- inputs ----------------------------------------------------------------------------

    def _do_market(self, seq: int, obj: dict[str, Any]) -> list[dict[str, Any]]:
        # Validate every field before the version-1 handler changes anything.
        params = {
            "liq_step": _ratio(obj, "liq_step", ONE, low_open=True),
            "fund_share": _ratio(obj, "fund_share", ONE, low_open=False),
            "vol_lambda": _ratio(obj, "vol_lambda", Fraction(5, 100), low_open=True),
            "tiers": _tiers(obj),
            "adl": False,
        }
        if "loss_policy" in obj:
            policy = obj["loss_policy"]
            if policy not in ("clawback", "adl") or not isinstance(policy, str):
                raise _bad("loss_policy", "must be clawback or adl")
            params["adl"] = policy == "adl"
        name = obj.get("market")
        # Run version 1's checks without settling, then set §9's fields, then settle.
        settle = self._settle
        self._settle = lambda seq, fill_market: []  # type: ignore[method-assign]
        try:
            super()._do_market(seq, obj)
        finally:
            self._settle = settle  # type: ignore[method-assign]
        assert isinstance(name, str)
        params["vol"] = self.v2.get(name, {}).get("vol", ZERO)
        self.v2[name] = params
        return self._settle(seq, None)

    def _do_oracle(self, seq: int, obj: dict[str, Any]) -> list[dict[str, Any]]:
        name = obj.get("market")
        market = self.markets.get(name) if isinstance(name, str) else None
        before = market.mark if market is not None else None
        settle = self._settle
        self._settle = lambda seq, fill_market: []  # type: ignore[method-assign]
        try:
            out = super()._do_oracle(seq, obj)
        finally:
            self._settle = settle  # type: ignore[method-assign]
        if out:  # held
            return out
        assert market is not None and isinstance(name, str)
        if before is not None:
            p, m, params = market.mark, before, self.v2[name]
            assert p is not None
            v = params["vol"]
            params["vol"] = round16(v + params["vol_lambda"] * ((p - m) ** 2 / m**2 - v))
        return self._settle(seq, None)

    def _do_funding(self, seq: int, obj: dict[str, Any]) -> list[dict[str, Any]]:
        name = _id(obj, "market")
        rate = _number(obj, "rate")
        _check_ts(obj)
        if not -1 < rate < 1:
            raise _bad("rate", "need |rate| < 1")
        if name not in self.markets:
            raise Reject("unknown_market", name)
        mark = self.markets[name].mark
        paid = total = ZERO
        for acct in self.accounts.values():
            q = acct.q(name)
            if q == 0:
                continue
            assert mark is not None
            p = round16(q * mark * rate)
            acct.cash -= p
            total += p
            paid += max(ZERO, p)
        self.accounts[FEE_POOL].cash += total
        event = {"type": "funding", "seq": seq, "market": name, "rate": fmt(rate)}
        return [{**event, "paid": fmt(paid)}, *self._settle(seq, None)]

    # --- liquidation -----------------------------------------------------------------------

    def _settle(self, seq: int, fill_market: str | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        stepped: set[str] = set()
        while True:
            for name in self._users():
                acct = self.accounts[name]
                if not acct.holds() and acct.cash < 0:
                    assert fill_market is not None, "only a fill can leave an account bankrupt"
                    out += self._cover_v2(seq, name, [(fill_market, ZERO)], bankrupt=True)
            worst: tuple[Fraction, str] | None = None
            for name in self._users():
                acct = self.accounts[name]
                if not acct.holds():
                    continue
                e, mm = self.equity(acct), self.requirement(acct, "mmr")
                if e < mm and (worst is None or (e / mm, name) < worst):
                    worst = (e / mm, name)
            if worst is None:
                return out
            name = worst[1]
            out += self._step(seq, name, name in stepped, stepped)

    def _step(
        self, seq: int, name: str, stepped_before: bool, stepped: set[str]
    ) -> list[dict[str, Any]]:
        acct = self.accounts[name]
        fund = self.accounts[FUND]
        held = acct.holds()
        e, mm = self.equity(acct), self.requirement(acct, "mmr")
        full = stepped_before or 2 * e < mm or all(self.v2[m]["liq_step"] == 1 for m in held)
        if not full:
            stepped.add(name)
        closes = []
        for m in held:
            market = self.markets[m]
            q = acct.pos[m]
            x = abs(q) if full else min(abs(q), ceil8(abs(q) * self.v2[m]["liq_step"]))
            part = x if q > 0 else -x
            proceeds = _close_out(market, part)
            acct.cash += proceeds
            fund.cash -= proceeds
            acct.pos[m] = q - part
            acct.k[m] = ZERO if acct.pos[m] == 0 else acct.k.get(m, ZERO) + proceeds
            fund.pos[m] = fund.q(m) + part
            closes.append((m, part, proceeds, market.mark, round8(market.liq_fee * abs(proceeds))))
        left = max(ZERO, self.equity(acct))
        out: list[dict[str, Any]] = []
        for m, part, proceeds, mark, fee in closes:
            charged = min(fee, left)
            left -= charged
            pool = round16(charged * (1 - self._share(m)))
            acct.cash -= charged
            self.accounts[FEE_POOL].cash += pool
            fund.cash += charged - pool
            assert mark is not None
            out.append(
                {
                    "type": "liquidation",
                    "seq": seq,
                    "account": name,
                    "market": m,
                    "qty": fmt(part),
                    "proceeds": fmt(proceeds),
                    "mark": fmt(mark),
                    "fee": fmt(charged),
                    "fund_fee": fmt(charged - pool),
                }
            )
        if acct.holds() or acct.cash >= 0:
            return out
        return out + self._cover_v2(seq, name, [(m, part) for m, part, *_ in closes], False)

    def _share(self, market: str) -> Fraction:
        params = self.v2[market]
        share = params["fund_share"]
        for sigma, tier_share in params["tiers"]:
            if sigma * sigma <= params["vol"]:
                share = tier_share
        return share

    def _cover_v2(
        self, seq: int, name: str, taken: list[tuple[str, Fraction]], bankrupt: bool
    ) -> list[dict[str, Any]]:
        acct = self.accounts[name]
        fund = self.accounts[FUND]
        out: list[dict[str, Any]] = []
        deficit = -acct.cash
        draw = min(deficit, max(ZERO, self.equity(fund)))
        if draw:
            fund.cash -= draw
            acct.cash += draw
            out.append({"type": "fund_draw", "seq": seq, "account": name, "amount": fmt(draw)})
        rest = deficit - draw
        if rest == 0:
            return out
        claw = [m for m, q in taken if bankrupt or not self.v2[m]["adl"]]
        if not bankrupt:
            for m, q in taken:
                if self.v2[m]["adl"] and rest > 0:
                    rest = self._adl(seq, name, m, q, rest, out)
        if rest > 0 and claw:
            rest -= self._clawback_v2(seq, name, claw, rest, out)
        if rest:
            self.accounts[BAD_DEBT].cash -= rest
            acct.cash += rest
            out.append({"type": "bad_debt", "seq": seq, "account": name, "amount": fmt(rest)})
        assert acct.cash == 0
        return out

    def _adl(
        self, seq: int, name: str, m: str, big_q: Fraction, rest: Fraction, out: list[Any]
    ) -> Fraction:
        mark = self._mark(m)
        fund = self.accounts[FUND]
        left, rest_m = abs(big_q), rest
        ranked = []
        for other in self._users():
            o = self.accounts[other]
            q = o.q(m)
            if other == name or q == 0 or (q > 0) == (big_q > 0):
                continue
            e, mm = self.equity(o), self.requirement(o, "mmr")
            u = q * mark + o.k.get(m, ZERO)
            if e > mm and u > 0:
                ranked.append((-u / e, other, u, e, mm))
        for _, other, u, e, mm in sorted(ranked):
            if left == 0 or rest == 0:
                break
            o = self.accounts[other]
            q = o.q(m)
            x = min(abs(q), left)
            cap = floor16(min(u, e - mm) * x / abs(q))
            share = rest if x == left else floor16(x * rest_m / abs(big_q))
            c = min(rest, cap, share)
            dq = x if q < 0 else -x
            self._trade(o, m, dq, mark)
            o.cash -= dq * mark
            fund.pos[m] = fund.q(m) - dq
            fund.cash += dq * mark
            o.k[m] = ZERO if o.pos[m] == 0 else o.k[m] - c
            o.cash -= c
            self.accounts[name].cash += c
            left -= x
            rest -= c
            out.append(
                {
                    "type": "adl",
                    "seq": seq,
                    "account": other,
                    "market": m,
                    "qty": fmt(-dq),
                    "amount": fmt(c),
                    "cause": name,
                }
            )
        return rest

    def _clawback_v2(
        self, seq: int, name: str, markets: list[str], rest: Fraction, out: list[Any]
    ) -> Fraction:
        bases: dict[str, Fraction] = {}
        profits: dict[str, dict[str, Fraction]] = {}
        for other in self._users():
            if other == name:
                continue
            o = self.accounts[other]
            by_market = {}
            for m in markets:
                if o.q(m) != 0:
                    profit = o.q(m) * self._mark(m) + o.k.get(m, ZERO)
                    if profit > 0:
                        by_market[m] = profit
            room = max(ZERO, floor16(self.equity(o) - self.requirement(o, "mmr")))
            base = min(sum(by_market.values(), ZERO), room)
            if base > 0:
                bases[other] = base
                profits[other] = by_market
        total = sum(bases.values(), ZERO)
        taken = min(rest, total)
        parts = bases if taken == total else _largest_remainder(taken, bases)
        for other in sorted(parts):
            amount = parts[other]
            if not amount:
                continue
            o = self.accounts[other]
            for m, part in _largest_remainder(amount, profits[other]).items():
                o.k[m] -= part
            o.cash -= amount
            self.accounts[name].cash += amount
            out.append(
                {"type": "clawback", "seq": seq, "account": other, "amount": fmt(amount)}
                | {"cause": name}
            )
        return taken


def reference_run_v2(lines: list[bytes]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``reference.reference_run`` under rules version 2."""
    ledger = LedgerV2()
    events: list[dict[str, Any]] = []
    seq = 0
    for raw in lines:
        if all(b in _BLANK for b in raw):
            continue
        seq += 1
        events += ledger.apply(seq, raw)
    return events, ledger.state()


__all__ = ["LedgerV2", "Market", "reference_run_v2"]
