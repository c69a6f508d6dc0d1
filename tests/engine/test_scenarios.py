"""Hand-computed scenario tests for the clearing engine (SPEC.md).

Every expected event and final state below was worked out with pencil and paper from the
SPEC text; the arithmetic is in the comments so a reviewer can re-check it. Nothing here was
derived by running the engine.

Notation in comments: C = cash, q = position, K = the position's fill cash flow (SPEC 2),
m = mark, E = C + sum(q*m), MM / IM = maintenance / initial requirement, A = fund equity,
D = deficit, R = rest after the fund draw, S = total clawback base, T = min(R, S).

Output events are compared on the fields the SPEC fixes (SPEC 6): `type`, `seq` and the
type's listed fields; extra fields are the implementer's choice and are ignored. Rejects are
compared on type/seq/reason only (`detail` is free text).

Resolved ambiguities (see the test docstrings):
- A partly used book level keeps its unused quantity; only the quantity taken is consumed.
- `fund_draw.account` and `bad_debt.account` name the liquidated / bankrupt account.
- The three system accounts always appear in the state; `positions` is `{}` when flat.
- Leading zeros (`"007.50"`) match the SPEC's number pattern and are accepted; 1e15 exactly
  is accepted ("above 1e15" is invalid); `type` is case-sensitive.
- `fee-pool` may go negative through rebates (fills are never refused).
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

from clearing.engine import run_jsonl
from clearing.engine.native import native_available

# Both engine cores must reproduce every hand-worked scenario (CI builds the native one).
CORES = ("python", "native") if native_available() or os.environ.get("CI") else ("python",)

Num = str | int
Rec = dict[str, Any]
Line = Rec | str | bytes

SYSTEM_ACCOUNTS = ("insurance-fund", "fee-pool", "bad-debt")

# The fields SPEC 6 fixes for each output type (besides `type` and `seq`).
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "liquidation": ("account", "market", "qty", "proceeds", "mark", "fee"),
    "fund_draw": ("account", "amount"),
    "clawback": ("account", "amount", "cause"),
    "bad_debt": ("account", "amount"),
    "withdrawal": ("account", "amount"),
    "oracle_held": ("market", "price"),
    "reject": ("reason",),
}


# --------------------------------------------------------------------------- input builders


def market(mid: str, imr: Num, mmr: Num, liq_fee: Num, max_move: Num | None = None) -> Rec:
    rec: Rec = {"type": "market", "market": mid, "imr": imr, "mmr": mmr, "liq_fee": liq_fee}
    if max_move is not None:
        rec["max_oracle_move"] = max_move
    return rec


def deposit(account: str, amount: Any) -> Rec:
    return {"type": "deposit", "account": account, "amount": amount}


def withdraw(account: str, amount: Any) -> Rec:
    return {"type": "withdraw", "account": account, "amount": amount}


def fill(
    fill_id: str,
    mkt: str,
    price: Num,
    qty: Any,
    buyer: str,
    seller: str,
    buyer_fee: Any = None,
    seller_fee: Any = None,
) -> Rec:
    rec: Rec = {
        "type": "fill",
        "fill_id": fill_id,
        "market": mkt,
        "price": price,
        "qty": qty,
        "buyer": buyer,
        "seller": seller,
    }
    if buyer_fee is not None:
        rec["buyer_fee"] = buyer_fee
    if seller_fee is not None:
        rec["seller_fee"] = seller_fee
    return rec


def oracle(mkt: str, price: Any) -> Rec:
    return {"type": "oracle", "market": mkt, "price": price}


def book(mkt: str, bids: Any = None, asks: Any = None) -> Rec:
    rec: Rec = {"type": "book", "market": mkt}
    if bids is not None:
        rec["bids"] = bids
    if asks is not None:
        rec["asks"] = asks
    return rec


def jsonl(*lines: Line) -> bytes:
    """One input per line, `\\n`-terminated; dicts are JSON-encoded, str/bytes kept raw."""
    out: list[bytes] = []
    for line in lines:
        if isinstance(line, dict):
            out.append(json.dumps(line).encode())
        elif isinstance(line, str):
            out.append(line.encode())
        else:
            out.append(line)
    return b"".join(chunk + b"\n" for chunk in out)


# ------------------------------------------------------------------ expected-output builders


def liq(seq: int, account: str, mkt: str, qty: str, proceeds: str, mark: str, fee: str) -> Rec:
    return {
        "type": "liquidation",
        "seq": seq,
        "account": account,
        "market": mkt,
        "qty": qty,
        "proceeds": proceeds,
        "mark": mark,
        "fee": fee,
    }


def draw(seq: int, account: str, amount: str) -> Rec:
    return {"type": "fund_draw", "seq": seq, "account": account, "amount": amount}


def claw(seq: int, account: str, amount: str, cause: str) -> Rec:
    return {"type": "clawback", "seq": seq, "account": account, "amount": amount, "cause": cause}


def bad(seq: int, account: str, amount: str) -> Rec:
    return {"type": "bad_debt", "seq": seq, "account": account, "amount": amount}


def wdr(seq: int, account: str, amount: str) -> Rec:
    return {"type": "withdrawal", "seq": seq, "account": account, "amount": amount}


def held(seq: int, mkt: str, price: str) -> Rec:
    return {"type": "oracle_held", "seq": seq, "market": mkt, "price": price}


def rej(seq: int, reason: str) -> Rec:
    return {"type": "reject", "seq": seq, "reason": reason}


def acct(cash: str, positions: dict[str, str] | None = None) -> Rec:
    return {"cash": cash, "positions": dict(positions or {})}


def state(accounts: dict[str, Rec], marks: dict[str, str | None]) -> Rec:
    """Expected SPEC 8 state; system accounts default to cash "0", no positions."""
    all_accounts: dict[str, Rec] = {name: acct("0") for name in SYSTEM_ACCOUNTS}
    all_accounts.update(accounts)
    return {"accounts": all_accounts, "markets": {m: {"mark": v} for m, v in marks.items()}}


# ------------------------------------------------------------------------------- checking


def project(event: Rec) -> Rec:
    """Keep `type`, `seq` and the SPEC 6 fields of an output event."""
    keys = ("type", "seq", *EVENT_FIELDS.get(event.get("type", ""), tuple(event)))
    return {k: event.get(k, "<missing>") for k in dict.fromkeys(keys)}


def net_deposits(lines: list[Line], events: list[Rec]) -> Decimal:
    """Accepted deposits minus accepted withdrawals (lines map 1:1 to seq numbers)."""
    rejected = {e["seq"] for e in events if e["type"] == "reject"}
    net = Decimal(0)
    for seq, line in enumerate(lines, start=1):
        if isinstance(line, dict) and line.get("type") == "deposit" and seq not in rejected:
            net += Decimal(str(line["amount"]))
    for e in events:
        if e["type"] == "withdrawal":
            net -= Decimal(e["amount"])
    return net


def assert_invariants(st: Rec, net: Decimal) -> None:
    """SPEC 2 invariants: per-market positions sum to 0; all cash sums to net deposits."""
    accounts: dict[str, Rec] = st["accounts"]
    for name in SYSTEM_ACCOUNTS:
        assert name in accounts, f"system account {name} missing from state"
    total_cash = sum((Decimal(a["cash"]) for a in accounts.values()), Decimal(0))
    assert total_cash == net, f"cash sums to {total_cash}, deposits - withdrawals = {net}"
    per_market: dict[str, Decimal] = {}
    for a in accounts.values():
        for mkt, qty in a["positions"].items():
            assert Decimal(qty) != 0, "positions of 0 must be left out"
            per_market[mkt] = per_market.get(mkt, Decimal(0)) + Decimal(qty)
    assert all(v == 0 for v in per_market.values()), f"positions do not net out: {per_market}"


def check_raw(data: bytes, expected_events: list[Rec], expected_state: Rec, net: Decimal) -> None:
    # The expected state must itself satisfy the invariants: a check on the hand arithmetic.
    assert_invariants(expected_state, net)
    for core in CORES:
        events, final = run_jsonl(data, core)
        assert [project(e) for e in events] == expected_events, core
        assert_invariants(final, net)
        assert final == expected_state, core


def check(lines: list[Line], expected_events: list[Rec], expected_state: Rec) -> None:
    check_raw(jsonl(*lines), expected_events, expected_state, net_deposits(lines, expected_events))


# ============================================================================ 1. SPEC 7


def test_spec_worked_example() -> None:
    lines: list[Line] = [
        market("BTC-PERP", "0.1", "0.05", "0.01"),  # 1
        deposit("alice", "100"),  # 2
        deposit("bob", "1000"),  # 3
        deposit("insurance-fund", "20"),  # 4
        oracle("BTC-PERP", "100"),  # 5
        # 6: alice C = 100 - 1000 = -900, q = 10, E = -900 + 1000 = 100, MM = 50, IM = 100.
        #    bob C = 1000 + 1000 = 2000, q = -10, K = 1000.
        fill("f1", "BTC-PERP", "100", "10", "alice", "bob"),
        # 7: m = 85. alice E = -900 + 850 = -50 < MM = 10*85*0.05 = 42.5.
        #    Close-out at the mark (no book): proceeds 850, C = -50.
        #    fee round8(0.01*850) = 8.5, c = max(0, -50) = 0 -> charged 0.
        #    fund C = 20 - 850 = -830, q = 10: A = -830 + 850 = 20; draw min(50, 20) = 20.
        #    R = 30; bob base = -10*85 + 1000 = 150; T = 30 -> clawback bob 30.
        oracle("BTC-PERP", "85"),
    ]
    expected = [
        liq(7, "alice", "BTC-PERP", "10", "850", "85", "0"),
        draw(7, "alice", "20"),
        claw(7, "bob", "30", "alice"),
    ]
    # alice 0; bob 2000 - 30 = 1970; fund -830 - 20 = -850, q 10. 0 + 1970 - 850 = 1120.
    final = state(
        {
            "alice": acct("0"),
            "bob": acct("1970", {"BTC-PERP": "-10"}),
            "insurance-fund": acct("-850", {"BTC-PERP": "10"}),
        },
        {"BTC-PERP": "85"},
    )
    check(lines, expected, final)


# ======================================================================== 2. book walk


def test_book_walk_consumes_levels_across_liquidations() -> None:
    """Levels used are gone until the next `book`; an exhausted side is priced at the mark.

    Unsorted levels and a repeated price (89 twice -> 89 x 2) check the book is normalised.
    """
    lines: list[Line] = [
        market("ETH", "0.1", "0.05", "0.01"),  # 1
        deposit("insurance-fund", "10000"),  # 2
        deposit("mm", "100000"),  # 3
        deposit("a1", "100"),  # 4
        deposit("a2", "100"),  # 5
        deposit("a3", "100"),  # 6
        deposit("a4", "100"),  # 7
        deposit("a5", "100"),  # 8
        oracle("ETH", "100"),  # 9
        # 10, 11: a1, a2 each C = -900, q = 10, E = 100 >= MM 50. mm C 102000, q -20.
        fill("f1", "ETH", "100", "10", "a1", "mm"),
        fill("f2", "ETH", "100", "10", "a2", "mm"),
        # 12: a3 short: C = 1100, q = -10, E = 100 >= 50. mm C 101000, q -10.
        fill("f3", "ETH", "100", "10", "mm", "a3"),
        # 13: bids 89 x 2, 88 x 4, 87 x 3 (depth 9); asks 110 x 2, 111 x 3, 112 x 100.
        book(
            "ETH",
            bids=[["88", 4], ["89", 1], ["87", 3], ["89", "1"]],
            asks=[["111", 3], ["110", 2], ["112", 100]],
        ),
        # 14: m = 90. a1, a2: E = -900 + 900 = 0 < MM 45, E/MM = 0 both -> id order a1, a2.
        #   a3 E = 1100 - 900 = 200 >= 45; mm E = 101000 - 900 = 100100.
        #   a1 sells 10: 89*2 + 88*4 + 87*3 = 178 + 352 + 261 = 791 for 9, the 10th beyond the
        #   depth at the worst level walked, 87 -> proceeds 878. C = -900 + 878 = -22.
        #   fee round8(8.78), c = 0 -> 0. fund C = 10000 - 878 = 9122, q 10,
        #   A = 9122 + 10*90 = 10022 -> draw 22. a1 C = 0, fund C = 9100.
        #   a2: the bid side has no level left -> 10 * 90 = 900. C = 0 >= 0 -> keeps it, fee 0
        #   (c = 0). fund C = 8200, q 20.
        oracle("ETH", "90"),
        # 15: a4 C = 100 - 450 = -350, q 5, E = 100 >= 22.5. mm C 101450, q -15.
        fill("f4", "ETH", "90", "5", "a4", "mm"),
        # 16: m = 70, a later input, no new book: bids still empty.
        #   a4 E = -350 + 350 = 0 < 17.5. Proceeds 5*70 = 350 (mark). C = 0, fee 0, keeps.
        #   fund C = 8200 - 350 = 7850, q 25.
        #   a3 E = 1100 - 700 = 400 >= 35; mm E = 101450 - 1050 = 100400.
        oracle("ETH", "70"),
        # 17: a5 C = 100 - 350 = -250, q 5, E = 100 >= 17.5. mm C 101800, q -20.
        fill("f5", "ETH", "70", "5", "a5", "mm"),
        # 18: a new book restores depth.
        book("ETH", bids=[["69", 2], ["68", 10]], asks=[["111", 3], ["110", 2], ["112", 100]]),
        # 19: m = 50. a5 E = -250 + 250 = 0 < 12.5. Sells 69*2 + 68*3 = 138 + 204 = 342.
        #   C = -250 + 342 = 92 >= 0; fee round8(0.01*342) = 3.42 <= c = 92 -> charged 3.42.
        #   C = 88.58: keeps its cash. fund C = 7850 - 342 + 3.42 = 7511.42, q 30.
        #   a3 E = 1100 - 500 = 600 >= 25.
        oracle("ETH", "50"),
        # 20: m = 110. a3 E = 1100 - 1100 = 0 < MM 55. Buys 10 from the asks, best first:
        #   110*2 + 111*3 + 112*5 = 220 + 333 + 560 = 1113 -> proceeds -1113, C = -13.
        #   fee 0 (c = 0). fund C = 7511.42 + 1113 = 8624.42, q 30 - 10 = 20,
        #   A = 8624.42 + 20*110 = 10824.42 -> draw 13. fund C = 8611.42.
        #   mm E = 101800 - 2200 = 99600 >= MM 110.
        oracle("ETH", "110"),
    ]
    expected = [
        liq(14, "a1", "ETH", "10", "878", "90", "0"),
        draw(14, "a1", "22"),
        liq(14, "a2", "ETH", "10", "900", "90", "0"),
        liq(16, "a4", "ETH", "5", "350", "70", "0"),
        liq(19, "a5", "ETH", "5", "342", "50", "3.42"),
        liq(20, "a3", "ETH", "-10", "-1113", "110", "0"),
        draw(20, "a3", "13"),
    ]
    # Cash: 88.58 + 101800 + 8611.42 = 110500 = 10000 + 100000 + 5*100.
    final = state(
        {
            "a1": acct("0"),
            "a2": acct("0"),
            "a3": acct("0"),
            "a4": acct("0"),
            "a5": acct("88.58"),
            "mm": acct("101800", {"ETH": "-20"}),
            "insurance-fund": acct("8611.42", {"ETH": "20"}),
        },
        {"ETH": "110"},
    )
    check(lines, expected, final)


def test_book_partly_used_level_keeps_its_remainder() -> None:
    """Ambiguity: "the levels used are consumed". Resolved as: the quantity taken is consumed,
    the untouched part of a partly used level stays (as in any order book).

    Also: the smaller E/MM goes first even though its id is larger.
    """
    lines: list[Line] = [
        market("X", "0.1", "0.05", "0"),  # 1
        deposit("insurance-fund", "1000"),  # 2
        deposit("mm", "10000"),  # 3
        deposit("a", "31"),  # 4
        deposit("b", "30"),  # 5
        oracle("X", "100"),  # 6
        fill("x1", "X", "100", "3", "a", "mm"),  # 7: a C = -269, E = 31 >= 15
        fill("x2", "X", "100", "3", "b", "mm"),  # 8: b C = -270, E = 30 >= 15
        book("X", bids=[["100", 5], ["90", 10]]),  # 9
        # 10: m = 89, MM = 3*89*0.05 = 13.35. a E = -269 + 267 = -2, b E = -270 + 267 = -3.
        #   b has the smaller E/MM -> first. b sells 3 @ 100 = 300 (100 level: 5 -> 2 left).
        #   C = 30, fee 0 (liq_fee 0), keeps. a sells 2 @ 100 + 1 @ 90 = 290, C = 21, keeps.
        #   (Whole-level consumption would give a 3 @ 90 = 270, C = 1.)
        #   fund C = 1000 - 300 - 290 = 410, q 6. mm C = 10000 + 600 = 10600, q -6.
        oracle("X", "89"),
    ]
    expected = [
        liq(10, "b", "X", "3", "300", "89", "0"),
        liq(10, "a", "X", "3", "290", "89", "0"),
    ]
    final = state(
        {
            "a": acct("21"),
            "b": acct("30"),
            "mm": acct("10600", {"X": "-6"}),
            "insurance-fund": acct("410", {"X": "6"}),
        },
        {"X": "89"},
    )
    check(lines, expected, final)


def test_liquidation_fee_rounds_half_even() -> None:
    lines: list[Line] = [
        market("R", "0.1", "0.05", "0.05"),  # 1
        deposit("r1", "10"),  # 2
        deposit("r2", "10"),  # 3
        deposit("mm", "1000"),  # 4
        oracle("R", "100"),  # 5
        fill("x1", "R", "100", "1", "r1", "mm"),  # 6: r1 C = -90, E = 10 >= 5
        fill("x2", "R", "100", "1", "r2", "mm"),  # 7: r2 C = -90, E = 10 >= 5
        book("R", bids=[["100.0000001", 1], ["100.0000003", 1]]),  # 8
        # 9: m = 90, both E = -90 + 90 = 0 < 4.5, E/MM tie -> r1 first.
        #   r1 sells @ 100.0000003: C = 10.0000003. fee = 0.05 * 100.0000003 = 5.000000015
        #   -> half-even at 8 dp: kept digit 1 is odd -> 5.00000002. C = 5.00000028.
        #   r2 sells @ 100.0000001: C = 10.0000001. fee = 5.000000005 -> kept digit 0 even ->
        #   5.00000000. C = 5.0000001.
        #   fund C = -100.0000003 + 5.00000002 - 100.0000001 + 5 = -190.00000038, q 2.
        oracle("R", "90"),
    ]
    expected = [
        liq(9, "r1", "R", "1", "100.0000003", "90", "5.00000002"),
        liq(9, "r2", "R", "1", "100.0000001", "90", "5"),
    ]
    final = state(
        {
            "r1": acct("5.00000028"),
            "r2": acct("5.0000001"),
            "mm": acct("1200", {"R": "-2"}),
            "insurance-fund": acct("-190.00000038", {"R": "2"}),
        },
        {"R": "90"},
    )
    check(lines, expected, final)


# ================================================================ 3. multi-market close-out


def test_multi_market_close_out_fees_capped_by_leftover_cash() -> None:
    lines: list[Line] = [
        market("BTC", "0.1", "0.05", "0.005"),  # 1
        market("ETH", "0.1", "0.05", "0.01"),  # 2
        market("SOL", "0.2", "0.1", "0.015"),  # 3
        deposit("insurance-fund", "500"),  # 4
        deposit("mm", "100000"),  # 5
        deposit("t", "150"),  # 6
        oracle("SOL", "10"),  # 7
        oracle("BTC", "1000"),  # 8
        oracle("ETH", "100"),  # 9
        # Positions opened SOL, BTC, ETH; close-outs must still come in id order.
        fill("s1", "SOL", "10", "20", "t", "mm"),  # 10: t C -50, E 150 >= MM 20
        fill("b1", "BTC", "1000", "1", "t", "mm"),  # 11: t C -1050, E 150 >= MM 70
        fill("e1", "ETH", "100", "10", "mm", "t"),  # 12: t C -50, E 150 >= MM 120
        # 13: m_BTC = 860.000001. t E = -50 + 860.000001 - 1000 + 200 = 10.000001;
        #   MM = 0.05*860.000001 + 0.05*1000 + 0.1*200 = 43.00000005 + 50 + 20 = 113.00000005
        #   E < MM -> liquidate (cross margin: every position is closed).
        #   Close-outs at the marks (no books): BTC +860.000001, ETH -1000, SOL +200.
        #   C = -50 + 860.000001 - 1000 + 200 = 10.000001 = c.
        #   BTC fee = 0.005*860.000001 = 4.300000005 -> half-even -> 4.3: paid, c -> 5.700001.
        #   ETH fee = 0.01*1000 = 10 -> min(10, 5.700001) = 5.700001 paid, c -> 0.
        #   SOL fee = 0.015*200 = 3 -> 0 paid. C = 0 >= 0: keeps its cash, ends.
        #   fund C = 500 - 860.000001 + 1000 - 200 + 4.3 + 5.700001 = 450.
        oracle("BTC", "860.000001"),
    ]
    expected = [
        liq(13, "t", "BTC", "1", "860.000001", "860.000001", "4.3"),
        liq(13, "t", "ETH", "-10", "-1000", "100", "5.700001"),
        liq(13, "t", "SOL", "20", "200", "10", "0"),
    ]
    # mm C = 100000 + 200 + 1000 - 1000 = 100200. Cash 100200 + 450 = 100650 = deposits.
    final = state(
        {
            "t": acct("0"),
            "mm": acct("100200", {"BTC": "-1", "ETH": "10", "SOL": "-20"}),
            "insurance-fund": acct("450", {"BTC": "1", "ETH": "-10", "SOL": "20"}),
        },
        {"BTC": "860.000001", "ETH": "100", "SOL": "10"},
    )
    check(lines, expected, final)


def test_clawback_base_sums_per_market_over_markets_the_bankrupt_held() -> None:
    """Base = sum over the bankrupt's markets of max(0, q*m + K): the max is per market, and a
    profit in a market the bankrupt never held (A3) is not reclaimed."""
    lines: list[Line] = [
        market("A1", "0.1", "0.05", "0"),  # 1
        market("A2", "0.1", "0.05", "0"),  # 2
        market("A3", "0.1", "0.05", "0"),  # 3
        deposit("bust", "20"),  # 4
        deposit("h1", "1000"),  # 5
        deposit("h2", "1000"),  # 6
        deposit("h3", "1000"),  # 7
        deposit("mm", "1000"),  # 8
        oracle("A1", "100"),  # 9
        oracle("A2", "100"),  # 10
        oracle("A3", "100"),  # 11
        fill("c1", "A1", "100", "1", "bust", "h1"),  # 12: h1 A1 -1, K 100; bust C -80, E 20
        fill("c2", "A2", "100", "1", "bust", "h2"),  # 13: h2 A2 -1, K 100; bust C -180, E 20
        fill("c3", "A2", "100", "1", "h1", "h2"),  # 14: h1 A2 +1, K -100; h2 A2 -2, K 200
        fill("c4", "A3", "100", "1", "mm", "h3"),  # 15: h3 A3 -1, K 100; mm A3 +1
        oracle("A3", "80"),  # 16: h3 profits 20 in A3; mm E = 900 + 80 fine
        # 17: bust E = -180 + 100 + 90 = 10 >= MM = 5 + 4.5 = 9.5.
        oracle("A2", "90"),
        # 18: bust E = -180 + 50 + 90 = -40 < MM = 2.5 + 4.5 = 7 -> liquidate.
        #   A1: +1 @ 50, A2: +1 @ 90 -> C = -180 + 140 = -40; fees 0 (liq_fee 0).
        #   fund C = -140, A = -140 + 50 + 90 = 0 -> no draw. R = 40.
        #   h1: A1 max(0, -50 + 100) = 50, A2 max(0, 90 - 100) = 0 -> 50 (not 40).
        #   h2: A2 -2*90 + 200 = 20. h3: A3 not held by bust -> 0. S = 70, T = 40.
        #   h1 = 40*50/70 = 28.571428571428571428..., h2 = 40*20/70 = 11.428571428571428571...
        #   floors at 1e-16: 28.5714285714285714 + 11.4285714285714285 = 39.9999999999999999,
        #   1 unit left -> larger remainder h2 (.71 vs .29) -> 11.4285714285714286.
        oracle("A1", "50"),
    ]
    expected = [
        liq(18, "bust", "A1", "1", "50", "50", "0"),
        liq(18, "bust", "A2", "1", "90", "90", "0"),
        claw(18, "h1", "28.5714285714285714", "bust"),
        claw(18, "h2", "11.4285714285714286", "bust"),
    ]
    # h1 1000 - 28.5714285714285714; h2 1200 - 11.4285714285714286; sum 2160 + 1100 + 900 - 140
    # = 4020 = 20 + 4*1000.
    final = state(
        {
            "bust": acct("0"),
            "h1": acct("971.4285714285714286", {"A1": "-1", "A2": "1"}),
            "h2": acct("1188.5714285714285714", {"A2": "-2"}),
            "h3": acct("1100", {"A3": "-1"}),
            "mm": acct("900", {"A3": "1"}),
            "insurance-fund": acct("-140", {"A1": "1", "A2": "1"}),
        },
        {"A1": "50", "A2": "90", "A3": "80"},
    )
    check(lines, expected, final)


def test_market_update_keeps_mark_and_book_and_rechecks_holders() -> None:
    lines: list[Line] = [
        market("U", "0.1", "0.05", "0"),  # 1
        deposit("a", "100"),  # 2
        deposit("mm", "1000"),  # 3
        oracle("U", "100"),  # 4
        fill("u1", "U", "100", "10", "a", "mm"),  # 5: a C -900, E 100 >= MM 50
        book("U", bids=[["99", 10]]),  # 6
        # 7: new params, same mark 100 and book. a MM = 10*100*0.15 = 150 > E = 100.
        #   a sells 10 @ 99 = 990, C = 90, fee 0, keeps. fund C = -990, q 10.
        market("U", "0.2", "0.15", "0"),
    ]
    expected = [liq(7, "a", "U", "10", "990", "100", "0")]
    # 90 + 2000 - 990 = 1100.
    final = state(
        {
            "a": acct("90"),
            "mm": acct("2000", {"U": "-10"}),
            "insurance-fund": acct("-990", {"U": "10"}),
        },
        {"U": "100"},
    )
    check(lines, expected, final)


# ============================================================================= 4. fund draw


def test_fund_draw_partly_covers_and_counts_fund_positions() -> None:
    """A = max(0, C_fund + sum(q_fund*m)) after steps 1-2; the fund's own position counts."""
    lines: list[Line] = [
        market("M", "0.1", "0.05", "0.01"),  # 1
        deposit("insurance-fund", "50"),  # 2
        deposit("x", "100"),  # 3
        deposit("y", "10000"),  # 4
        deposit("z", "10000"),  # 5
        oracle("M", "100"),  # 6
        # 7: the fund trades: C = 50 - 200 = -150, q 2. z C 10200, q -2, K 200.
        fill("i1", "M", "100", "2", "insurance-fund", "z"),
        # 8: x C -900, q 10, E 100 >= 50. y C 11000, q -10, K 1000.
        fill("i2", "M", "100", "10", "x", "y"),
        book("M", bids=[["78", 100]]),  # 9
        # 10: m = 80. x E = -100 < 40. Sells 10 @ 78 = 780, C = -120. fee round8(7.8), c 0 -> 0.
        #   fund C = -150 - 780 = -930, q 12: A = -930 + 12*80 = 30 -> draw 30, x C = -90.
        #   (A before close-out = -150 + 160 = 10; A without q*m = 0: both would differ.)
        #   R = 90. y base -800 + 1000 = 200, z base -160 + 200 = 40, S = 240, T = 90.
        #   y = 90*200/240 = 75, z = 90*40/240 = 15 (exact).
        oracle("M", "80"),
    ]
    expected = [
        liq(10, "x", "M", "10", "780", "80", "0"),
        draw(10, "x", "30"),
        claw(10, "y", "75", "x"),
        claw(10, "z", "15", "x"),
    ]
    # y 11000 - 75 = 10925; z 10200 - 15 = 10185; fund -960. Sum 20150 = deposits.
    final = state(
        {
            "x": acct("0"),
            "y": acct("10925", {"M": "-10"}),
            "z": acct("10185", {"M": "-2"}),
            "insurance-fund": acct("-960", {"M": "12"}),
        },
        {"M": "80"},
    )
    check(lines, expected, final)


def test_fund_with_negative_equity_draws_nothing() -> None:
    lines: list[Line] = [
        market("N", "0.1", "0.05", "0.01"),  # 1
        deposit("insurance-fund", "50"),  # 2
        deposit("w", "100"),  # 3
        deposit("v", "10000"),  # 4
        oracle("N", "100"),  # 5
        # 6: fund C = 50 - 500 = -450, q 5. v C 10500, q -5, K 500.
        fill("n1", "N", "100", "5", "insurance-fund", "v"),
        # 7: w C -900, q 10, E 100 >= 50. v C 11500, q -15, K 1500.
        fill("n2", "N", "100", "10", "w", "v"),
        # 8: m = 80. w E = -100 < 40. Mark close-out 800, C = -100, fee 0 charged.
        #   fund C = -450 - 800 = -1250, q 15: -1250 + 1200 = -50 -> A = 0, no fund_draw.
        #   R = 100. v base = -15*80 + 1500 = 300, T = 100 -> v pays 100.
        oracle("N", "80"),
    ]
    expected = [
        liq(8, "w", "N", "10", "800", "80", "0"),
        claw(8, "v", "100", "w"),
    ]
    # v 11500 - 100 = 11400; fund -1250. 11400 - 1250 = 10150 = deposits.
    final = state(
        {
            "w": acct("0"),
            "v": acct("11400", {"N": "-15"}),
            "insurance-fund": acct("-1250", {"N": "15"}),
        },
        {"N": "80"},
    )
    check(lines, expected, final)


# ============================================================================== 5. clawback


def test_pro_rata_clawback_largest_remainder_and_code_point_tie_break() -> None:
    """Tie on remainder between 'Zoe' and 'amy': code point order puts 'Zoe' (Z = 90) before
    'amy' (a = 97), so 'Zoe' gets the extra 1e-16 (a case-insensitive sort would pick amy)."""
    lines: list[Line] = [
        market("P", "0.1", "0.05", "0.01"),  # 1
        deposit("insurance-fund", "5"),  # 2
        deposit("loser", "64"),  # 3
        deposit("amy", "1000"),  # 4  (created before Zoe on purpose)
        deposit("Zoe", "1000"),  # 5
        deposit("kim", "1000"),  # 6
        deposit("lee", "1000"),  # 7
        oracle("P", "100"),  # 8
        # 9-12: loser buys 1, 1, 3, 2 -> q 7, C = 64 - 700 = -636, E = 64 >= MM 35.
        #   amy, Zoe: q -1, K 100, C 1100; kim: q -3, K 300, C 1300; lee: q -2, K 200, C 1200.
        fill("g1", "P", "100", "1", "loser", "amy"),
        fill("g2", "P", "100", "1", "loser", "Zoe"),
        fill("g3", "P", "100", "3", "loser", "kim"),
        fill("g4", "P", "100", "2", "loser", "lee"),
        # 13: m = 90. loser E = -636 + 630 = -6 < 31.5. Mark close-out 630 -> C = -6, fee 0.
        #   fund C = 5 - 630 = -625, q 7: A = -625 + 630 = 5 -> draw 5, loser C = -1. R = 1.
        #   Bases: amy 10, Zoe 10, kim 30, lee 20 -> S = 70, T = 1.
        #   1/7 = 0.1428571428571428|57 (rem 4/7 unit), 3/7 = 0.4285714285714285|71 (5/7),
        #   2/7 = 0.2857142857142857|14 (1/7). Floors sum to 0.9999999999999998 -> 2 units:
        #   kim (5/7), then the 4/7 tie amy/Zoe -> smaller code point: Zoe.
        oracle("P", "90"),
    ]
    expected = [
        liq(13, "loser", "P", "7", "630", "90", "0"),
        draw(13, "loser", "5"),
        claw(13, "Zoe", "0.1428571428571429", "loser"),
        claw(13, "amy", "0.1428571428571428", "loser"),
        claw(13, "kim", "0.4285714285714286", "loser"),
        claw(13, "lee", "0.2857142857142857", "loser"),
    ]
    # Cash: 4700 - 1 - 630 = 4069 = 5 + 64 + 4000.
    final = state(
        {
            "loser": acct("0"),
            "amy": acct("1099.8571428571428572", {"P": "-1"}),
            "Zoe": acct("1099.8571428571428571", {"P": "-1"}),
            "kim": acct("1299.5714285714285714", {"P": "-3"}),
            "lee": acct("1199.7142857142857143", {"P": "-2"}),
            "insurance-fund": acct("-630", {"P": "7"}),
        },
        {"P": "90"},
    )
    check(lines, expected, final)


def test_whole_base_clawback_bad_debt_then_debited_accounts_liquidated() -> None:
    """T == S: each pays its whole base, the rest is bad debt; the debited accounts then fall
    under MM in the same input and go smallest E/MM first (s2 before s1 despite ids)."""
    lines: list[Line] = [
        market("P", "0.1", "0.05", "0.01"),  # 1
        market("Q", "0.1", "0.05", "0.01"),  # 2
        deposit("bust", "60"),  # 3
        deposit("qs", "1000"),  # 4
        deposit("s1", "5"),  # 5
        deposit("mm", "10000"),  # 6
        oracle("P", "100"),  # 7
        oracle("Q", "50"),  # 8
        # 9: fund C = -500, Q +10. qs C 1500, Q -10.
        fill("h1", "Q", "50", "10", "insurance-fund", "qs"),
        # 10: s2 (created by the fill) C 630, P -6, K 630: E = 630 - 600 = 30 = MM 30, not <.
        fill("h2", "P", "105", "6", "mm", "s2"),
        # 11: s1 C = 5 + 420 = 425, P -4, K 420: E = 25 >= MM 20. mm C 8950, P +10.
        fill("h3", "P", "105", "4", "mm", "s1"),
        # 12: bust C = 60 - 1000 = -940, P 10, E = 60 >= 50. mm C 9950, flat.
        fill("h4", "P", "100", "10", "bust", "mm"),
        oracle("Q", "20"),  # 13: the fund's Q long loses; qs E = 1500 - 200 fine
        book("P", bids=[["75", 100]]),  # 14
        # 15: m_P = 90. bust E = -940 + 900 = -40 < 45 (s1 E 65 >= 18, s2 E 90 >= 27).
        #   bust sells 10 @ 75 = 750, C = -190; fee round8(7.5), c 0 -> 0.
        #   fund C = -500 - 750 = -1250, A = -1250 + 10*90 + 10*20 = -150 -> 0, no draw.
        #   R = 190. Bases in P: s1 -360 + 420 = 60, s2 -540 + 630 = 90, mm flat 0; qs holds
        #   only Q -> 0. S = 150 = T: whole bases. bad debt 190 - 150 = 40.
        #   Then s1 C = 365, E = 5 < MM 18 (E/MM 0.28); s2 C = 540, E = 0 < 27 (E/MM 0).
        #   s2 first: no asks -> mark: -540, C = 0, fee round8(5.4) but c 0 -> 0, keeps.
        #     fund C = -1250 + 540 = -710, P 4.
        #   s1: -360, C = 5, fee round8(3.6) = 3.6 <= 5 -> C = 1.4, keeps.
        #     fund C = -710 + 360 + 3.6 = -346.4, P 0.
        oracle("P", "90"),
    ]
    expected = [
        liq(15, "bust", "P", "10", "750", "90", "0"),
        claw(15, "s1", "60", "bust"),
        claw(15, "s2", "90", "bust"),
        bad(15, "bust", "40"),
        liq(15, "s2", "P", "-6", "-540", "90", "0"),
        liq(15, "s1", "P", "-4", "-360", "90", "3.6"),
    ]
    # 1500 + 1.4 + 9950 - 346.4 - 40 = 11065 = 60 + 1000 + 5 + 10000.
    final = state(
        {
            "bust": acct("0"),
            "qs": acct("1500", {"Q": "-10"}),
            "s1": acct("1.4"),
            "s2": acct("0"),
            "mm": acct("9950"),
            "insurance-fund": acct("-346.4", {"Q": "10"}),
            "bad-debt": acct("-40"),
        },
        {"P": "90", "Q": "20"},
    )
    check(lines, expected, final)


# ======================================================================= 6. bankrupt accounts


def test_bankrupt_settled_before_liquidatable_accounts() -> None:
    """A closing fill at a loss plus a fee leaves zed flat with C < 0 (bankrupt) and, before any
    oracle tick, moves the mark, making alf liquidatable. zed goes first though 'alf' < 'zed';
    zed gets steps 3-5 only (no liquidation event, no liquidation fee)."""
    lines: list[Line] = [
        market("B", "0.1", "0.05", "0.01"),  # 1
        deposit("insurance-fund", "3"),  # 2
        deposit("zed", "10"),  # 3
        deposit("alf", "25"),  # 4
        deposit("mm", "10000"),  # 5
        deposit("shorty", "1000"),  # 6
        # 7: m = 100 (fill). zed C -90, q 1, E 10 >= 5. mm C 10100, q -1, K 100.
        fill("k1", "B", "100", "1", "zed", "mm"),
        # 8: alf C -375, q 4, E 25 >= 20. shorty C 1400, q -4, K 400.
        fill("k2", "B", "100", "4", "alf", "shorty"),
        # 9: zed sells 1 @ 85, fee 1: C = -90 + 85 - 1 = -6, flat -> bankrupt. mm flat, K 0,
        #   C 10015. fee-pool 1. m = 85: alf E = -375 + 340 = -35 < MM 17.
        #   zed: D 6, A = 3 -> draw 3, R = 3. Bases in B (the fill's market): alf
        #   max(0, 340 - 400) = 0, shorty -340 + 400 = 60, mm 0. T = 3 -> shorty 3.
        #   alf: mark close-out 340, C = -35, fee round8(3.4) but c 0 -> 0.
        #   fund C = 0 - 340, q 4: A = -340 + 340 = 0. R = 35, shorty base 60 -> pays 35.
        fill("k3", "B", "85", "1", "mm", "zed", seller_fee="1"),
    ]
    expected = [
        draw(9, "zed", "3"),
        claw(9, "shorty", "3", "zed"),
        liq(9, "alf", "B", "4", "340", "85", "0"),
        claw(9, "shorty", "35", "alf"),
    ]
    # shorty 1400 - 38 = 1362. 10015 + 1362 - 340 + 1 = 11038 = 3 + 10 + 25 + 10000 + 1000.
    final = state(
        {
            "zed": acct("0"),
            "alf": acct("0"),
            "mm": acct("10015"),
            "shorty": acct("1362", {"B": "-4"}),
            "insurance-fund": acct("-340", {"B": "4"}),
            "fee-pool": acct("1"),
        },
        {"B": "85"},
    )
    check(lines, expected, final)


def test_two_bankrupt_sides_of_one_fill_settle_in_id_order() -> None:
    lines: list[Line] = [
        market("F", "0.5", "0.25", "0"),  # 1
        deposit("insurance-fund", "7"),  # 2
        deposit("aa", "50"),  # 3
        deposit("bb", "50"),  # 4
        deposit("cc", "1000"),  # 5
        fill("m1", "F", "100", "1", "aa", "cc"),  # 6: aa C -50, q 1, E 50 >= 25
        fill("m2", "F", "100", "1", "cc", "bb"),  # 7: bb C 150, q -1, E 50 >= 25; cc flat
        # 8: both close with fees: aa C = -50 + 100 - 55 = -5, bb C = 150 - 100 - 60 = -10.
        #   fee-pool +115. Bankrupt in id order: aa D 5, A 7 -> draw 5 (fund 2);
        #   bb D 10, A 2 -> draw 2, R 8; everyone flat in F -> S = 0 -> bad debt 8.
        fill("m3", "F", "100", "1", "bb", "aa", buyer_fee="60", seller_fee="55"),
    ]
    expected = [
        draw(8, "aa", "5"),
        draw(8, "bb", "2"),
        bad(8, "bb", "8"),
    ]
    # 1000 + 115 - 8 = 1107 = 7 + 50 + 50 + 1000.
    final = state(
        {
            "aa": acct("0"),
            "bb": acct("0"),
            "cc": acct("1000"),
            "fee-pool": acct("115"),
            "bad-debt": acct("-8"),
        },
        {"F": "100"},
    )
    check(lines, expected, final)


# ========================================================================= 7. oracle guard


def test_oracle_guard_hold_confirm_replace_and_param_update() -> None:
    lines: list[Line] = [
        market("G", "0.1", "0.05", "0.01", "0.1"),  # 1
        deposit("insurance-fund", "1000"),  # 2
        deposit("lng", "100"),  # 3
        deposit("mm", "100000"),  # 4
        oracle("G", "100"),  # 5: no mark yet -> accepted
        fill("o1", "G", "100", "10", "lng", "mm"),  # 6: lng C -900, E 100 >= 50
        oracle("G", "110"),  # 7: |110-100| = 10 <= 0.1*100: normal (boundary), m 110
        # 8: |80-110| = 30 > 11 -> held. lng would be E = -100 at 80: no liquidation.
        oracle("G", "80"),
        # 9: h 80: |85-80| = 5 <= 8 -> confirmed, m 85. lng E = -50 < 42.5: mark close-out
        #   850, C = -50, fee 0 charged; fund C 150, q 10, A = 150 + 850 = 1000 -> draw 50.
        oracle("G", "85"),
        oracle("G", "200"),  # 10: |200-85| = 115 > 8.5 -> held 200
        oracle("G", "40"),  # 11: |40-200| = 160 > 20, |40-85| = 45 > 8.5 -> held 40 (replaces)
        oracle("G", "44"),  # 12: h 40: |44-40| = 4 <= 4 -> confirmed (boundary), m 44
        oracle("G", "60"),  # 13: |60-44| = 16 > 4.4 -> held 60
        market("G", "0.1", "0.05", "0.01", "0.1"),  # 14: same params; clears h, keeps m 44
        # 15: no h: |62-44| = 18 > 4.4 -> held. (Had h 60 survived: |62-60| = 2 <= 6, confirmed.)
        oracle("G", "62"),
        oracle("G", "45"),  # 16: h 62: |45-62| = 17 > 6.2; |45-44| = 1 <= 4.4 -> normal, m 45
        # 17: h cleared by 16: |64-45| = 19 > 4.5 -> held (vs h 62 it would confirm).
        oracle("G", "64"),
        market("G", "0.1", "0.05", "0.01"),  # 18: no max_oracle_move -> no guard
        oracle("G", "500"),  # 19: accepted. mm E = 101000 - 5000 >= 250
    ]
    expected = [
        held(8, "G", "80"),
        liq(9, "lng", "G", "10", "850", "85", "0"),
        draw(9, "lng", "50"),
        held(10, "G", "200"),
        held(11, "G", "40"),
        held(13, "G", "60"),
        held(15, "G", "62"),
        held(17, "G", "64"),
    ]
    # mm 100000 + 1000 = 101000; fund 1000 - 850 - 50 = 100. Sum 101100 = deposits.
    final = state(
        {
            "lng": acct("0"),
            "mm": acct("101000", {"G": "-10"}),
            "insurance-fund": acct("100", {"G": "10"}),
        },
        {"G": "500"},
    )
    check(lines, expected, final)


def test_oracle_guard_first_tick_and_fill_set_mark() -> None:
    lines: list[Line] = [
        market("H", "0.1", "0.05", "0.01", "0.05"),  # 1
        market("J", "0.1", "0.05", "0.01", "0.05"),  # 2
        market("K", "0.1", "0.05", "0.01"),  # 3: never priced -> mark null
        deposit("a", "1000"),  # 4
        deposit("b", "1000"),  # 5
        oracle("H", "12345"),  # 6: H has no mark yet -> any tick accepted
        oracle("H", "20000"),  # 7: |20000-12345| = 7655 > 617.25 -> held
        fill("j1", "J", "100", "1", "a", "b"),  # 8: m_J = 100 (fill price)
        fill("j2", "J", "120", "1", "a", "b"),  # 9: m_J = 120 (latest fill price)
        oracle("J", "100"),  # 10: |100-120| = 20 > 6 -> held (reference is the fill mark)
        oracle("J", "125"),  # 11: h 100: 25 > 5; |125-120| = 5 <= 6 -> normal, m 125
        # 12: after the first accepted tick a fill no longer moves the mark (stays 125).
        fill("j3", "J", "130", "1", "a", "b"),
        # 13: |119-125| = 6 <= 6.25 -> normal, m 119 (vs 130 it would be held: 11 > 6.5).
        oracle("J", "119"),
    ]
    expected = [held(7, "H", "20000"), held(10, "J", "100")]
    # a: 1000 - 100 - 120 - 130 = 650, q 3; b: 1350, q -3.
    final = state(
        {"a": acct("650", {"J": "3"}), "b": acct("1350", {"J": "-3"})},
        {"H": "12345", "J": "119", "K": None},
    )
    check(lines, expected, final)


# ================================================================ 8. validation and rejects

DEEP = "[" * 100_000 + "]" * 100_000


def test_every_reject_code_ordering_and_no_state_change() -> None:
    """Setup: alice C -400 q 5, bob C 1500 q -5 at m 100 (alice E 100, bob E 1000, IM 50)."""
    cases: list[tuple[Line, str | None]] = [
        (market("M", "0.1", "0.05", "0.01"), None),
        (deposit("alice", "100"), None),
        (deposit("bob", "1000"), None),
        (oracle("M", "100"), None),
        (fill("f1", "M", "100", "5", "alice", "bob"), None),
        # --- malformed
        ("{not json", "malformed"),
        ("[1, 2]", "malformed"),
        ('"deposit"', "malformed"),
        ("42", "malformed"),
        ("null", "malformed"),
        ('{"type":"deposit","account":"alice","amount":NaN}', "malformed"),
        ('{"type":"deposit","account":"alice","amount":Infinity}', "malformed"),
        ('{"type":"deposit","account":"alice","amount":-Infinity}', "malformed"),
        (b'{"type":"deposit","account":"al\xffce","amount":"1"}', "malformed"),
        (b"\xfe\xff", "malformed"),
        ('{"type":"deposit","account":"alice","amount":"1","x":' + DEEP + "}", "malformed"),
        ('{"type":"deposit","account":"alice","amount":"1"} trailing', "malformed"),
        # --- unknown_type
        ("{}", "unknown_type"),
        ('{"type":"teleport","account":"alice","amount":"1"}', "unknown_type"),
        ('{"account":"alice","amount":"1"}', "unknown_type"),
        ('{"type":"Deposit","account":"alice","amount":"1"}', "unknown_type"),
        # --- invalid_field: numbers
        (deposit("alice", 1.5), "invalid_field"),
        ('{"type":"deposit","account":"alice","amount":1e3}', "invalid_field"),
        (deposit("alice", "1e3"), "invalid_field"),
        (deposit("alice", None), "invalid_field"),
        (deposit("alice", True), "invalid_field"),
        (deposit("alice", "1000000000000000.00000001"), "invalid_field"),
        (deposit("alice", 1_000_000_000_000_001), "invalid_field"),
        (deposit("alice", "0.123456789"), "invalid_field"),
        (deposit("alice", "0"), "invalid_field"),
        (deposit("alice", "-5"), "invalid_field"),
        (deposit("alice", "+5"), "invalid_field"),
        (deposit("alice", " 5"), "invalid_field"),
        (deposit("alice", "5."), "invalid_field"),
        (deposit("alice", ".5"), "invalid_field"),
        ('{"type":"deposit","account":"alice"}', "invalid_field"),
        (withdraw("bob", 1.0), "invalid_field"),
        (oracle("M", "0"), "invalid_field"),
        (oracle("M", "-1"), "invalid_field"),
        # --- invalid_field: ids
        (deposit("", "1"), "invalid_field"),
        (deposit(7, "1"), "invalid_field"),  # type: ignore[arg-type]
        (fill("", "M", "100", "1", "bob", "alice"), "invalid_field"),
        (market("", "0.1", "0.05", "0.01"), "invalid_field"),
        # --- invalid_field: market ranges (NEW must not be created)
        (market("NEW", "0.1", "0.2", "0.01"), "invalid_field"),  # mmr > imr
        (market("NEW", "0.1", "0.05", "1"), "invalid_field"),  # liq_fee = 1
        (market("NEW", "0.1", "0", "0.01"), "invalid_field"),  # mmr = 0
        (market("NEW", "1.1", "0.05", "0.01"), "invalid_field"),  # imr > 1
        (market("NEW", "0.1", "0.05", "0.01", "0"), "invalid_field"),  # max_oracle_move = 0
        # An invalid update of M must not install this tight guard (see the tick below).
        (market("M", "0.1", "0.2", "0.01", "0.01"), "invalid_field"),
        # --- invalid_field: fills and books
        (fill("f2", "M", "100", "0", "bob", "alice"), "invalid_field"),
        (fill("f2", "M", "100", "1", "bob", "alice", buyer_fee=0.5), "invalid_field"),
        (
            fill("f2", "M", "100", "1", "bob", "alice", seller_fee="-1000000000000001"),
            "invalid_field",
        ),
        (
            '{"type":"fill","fill_id":"f2","market":"M","price":"100","qty":"1","buyer":"bob"}',
            "invalid_field",
        ),
        (book("M", bids=[["100"]]), "invalid_field"),
        (book("M", bids=[["100", "0"]]), "invalid_field"),
        (book("M", bids="lots"), "invalid_field"),
        # --- unknown_market
        (oracle("NOPE", "100"), "unknown_market"),
        (fill("f2", "NOPE", "100", "1", "bob", "alice"), "unknown_market"),
        (book("NOPE", bids=[["1", "1"]]), "unknown_market"),
        # --- reserved_account, each forbidden use
        (deposit("fee-pool", "1"), "reserved_account"),
        (deposit("bad-debt", "1"), "reserved_account"),
        (withdraw("insurance-fund", "1"), "reserved_account"),
        (withdraw("fee-pool", "1"), "reserved_account"),
        (withdraw("bad-debt", "1"), "reserved_account"),
        (fill("f2", "M", "100", "1", "fee-pool", "bob"), "reserved_account"),
        (fill("f2", "M", "100", "1", "alice", "fee-pool"), "reserved_account"),
        (fill("f2", "M", "100", "1", "bad-debt", "bob"), "reserved_account"),
        (fill("f2", "M", "100", "1", "alice", "bad-debt"), "reserved_account"),
        # --- self_trade, duplicate_fill
        (fill("f2", "M", "100", "1", "alice", "alice"), "self_trade"),
        (fill("f1", "M", "100", "1", "bob", "alice"), "duplicate_fill"),
        # --- insufficient_cash (alice C = -400, bob C = 1500), incl. an unknown account
        (withdraw("alice", "1"), "insufficient_cash"),
        (withdraw("bob", "1500.00000001"), "insufficient_cash"),
        (withdraw("ghost", "1"), "insufficient_cash"),
        # --- insufficient_margin: bob E - 951 = 49 < IM 50
        (withdraw("bob", "951"), "insufficient_margin"),
        # --- first failure wins
        ('{"type":"nope","amount":NaN}', "malformed"),  # not unknown_type
        ('{"amount":"x"}', "unknown_type"),  # not invalid_field
        ('{"type":"teleport","amount":1.5}', "unknown_type"),  # not invalid_field
        (withdraw("fee-pool", "abc"), "invalid_field"),  # not reserved_account
        (deposit("bad-debt", "0"), "invalid_field"),  # not reserved_account
        (oracle("NOPE", "0"), "invalid_field"),  # not unknown_market
        (withdraw("ghost", "-1"), "invalid_field"),  # not insufficient_cash
        (fill("f1", "NOPE", "100", "0", "alice", "bob"), "invalid_field"),  # not unknown_mkt
        # unknown_market beats reserved_account, self_trade and duplicate_fill:
        (fill("f1", "NOPE", "1", "1", "fee-pool", "fee-pool"), "unknown_market"),
        # reserved_account beats self_trade and duplicate_fill:
        (fill("f1", "M", "100", "1", "fee-pool", "fee-pool"), "reserved_account"),
        # self_trade beats duplicate_fill:
        (fill("f1", "M", "100", "1", "alice", "alice"), "self_trade"),
        (withdraw("insurance-fund", "1000000"), "reserved_account"),  # not insufficient_cash
        (withdraw("bob", "2000"), "insufficient_cash"),  # not insufficient_margin
        # --- a rejected fill's id is not recorded (carol is not created either)
        (fill("f7", "M", "100", "1", "carol", "carol"), "self_trade"),
        (fill("f8", "NOPE", "100", "1", "bob", "alice"), "unknown_market"),
        (fill("f9", "M", "100", "1", "fee-pool", "alice"), "reserved_account"),
        # alice sells 1 three times: C -400 -> -100, q 5 -> 2; bob C 1500 -> 1200, q -5 -> -2.
        (fill("f7", "M", "100", "1", "bob", "alice"), None),
        (fill("f8", "M", "100", "1", "bob", "alice"), None),
        (fill("f9", "M", "100", "1", "bob", "alice"), None),
        (fill("f7", "M", "100", "1", "alice", "bob"), "duplicate_fill"),
        # No guard on M (the invalid update above was not applied): accepted, no oracle_held.
        # alice E = -100 + 300 = 200 >= MM 15; bob E = 1200 - 300 = 900.
        (oracle("M", "150"), None),
        # Unknown fields (even nested) are ignored; ts is an integer.
        ({**deposit("alice", "1"), "note": {"a": [1, 2]}, "ts": 1_700_000_000_000_000_000}, None),
        (deposit("whale", "1000000000000000"), None),  # exactly 1e15 is not "above 1e15"
    ]
    lines = [line for line, _ in cases]
    expected = [rej(seq, reason) for seq, (_, reason) in enumerate(cases, 1) if reason]
    # Cash: -99 + 1200 + 1e15 = 100 + 1000 + 1 + 1e15.
    final = state(
        {
            "alice": acct("-99", {"M": "2"}),
            "bob": acct("1200", {"M": "-2"}),
            "whale": acct("1000000000000000"),
        },
        {"M": "150"},
    )
    check(lines, expected, final)


def test_wire_number_forms_are_normalised() -> None:
    """JSON integers and the SPEC pattern `-?[0-9]+(\\.[0-9]{1,8})?`, incl. leading zeros and
    trailing zeros, print in plain notation without trailing zeros."""
    lines: list[Line] = [
        market("M", 1, "0.50", 0),  # imr = 1 and liq_fee = 0 are in range
        deposit("a", "007.50"),
        deposit("a", 3),
        deposit("a", "0.10000000"),  # a: 7.5 + 3 + 0.1 = 10.6
        oracle("M", "0100.50"),
    ]
    check(lines, [], state({"a": acct("10.6")}, {"M": "100.5"}))


# =========================================================================== 9. withdrawals


def test_withdrawals() -> None:
    lines: list[Line] = [
        market("W", "0.2", "0.1", "0"),  # 1
        deposit("u", "1000"),  # 2
        deposit("v", "1000"),  # 3
        oracle("W", "50"),  # 4
        # 5: u C 500, q 10, E 1000, IM 100. v C 1500, q -10, E 1000, IM 100.
        fill("w1", "W", "50", "10", "u", "v"),
        withdraw("u", "100"),  # 6: 100 <= 500, 900 >= 100 -> accepted, u C 400
        withdraw("u", "400.01"),  # 7: > C 400 (E would allow it) -> insufficient_cash
        withdraw("v", "1400"),  # 8: <= 1500, 1000 - 1400 < 100 -> insufficient_margin
        withdraw("v", "900"),  # 9: E - 900 = 100 = IM -> accepted (boundary), v C 600
        withdraw("v", "0.00000001"),  # 10: 100 - 1e-8 < 100 -> insufficient_margin
        withdraw("u", "400"),  # 11: amount = C; E 900 - 400 >= 100 -> accepted, u C 0
        withdraw("nobody", "1"),  # 12: unknown account -> insufficient_cash
        deposit("flat", "10"),  # 13
        withdraw("flat", "10"),  # 14: no positions, amount = C -> accepted
    ]
    expected = [
        wdr(6, "u", "100"),
        rej(7, "insufficient_cash"),
        rej(8, "insufficient_margin"),
        wdr(9, "v", "900"),
        rej(10, "insufficient_margin"),
        wdr(11, "u", "400"),
        rej(12, "insufficient_cash"),
        wdr(14, "flat", "10"),
    ]
    # 2010 - (100 + 900 + 400 + 10) = 600 = 0 + 600 + 0.
    final = state(
        {"u": acct("0", {"W": "10"}), "v": acct("600", {"W": "-10"}), "flat": acct("0")},
        {"W": "50"},
    )
    check(lines, expected, final)


# ===================================================================== 10. fees and K


def test_fees_of_both_signs_go_to_and_from_fee_pool() -> None:
    lines: list[Line] = [
        market("FE", "0.1", "0.05", "0.01"),  # 1
        deposit("p", "100"),  # 2
        deposit("q", "100"),  # 3
        # 4: p C = 100 - 10 - 0.1 = 89.9; q C = 100 + 10 + 0.03 = 110.03; pool +0.07.
        fill("e1", "FE", "10", "1", "p", "q", buyer_fee="0.1", seller_fee="-0.03"),
        # 5: both rebated: q C = 110.03 - 10 + 0.05 = 100.08; p C = 89.9 + 10 + 0.04 = 99.94;
        #   pool 0.07 - 0.09 = -0.02 (rebates are paid by the pool, which may go negative).
        fill("e2", "FE", "10", "1", "q", "p", buyer_fee="-0.05", seller_fee="-0.04"),
        # 6: p C = 99.94 - 20 = 79.94; q C = 100.08 + 20 - 0.00000001 = 120.07999999;
        #   pool -0.02 + 0.00000001 = -0.01999999.
        fill("e3", "FE", "10", "2", "p", "q", buyer_fee=0, seller_fee="0.00000001"),
    ]
    # 79.94 + 120.07999999 - 0.01999999 = 200.
    final = state(
        {
            "p": acct("79.94", {"FE": "2"}),
            "q": acct("120.07999999", {"FE": "-2"}),
            "fee-pool": acct("-0.01999999"),
        },
        {"FE": "10"},
    )
    check(lines, [], final)


def test_k_bookkeeping_flip_and_flat_seen_through_clawback() -> None:
    """No oracle tick at all: every fill sets the mark. K excludes fees; a flip keeps only the
    opening part; going flat resets K. Naive K (sum of all flows) would give flip 350 and flat
    230, i.e. bases 110 and 70 instead of 90 and 50."""
    lines: list[Line] = [
        market("K1", "0.1", "0.05", "0"),  # 1
        deposit("cp", "100000"),  # 2
        deposit("flip", "1000"),  # 3
        deposit("flat", "1000"),  # 4
        deposit("bust", "30"),  # 5
        deposit("x", "1000"),  # 6
        deposit("y", "1000"),  # 7
        # 8: flip q 2, K -200, C 800. cp q -2, C 100200.
        fill("k1", "K1", "100", "2", "flip", "cp"),
        # 9: flip sells 5 @ 110 with a 1 fee: q -3, flip -> K = 3*110 = 330, C 800 + 550 - 1
        #   = 1349. cp q 3, C 100200 - 550 - 0.25 = 99649.75. pool 1.25.
        fill("k2", "K1", "110", "5", "cp", "flip", buyer_fee="0.25", seller_fee="1"),
        # 10: flat q 1, K -100, C 900. cp C 99749.75.
        fill("k3", "K1", "100", "1", "flat", "cp"),
        # 11: flat sells 1 @ 120: q 0 -> K 0, C 1020. cp C 99629.75.
        fill("k4", "K1", "120", "1", "cp", "flat"),
        # 12: flat sells 2 @ 105 with a 0.5 rebate: q -2, K 210, C 1230.5. cp C 99419.75,
        #   q 5. pool 0.75.
        fill("k5", "K1", "105", "2", "cp", "flat", buyer_fee="0", seller_fee="-0.5"),
        # 13: bust q 5, C = 30 - 500 = -470, E = 30 >= MM 25 at m 100. cp flat, C 99919.75.
        fill("k6", "K1", "100", "5", "bust", "cp"),
        # 14: m = 80 (latest fill price). x q 1, K -80, C 920; y q -1, K 80, C 1080.
        #   bust E = -470 + 400 = -70 < MM 20: mark close-out 400, C -70, fee 0.
        #   fund C -400, q 5: A = 0. R = 70. Bases: flip -240 + 330 = 90, flat -160 + 210
        #   = 50, x 0, y 0, cp 0 -> S = 140, T = 70: flip 45, flat 25 (exact).
        fill("k7", "K1", "80", "1", "x", "y"),
    ]
    expected = [
        liq(14, "bust", "K1", "5", "400", "80", "0"),
        claw(14, "flat", "25", "bust"),
        claw(14, "flip", "45", "bust"),
    ]
    # 99919.75 + 1304 + 1205.5 + 920 + 1080 - 400 + 0.75 = 104030 = deposits.
    final = state(
        {
            "cp": acct("99919.75"),
            "flip": acct("1304", {"K1": "-3"}),
            "flat": acct("1205.5", {"K1": "-2"}),
            "bust": acct("0"),
            "x": acct("920", {"K1": "1"}),
            "y": acct("1080", {"K1": "-1"}),
            "insurance-fund": acct("-400", {"K1": "5"}),
            "fee-pool": acct("0.75"),
        },
        {"K1": "80"},
    )
    check(lines, expected, final)


# ======================================================================== 11. .jsonl input


def test_jsonl_blank_lines_crlf_and_missing_final_newline() -> None:
    data = b"".join(
        [
            b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0"}\r\n',  # 1
            b"\n",
            b"   \t \r\n",
            b"\r\n",
            b"\r\r\n",
            b'  {"type":"deposit","account":"a","amount":"5.5"}  \r\n',  # 2
            b"\t\n",
            b'{"type":"teleport"}\n',  # 3
            b"\t \r\n",
            b'{"type":"oracle","market":"M","price":"100"}\r\n',  # 4
            b'{"type":"withdraw","account":"a","amount":2}',  # 5, no newline at the end
        ]
    )
    expected = [rej(3, "unknown_type"), wdr(5, "a", "2")]
    check_raw(data, expected, state({"a": acct("3.5")}, {"M": "100"}), Decimal("3.5"))


def test_jsonl_invalid_utf8_line_counts_and_bare_cr_at_end() -> None:
    data = (
        b'{"type":"deposit","account":"a","amount":"1"}\n'  # 1
        b"\xff\xfe\n"  # 2: not UTF-8 -> malformed, still counted
        b'{"type":"deposit","account":"a","amount":"2"}\r'  # 3: trailing \r, no \n
    )
    check_raw(data, [rej(2, "malformed")], state({"a": acct("3")}, {}), Decimal(3))


def test_jsonl_empty_and_blank_only_inputs() -> None:
    for data in (b"", b"\n", b"\n\r\n \t\n\r"):
        check_raw(data, [], state({}, {}), Decimal(0))


def test_same_input_same_output() -> None:
    """SPEC: the engine is a pure function of its ordered input stream."""
    data = jsonl(
        market("M", "0.1", "0.05", "0.01"),
        deposit("alice", "100"),
        deposit("bob", "1000"),
        deposit("insurance-fund", "20"),
        oracle("M", "100"),
        fill("f1", "M", "100", "10", "alice", "bob"),
        oracle("M", "85"),
    )
    assert run_jsonl(data) == run_jsonl(data)
