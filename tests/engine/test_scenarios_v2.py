"""Hand-worked scenarios for rules version 2 (SPEC §9), one per rule.

Every expected event and state below was computed by hand from §9's text alone; the
arithmetic is in the comments. Both the Python core and the reference model must produce
exactly these outputs (every field: version 2 fixes ``fund_fee``, ``adl`` and ``funding``).

Notation: C cash, q position, K the position's fill cash flow, m mark, E = C + q*m,
MM = |q|*m*mmr, D deficit, R rest after the fund draw, u = q*m + K.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from clearing.engine import Engine, iter_jsonl_lines, run_jsonl
from clearing.engine.money import E8
from clearing.engine.native import NativeEngine, native_available
from clearing.engine.persist import dump_state
from clearing.engine.rules_v2 import next_volatility_e16
from tests.engine.reference import reference_run
from tests.engine.reference_v2 import reference_run_v2

Rec = dict[str, Any]


def market(mid: str, liq_fee: str = "0", **v2: Any) -> Rec:
    return {"type": "market", "market": mid, "imr": "0.1", "mmr": "0.05", "liq_fee": liq_fee, **v2}


def dep(account: str, amount: str) -> Rec:
    return {"type": "deposit", "account": account, "amount": amount}


def oracle(mid: str, price: str) -> Rec:
    return {"type": "oracle", "market": mid, "price": price}


def fill(fid: str, mid: str, price: str, qty: str, buyer: str, seller: str, **fees: str) -> Rec:
    rec = {"type": "fill", "fill_id": fid, "market": mid, "price": price, "qty": qty}
    return {**rec, "buyer": buyer, "seller": seller, **fees}


def liq(seq: int, account: str, qty: str, proceeds: str, mark: str, fee: str, fund_fee: str) -> Rec:
    rec = {"type": "liquidation", "seq": seq, "account": account, "market": "M", "qty": qty}
    return {**rec, "proceeds": proceeds, "mark": mark, "fee": fee, "fund_fee": fund_fee}


def cash_of(state: Rec) -> dict[str, tuple[str, dict[str, str]]]:
    return {k: (v["cash"], v["positions"]) for k, v in state["accounts"].items()}


def _without_reject_words(event: Rec) -> Rec:
    if event["type"] != "reject":
        return event
    return {k: event[k] for k in ("type", "seq", "reason")}


def run_both(inputs: list[Rec], rules: int) -> tuple[list[Rec], Rec]:
    """The Python core's outputs, after checking the reference model agrees exactly."""
    lines = [json.dumps(rec).encode() for rec in inputs]
    events, state = run_jsonl(b"\n".join(lines), "python", rules)
    want_events, want_state = (reference_run_v2 if rules == 2 else reference_run)(lines)
    # Reject details and extras are each implementation's own words.
    events = [_without_reject_words(e) for e in events]
    assert events == [_without_reject_words(e) for e in want_events]
    assert state == want_state
    if native_available():
        _assert_native_agrees(b"\n".join(lines), rules)
    return events, state  # type: ignore[return-value]


def _assert_native_agrees(data: bytes, rules: int) -> None:
    """The native core gives the Python core's bytes: every output, the state, the
    snapshot; both ledgers' invariants and indexes hold after every input."""
    python, native = Engine(rules_version=rules), NativeEngine(rules_version=rules)
    for _, line in iter_jsonl_lines(data):
        assert native.apply_encoded(line) == python.apply_encoded(line)
        python.check_invariants()
        native.check_invariants()
    assert native.state() == python.state()
    assert native.dump_state() == dump_state(python)


# --------------------------------------------------------------------------- 9.1


def _two_bankruptcies() -> list[Rec]:
    # Seq 1-5: market, deposits a1 100, a2 100, w 1000, v 1000 (no fund).
    # Seq 6 oracle 100. Seq 7: a2 buys 10 from w @100 -> a2 C=-900 q=10; w C=2000 q=-10
    # K=1000. Seq 8: v buys 10 from a1 @100 -> a1 C=1100 q=-10 K=1000; v C=0 q=10 K=-1000.
    # Seq 9 oracle 97: a1 E=1100-970=130 >= 48.5, a2 E=-900+970=70 >= 48.5: no one falls.
    # w's base in M: u = -10*97 + 1000 = 30; v's: 970 - 1000 < 0.
    # Seq 10: a1 buys 10 from a2 @97, fees 200 each: both go flat with negative cash,
    # a1 C = 1100 - 970 - 200 = -70, a2 C = -900 + 970 - 200 = -130: two bankruptcies.
    # The fund's equity is 0: no draw; R = D.
    return _losers_flat_after_fees(market("M"))


def _losers_flat_after_fees(first: Rec, *before_last: Rec) -> list[Rec]:
    """``first`` (market M); a1, a2, w, v deposit; at mark 100 a2 buys 10 from w and v 10
    from a1; the oracle ticks to 97; ``before_last``; then a1 buys 10 from a2 @97, fees
    200 each: both go flat with negative cash (the comments around work it through)."""
    return [
        first,
        dep("a1", "100"),
        dep("a2", "100"),
        dep("w", "1000"),
        dep("v", "1000"),
        oracle("M", "100"),
        fill("f1", "M", "100", "10", "a2", "w"),
        fill("f2", "M", "100", "10", "v", "a1"),
        oracle("M", "97"),
        *before_last,
        fill("f3", "M", "97", "10", "a1", "a2", buyer_fee="200", seller_fee="200"),
    ]


def test_two_bankruptcies_v1_claws_the_same_profit_twice() -> None:
    # Version 1: a1 (id order first): base 30, T = min(70, 30) = 30, bad debt 40.
    # a2: K untouched, so base is 30 again: T = 30, bad debt 130 - 30 = 100.
    events, state = run_both(_two_bankruptcies(), rules=1)
    assert events == [
        {"type": "clawback", "seq": 10, "account": "w", "amount": "30", "cause": "a1"},
        {"type": "bad_debt", "seq": 10, "account": "a1", "amount": "40"},
        {"type": "clawback", "seq": 10, "account": "w", "amount": "30", "cause": "a2"},
        {"type": "bad_debt", "seq": 10, "account": "a2", "amount": "100"},
    ]
    # w: 2000 - 30 - 30 = 1940; bad-debt -140; fee-pool 400; sum 2200 = deposits.
    assert cash_of(state)["w"] == ("1940", {"M": "-10"})
    assert cash_of(state)["bad-debt"] == ("-140", {})


def test_two_bankruptcies_v2_claws_the_profit_once() -> None:
    # Version 2: a1: w's E = 2000 - 970 = 1030, MM = 48.5, floor16(E - MM) = 981.5, base
    # min(30, 981.5) = 30; claws 30, K: 1000 -> 970, so u = -970 + 970 = 0.
    # a2: w's base is now 0: no clawback, bad debt 130.
    events, state = run_both(_two_bankruptcies(), rules=2)
    assert events == [
        {"type": "clawback", "seq": 10, "account": "w", "amount": "30", "cause": "a1"},
        {"type": "bad_debt", "seq": 10, "account": "a1", "amount": "40"},
        {"type": "bad_debt", "seq": 10, "account": "a2", "amount": "130"},
    ]
    # w: 2000 - 30 = 1970; bad-debt -170; fee-pool 400: 1970 + 400 - 170 = 2200.
    assert cash_of(state)["w"] == ("1970", {"M": "-10"})
    assert cash_of(state)["bad-debt"] == ("-170", {})
    assert cash_of(state)["fee-pool"] == ("400", {})


def _winner_without_free_equity() -> list[Rec]:
    # imr = mmr = 0.05, so w can withdraw down to E = MM. Deposits a1 100, a2 100, w 1000,
    # v 1000; oracle 100 (seq 6); a2 buys 10 from w @100 (w C 2000, q -10, K 1000); v buys
    # 10 from a1 @100 (a1 C 1100, q -10). Oracle 97 (seq 9): w E = 2000 - 970 = 1030, u = 30.
    # Seq 10: w withdraws 981.5: E - 981.5 = 48.5 >= IM = 48.5: accepted; now E = MM.
    # Seq 11: a1 buys 10 from a2 @97, fees 200 each: a1 C = -70, a2 C = -130, both flat.
    withdrawal = {"type": "withdraw", "account": "w", "amount": "981.5"}
    return _losers_flat_after_fees({**market("M"), "imr": "0.05"}, withdrawal)


def test_v1_clawback_can_make_a_solvent_winner_liquidatable() -> None:
    # Version 1 claws w's base of 30 twice: w C = 1018.5 - 60 = 958.5, E = -11.5 < MM =
    # 48.5. w is re-examined and closed out: buys 10 @97 = -970, C = -11.5; the fund (now
    # short 10 at 970) has equity 0; v's base is 970 - 1000 < 0: bad debt 11.5.
    events, state = run_both(_winner_without_free_equity(), rules=1)
    assert events == [
        {"type": "withdrawal", "seq": 10, "account": "w", "amount": "981.5"},
        {"type": "clawback", "seq": 11, "account": "w", "amount": "30", "cause": "a1"},
        {"type": "bad_debt", "seq": 11, "account": "a1", "amount": "40"},
        {"type": "clawback", "seq": 11, "account": "w", "amount": "30", "cause": "a2"},
        {"type": "bad_debt", "seq": 11, "account": "a2", "amount": "100"},
        {"type": "liquidation", "seq": 11, "account": "w", "market": "M", "qty": "-10"}
        | {"proceeds": "-970", "mark": "97", "fee": "0"},
        {"type": "bad_debt", "seq": 11, "account": "w", "amount": "11.5"},
    ]
    # 970 (fund) - 151.5 (bad debt) + 400 (fee pool) = 1218.5 = 2200 - 981.5.
    assert cash_of(state)["bad-debt"] == ("-151.5", {})


def test_v2_clawback_base_is_capped_by_free_equity() -> None:
    # Version 2: w's base is min(30, floor16(E - MM)) = min(30, 0) = 0: nobody pays, both
    # deficits are bad debt, and w keeps its position and cash.
    events, state = run_both(_winner_without_free_equity(), rules=2)
    assert events == [
        {"type": "withdrawal", "seq": 10, "account": "w", "amount": "981.5"},
        {"type": "bad_debt", "seq": 11, "account": "a1", "amount": "70"},
        {"type": "bad_debt", "seq": 11, "account": "a2", "amount": "130"},
    ]
    assert cash_of(state)["w"] == ("1018.5", {"M": "-10"})
    assert cash_of(state)["bad-debt"] == ("-200", {})


# --------------------------------------------------------------------------- 9.2


def _partial(tick: str) -> list[Rec]:
    # liq_fee 0.01, liq_step 0.25. a deposits 100 and buys 10 from b (1000) @100:
    # a C = -900, q = 10, K = -1000; b C = 2000, q = -10. Seq 6 is the tick.
    return [
        market("M", "0.01", liq_step="0.25"),
        dep("a", "100"),
        dep("b", "1000"),
        oracle("M", "100"),
        fill("f1", "M", "100", "10", "a", "b"),
        oracle("M", tick),
    ]


def test_partial_liquidation_stops_after_two_steps() -> None:
    # Tick 93: a E = -900 + 930 = 30 < MM = 46.5, and 2E = 60 >= 46.5: a partial step.
    # Step 1: x = ceil8(10 * 0.25) = 2.5 at the mark: proceeds 232.5; C = -667.5, q = 7.5,
    # K = -1000 + 232.5 = -767.5. Fee round8(0.01 * 232.5) = 2.325 <= max(0, E) =
    # -667.5 + 697.5 = 30: charged; C = -669.825. Whole fee to the fund (fund_share 1).
    # Now E = 27.675 < MM = 7.5 * 93 * 0.05 = 34.875: still liquidatable.
    # Step 2: a partial step was taken in this input, so a full close-out: 7.5 @93 =
    # 697.5; C = 27.675, flat; fee round8(6.975) = 6.975 <= 27.675: C = 20.7. It stops.
    events, state = run_both(_partial("93"), rules=2)
    assert events == [
        liq(6, "a", "2.5", "232.5", "93", "2.325", "2.325"),
        liq(6, "a", "7.5", "697.5", "93", "6.975", "6.975"),
    ]
    # Fund: -232.5 + 2.325 - 697.5 + 6.975 = -920.7, q = 10. 20.7 + 2000 - 920.7 = 1100.
    assert cash_of(state)["a"] == ("20.7", {})
    assert cash_of(state)["insurance-fund"] == ("-920.7", {"M": "10"})


def test_partial_liquidation_one_step_restores_margin() -> None:
    # Tick 94: E = 40 < MM = 47, 2E >= MM. Step: 2.5 @94 = 235; C = -665, q = 7.5; fee
    # 2.35 <= E = 40: C = -667.35. E = -667.35 + 705 = 37.65 >= MM = 35.25: safe.
    events, state = run_both(_partial("94"), rules=2)
    assert events == [liq(6, "a", "2.5", "235", "94", "2.35", "2.35")]
    assert cash_of(state)["a"] == ("-667.35", {"M": "7.5"})
    assert cash_of(state)["insurance-fund"] == ("-232.65", {"M": "2.5"})


# --------------------------------------------------------------------------- 9.4


def _long_against_two_shorts(
    deposits: tuple[str, str, str], f1: tuple[str, str], f2: tuple[str, str], tick: str
) -> list[Rec]:
    """An `adl` market without a fund: a, s1, s2 deposit; at mark 100 a buys (price,
    qty) ``f1`` from s1 and ``f2`` from s2 (seq 6, 7); the oracle then ticks (seq 8)."""
    a_cash, s1_cash, s2_cash = deposits
    return [
        market("M", loss_policy="adl"),
        dep("a", a_cash),
        dep("s1", s1_cash),
        dep("s2", s2_cash),
        oracle("M", "100"),
        fill("f1", "M", *f1, "a", "s1"),
        fill("f2", "M", *f2, "a", "s2"),
        oracle("M", tick),
    ]


def test_adl_two_ranked_candidates_first_capped() -> None:
    # loss_policy adl, no fund. Deposits a 100, s1 200, s2 2000; oracle 100 (seq 5).
    # Seq 6: a buys 6 from s1 @74: a C = -344; s1 C = 644, q = -6, K = 444 (E = 44 >= 30).
    # Seq 7: a buys 4 from s2 @100: a C = -744, q = 10; s2 C = 2400, q = -4, K = 400.
    # Seq 8 oracle 72: a E = -24 < MM 36 (2E < MM: full close-out). 10 @72 = 720:
    # C = -24; the fund (C = -720, q = 10) has equity 0: no draw; R = 24, Q = 10.
    # Candidates (shorts, E > MM, u > 0): s1 u = -432 + 444 = 12, E = 212, MM = 21.6;
    # s2 u = -288 + 400 = 112, E = 2112, MM = 14.4. u/E: 0.0566 > 0.0530: s1 first.
    # s1: x = 6; cap = min(12, 190.4) * 6/6 = 12; share = floor16(6 * 24 / 10) = 14.4;
    # pays min(24, 12, 14.4) = 12 (capped). Buys back 6 @72: flat, C = 212 - 12 = 200.
    # s2: x = 4 = U, so share = R = 12; cap = min(112, 2097.6) = 112: pays 12, flat,
    # C = 2400 - 288 - 12 = 2100. R = 0: no clawback, no bad debt. Fund: q 0, C 0.
    inputs = _long_against_two_shorts(("100", "200", "2000"), ("74", "6"), ("100", "4"), "72")
    events, state = run_both(inputs, rules=2)
    adl = {"type": "adl", "seq": 8, "market": "M", "cause": "a"}
    assert events == [
        liq(8, "a", "10", "720", "72", "0", "0"),
        {**adl, "account": "s1", "qty": "-6", "amount": "12"},
        {**adl, "account": "s2", "qty": "-4", "amount": "12"},
    ]
    cash = cash_of(state)
    assert (cash["a"], cash["s1"], cash["s2"]) == (("0", {}), ("200", {}), ("2100", {}))
    assert cash["insurance-fund"] == ("0", {})


def test_adl_candidate_whose_share_rounds_to_zero_still_trades() -> None:
    # a deposits 10.00000011 and buys 0.5 from s1 and 0.50000001 from s2 @100 (mark 100):
    # C = 10.00000011 - 100.000001 = -90.00000089, q = Q = 1.00000001.
    # Oracle 89.99999999: q*m = 89.99999999 + 0.0000008999999999 = 90.0000008899999999,
    # so E = -0.0000000000000001 (2E < MM: full close-out at the mark): D = R = 1e-16.
    # s1 (deposit 1000): u = 50 - 44.999999995 = 5.000000005; s2 (1000): u =
    # 0.50000001 * 10.00000001 = 5.0000001050000001. u/(1000 + u) grows with u: s2 first.
    # s2: x = 0.50000001 < U; share = floor16(0.50000001 * 1e-16 / 1.00000001) = 0: pays
    # 0 but still buys back at the mark. s1 takes the last 0.5: share = R = 1e-16, paid.
    fills = ("100", "0.5"), ("100", "0.50000001")
    inputs = _long_against_two_shorts(("10.00000011", "1000", "1000"), *fills, "89.99999999")
    events, state = run_both(inputs, rules=2)
    adl = {"type": "adl", "seq": 8, "market": "M", "cause": "a"}
    assert events == [
        liq(8, "a", "1.00000001", "90.0000008899999999", "89.99999999", "0", "0"),
        {**adl, "account": "s2", "qty": "-0.50000001", "amount": "0"},
        {**adl, "account": "s1", "qty": "-0.5", "amount": "0.0000000000000001"},
    ]
    # s2: 1050.000001 - 45.0000008949999999; s1: 1050 - 44.999999995 - 1e-16; the fund
    # sold back all it took: -90.0000008899999999 + 45.0000008949999999 + 44.999999995 = 0.
    cash = cash_of(state)
    assert cash["s2"] == ("1005.0000001050000001", {})
    assert cash["s1"] == ("1005.0000000049999999", {})
    assert cash["insurance-fund"] == ("0", {}) and cash["a"] == ("0", {})


# --------------------------------------------------------------------------- 9.5


def test_funding_rounding_residual_liquidates_a_payer() -> None:
    # Mark 1.5 (seq 2). a deposits 0.32500001 and buys 1.00000001 from b @1.75 (seq 6):
    # C = 0.32500001 - 1.7500000175 = -1.4250000075, E = C + 1.500000015 = 0.0750000075
    # = MM = 1.00000001 * 1.5 * 0.05 exactly: not liquidatable (E < MM is false).
    # c buys 1.00000001 from b @1.5 (seq 7). b: q = -2.00000002, C = 10 + 3.2500000325.
    # Funding 0.00000001 (seq 8): q*m*rate for a and c = 1.500000015e-8 = 150000001.5e-16,
    # half-even -> 150000002e-16 each; b: -300000003e-16 exactly. Sum +1e-16: the
    # fee pool's residual. paid = 2 * 0.0000000150000002 = 0.0000000300000004.
    # a: E = 0.0750000075 - 0.0000000150000002 < MM: liquidated, full (liq_step 1) at
    # the mark: proceeds 1.500000015, C = -1.4250000225000002 + 1.500000015 =
    # 0.0749999924999998 >= 0; fee 0 (liq_fee 0).
    inputs = [
        market("M"),
        oracle("M", "1.5"),
        dep("a", "0.32500001"),
        dep("b", "10"),
        dep("c", "10"),
        fill("f1", "M", "1.75", "1.00000001", "a", "b"),
        fill("f2", "M", "1.5", "1.00000001", "c", "b"),
        {"type": "funding", "market": "M", "rate": "0.00000001"},
    ]
    events, state = run_both(inputs, rules=2)
    assert events == [
        {"type": "funding", "seq": 8, "market": "M", "rate": "0.00000001"}
        | {"paid": "0.0000000300000004"},
        liq(8, "a", "1.00000001", "1.500000015", "1.5", "0", "0"),
    ]
    cash = cash_of(state)
    assert cash["a"] == ("0.0749999924999998", {})
    assert cash["b"] == ("13.2500000625000003", {"M": "-2.00000002"})
    assert cash["c"] == ("8.4999999699999998", {"M": "1.00000001"})
    assert cash["fee-pool"] == ("0.0000000000000001", {})
    assert cash["insurance-fund"] == ("-1.500000015", {"M": "1.00000001"})


def test_funding_is_unknown_under_v1() -> None:
    events, _ = run_both([market("M"), {"type": "funding", "market": "M", "rate": "0"}], rules=1)
    assert [e["reason"] for e in events] == ["unknown_type"]


# --------------------------------------------------------------------------- 9.3


def test_fee_split_switches_tiers_as_volatility_rises() -> None:
    # liq_fee 0.01, tiers [0.1 -> 0.5, 0.2 -> 0], fund_share 1, lambda 0.5.
    # Oracle 100 gives the first mark: v stays 0. s sells 1 to w @100 (s deposit 12),
    # l1 (15) and l2 (36) each buy 1 from w @100 (w deposit 1000).
    # Tick 110: v = 0 + 0.5 * ((10/100)^2 - 0) = 0.005 < 0.1^2: share = fund_share = 1.
    #   s: E = 112 - 110 = 2 < MM 5.5; buys back 1 @110: C = 2; fee 1.1 <= 2: C = 0.9;
    #   fee pool round16(1.1 * 0) = 0, fund_fee 1.1.
    # Tick 88: r = (22/110)^2 = 0.04; v = 0.005 + 0.5 * (0.04 - 0.005) = 0.0225 >= 0.01
    #   and < 0.04: share 0.5. l1: E = -85 + 88 = 3 < 4.4; sells 1 @88: C = 3; fee 0.88;
    #   fee pool 0.44, fund_fee 0.44; C = 2.12.
    # Tick 66: r = (22/88)^2 = 0.0625; v = 0.0225 + 0.5 * 0.04 = 0.0425 >= 0.04: share 0.
    #   l2: E = -64 + 66 = 2 < 3.3; sells 1 @66: C = 2; fee 0.66 all to the fee pool.
    tiers = [["0.1", "0.5"], ["0.2", "0"]]
    inputs = [
        market("M", "0.01", vol_tiers=tiers, vol_lambda="0.5"),
        oracle("M", "100"),
        dep("s", "12"),
        dep("l1", "15"),
        dep("l2", "36"),
        dep("w", "1000"),
        fill("f1", "M", "100", "1", "w", "s"),
        fill("f2", "M", "100", "1", "l1", "w"),
        fill("f3", "M", "100", "1", "l2", "w"),
        oracle("M", "110"),
        oracle("M", "88"),
        oracle("M", "66"),
    ]
    events, state = run_both(inputs, rules=2)
    assert events == [
        liq(10, "s", "-1", "-110", "110", "1.1", "1.1"),
        liq(11, "l1", "1", "88", "88", "0.88", "0.44"),
        liq(12, "l2", "1", "66", "66", "0.66", "0"),
    ]
    # Fund: +110 + 1.1 - 88 + 0.44 - 66 = -42.46, q = -1 + 1 + 1 = 1.
    cash = cash_of(state)
    assert cash["fee-pool"] == ("1.1", {})
    assert cash["insurance-fund"] == ("-42.46", {"M": "1"})
    assert (cash["s"][0], cash["l1"][0], cash["l2"][0]) == ("0.9", "2.12", "1.34")


@pytest.mark.parametrize(
    ("vol_e16", "mark", "price", "lam", "want_e16"),
    [
        # (4-3)^2/3^2 = 1/9; 0.05/9 = 0.00555...: the 17th digit 5 (then 5s) rounds up.
        (0, "3", "4", "0.05", 55_555_555_555_556),
        # p = m: v decays by (1 - lambda): 0.0001 * 0.95 = 0.000095 exactly.
        (1_000_000_000_000, "7", "7", "0.05", 950_000_000_000),
        # lambda = 1: v is the last squared return: (1/2)^2 = 0.25.
        (123, "2", "1", "1", 2_500_000_000_000_000),
    ],
)
def test_volatility_update_is_exact_then_rounded(
    vol_e16: int, mark: str, price: str, lam: str, want_e16: int
) -> None:
    def e8(text: str) -> int:
        whole, _, frac = text.partition(".")
        return int(whole) * E8 + int(frac.ljust(8, "0") or 0)

    assert next_volatility_e16(vol_e16, e8(mark), e8(price), e8(lam)) == want_e16
