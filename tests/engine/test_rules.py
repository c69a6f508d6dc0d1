"""One fast, deterministic, hand-worked test per SPEC rule that only the random streams
caught before (found by hand mutants of the Python core run against the fixed tests).

Like ``test_scenarios``, every expected event and state is worked out from the SPEC text
in the comments, and each test runs on every installed core.
"""

from __future__ import annotations

from clearing.engine import Engine
from tests.engine.test_scenarios import (
    Line,
    acct,
    check,
    claw,
    deposit,
    fill,
    held,
    jsonl,
    liq,
    market,
    oracle,
    rej,
    state,
    wdr,
    withdraw,
)


def test_clawback_skips_holders_whose_base_is_not_positive() -> None:
    """§4 step 4: only accounts with a positive profit base pay, and a negative base does
    not shrink the total the others' shares are worked out from."""
    lines: list[Line] = [
        market("M", "0.1", "0.05", "0"),  # 1
        deposit("a", "10"),  # 2
        deposit("p", "1000"),  # 3
        deposit("n", "1000"),  # 4
        deposit("w", "1000"),  # 5
        # 6: a C -90, q 1. p C 1100, q -1, K 100. Mark 100 (no tick yet: the fill price).
        fill("f1", "M", "100", "1", "a", "p"),
        # 7: n C 900, q 1, K -100. w C 1100, q -1, K 100.
        fill("f2", "M", "100", "1", "n", "w"),
        # 8: m 50. a E = -90 + 50 = -40 < MM 2.5: close-out at the mark (no book), proceeds
        #   50, C -40, fee 0. Fund C -50, q 1: A = max(0, -50 + 50) = 0, no draw. R = 40.
        #   Bases at m 50: p -50 + 100 = 50, w 50, n 50 - 100 = -50 (not positive: out).
        #   Total 100 > R: pro rata p 20, w 20 (with n counted: total 50, shares 40/40/-40).
        oracle("M", "50"),
    ]
    expected = [
        liq(8, "a", "M", "1", "50", "50", "0"),
        claw(8, "p", "20", "a"),
        claw(8, "w", "20", "a"),
    ]
    # 1080 + 900 + 1080 - 50 = 3010 = deposits; positions -1 + 1 - 1 + 1 = 0.
    final = state(
        {
            "a": acct("0"),
            "p": acct("1080", {"M": "-1"}),
            "n": acct("900", {"M": "1"}),
            "w": acct("1080", {"M": "-1"}),
            "insurance-fund": acct("-50", {"M": "1"}),
        },
        {"M": "50"},
    )
    check(lines, expected, final)


def test_equity_exactly_at_maintenance_is_not_liquidatable() -> None:
    """§4: liquidatable means E < MM, strictly. A two-market account (checked exactly, not
    through a one-position threshold) sits at E = MM, then one unit below."""
    lines: list[Line] = [
        market("A", "0.2", "0.1", "0"),  # 1
        market("B", "0.2", "0.1", "0"),  # 2
        deposit("e", "20"),  # 3
        deposit("mm", "100000"),  # 4
        deposit("insurance-fund", "1000"),  # 5
        fill("f1", "A", "100", "1", "e", "mm"),  # 6: e C -80, E 20, MM 10
        # 7: e C -180, E = -180 + 100 + 100 = 20 = MM 0.1 * 200: not liquidatable.
        fill("f2", "B", "100", "1", "e", "mm"),
        # 8: E = -180 + 100 + 99.99999999 = 19.99999999 < MM 19.999999999: liquidated.
        #   Close-outs at the marks (no book), A then B: proceeds 100 and 99.99999999,
        #   C = 19.99999999 >= 0, fee 0: the account keeps its cash.
        oracle("B", "99.99999999"),
    ]
    expected = [
        liq(8, "e", "A", "1", "100", "100", "0"),
        liq(8, "e", "B", "1", "99.99999999", "99.99999999", "0"),
    ]
    # 19.99999999 + 100200 + 800.00000001 = 101020 = deposits.
    final = state(
        {
            "e": acct("19.99999999"),
            "mm": acct("100200", {"A": "-1", "B": "-1"}),
            "insurance-fund": acct("800.00000001", {"A": "1", "B": "1"}),
        },
        {"A": "100", "B": "99.99999999"},
    )
    check(lines, expected, final)
    # The index proves E = MM safe without the exact check; the scan baseline
    # (liquidation_scan=True) runs the exact check on every holder and must agree.
    scan, indexed = Engine(liquidation_scan=True), Engine()
    for raw in jsonl(*lines).splitlines():
        assert scan.apply(raw) == indexed.apply(raw), raw


def test_oracle_guard_boundaries_and_a_market_update_clearing_the_held_tick() -> None:
    """§5 at its exact edges: a move of exactly g*m is a normal tick, exactly g*h confirms
    a held price, one unit more is held; a market update forgets the held price."""
    lines: list[Line] = [
        market("G", "0.1", "0.05", "0", "0.05"),  # 1
        oracle("G", "200"),  # 2: no mark yet: accepted, m 200
        oracle("G", "210"),  # 3: |10| = 0.05 * 200: normal, m 210
        oracle("G", "220.5"),  # 4: |10.5| = 0.05 * 210: normal, m 220.5
        oracle("G", "240"),  # 5: |19.5| > 11.025: held, h 240
        oracle("G", "252"),  # 6: |252 - 240| = 12 = 0.05 * 240: confirmed, m 252, h cleared
        oracle("G", "264.60000001"),  # 7: |12.60000001| > 12.6: held, h 264.60000001
        oracle("G", "200"),  # 8: |64.6..| > 13.23 and |52| > 12.6: held, h 200
        oracle("G", "210.00000001"),  # 9: |10.00000001| > 10 and |41.99999999| > 12.6: held
        market("G", "0.1", "0.05", "0", "0.05"),  # 10: same parameters: h cleared, m kept
        # 11: |215 - 252| = 37 > 12.6: held. (Against the old h 210.00000001 it would be
        #   |4.99999999| <= 10.5: confirmed.)
        oracle("G", "215"),
    ]
    expected = [
        held(5, "G", "240"),
        held(7, "G", "264.60000001"),
        held(8, "G", "200"),
        held(9, "G", "210.00000001"),
        held(11, "G", "215"),
    ]
    check(lines, expected, state({}, {"G": "252"}))


def test_withdraw_up_to_exactly_the_cash_of_a_flat_account() -> None:
    """§3: a withdrawal is accepted iff amount <= C (and E - amount >= IM)."""
    lines: list[Line] = [
        deposit("x", "5"),  # 1
        withdraw("x", "5.00000001"),  # 2: > C 5: insufficient_cash
        withdraw("x", "5"),  # 3: = C, flat (IM 0): accepted, C 0
        withdraw("x", "0.00000001"),  # 4: > C 0: insufficient_cash
    ]
    expected = [rej(2, "insufficient_cash"), wdr(3, "x", "5"), rej(4, "insufficient_cash")]
    check(lines, expected, state({"x": acct("0")}, {}))


def test_reserved_accounts_on_either_side_of_a_fill() -> None:
    """§2/§3: fee-pool and bad-debt cannot trade, as buyer or as seller; the fund can."""
    lines: list[Line] = [
        market("M", "0.1", "0.05", "0"),  # 1
        deposit("u", "1000"),  # 2
        deposit("insurance-fund", "1000"),  # 3
        fill("r1", "M", "10", "1", "u", "fee-pool"),  # 4: reserved seller
        fill("r2", "M", "10", "1", "u", "bad-debt"),  # 5: reserved seller
        fill("r3", "M", "10", "1", "bad-debt", "u"),  # 6: reserved buyer
        fill("r4", "M", "10", "1", "fee-pool", "u"),  # 7: reserved buyer
        # 8: the fund sells 1 at 10 to u: u C 990, q 1; fund C 1010, q -1. Mark 10.
        fill("r5", "M", "10", "1", "u", "insurance-fund"),
    ]
    expected = [rej(seq, "reserved_account") for seq in (4, 5, 6, 7)]
    final = state(
        {"u": acct("990", {"M": "1"}), "insurance-fund": acct("1010", {"M": "-1"})},
        {"M": "10"},
    )
    check(lines, expected, final)


def test_k_after_a_flip_counts_only_the_opening_part() -> None:
    """§2: when q flips sign, K = -q_new * price; seen through the clawback base."""
    lines: list[Line] = [
        market("M", "0.1", "0.05", "0"),  # 1
        deposit("f", "1000"),  # 2
        deposit("g", "1000"),  # 3
        deposit("a", "10"),  # 4
        deposit("h", "1000"),  # 5
        fill("k1", "M", "100", "2", "f", "g"),  # 6: f C 800, q 2, K -200; g q -2, K 200
        # 7: f sells 3 at 110: C 1130, q -1, flipped: K = -(-1) * 110 = 110 (not 330).
        #   g: C 870, q 1, flipped: K = -110. Mark 110.
        fill("k2", "M", "110", "3", "g", "f"),
        fill("k3", "M", "110", "1", "a", "h"),  # 8: a C -100, q 1; h C 1110, q -1, K 110
        # 9: m 90. a E = -10 < MM 4.5: close-out at the mark, proceeds 90, C -10. Fund C
        #   -90, q 1: A = 0, no draw. R = 10. Bases: f -90 + 110 = 20, h -90 + 110 = 20,
        #   g 90 - 110 < 0. Total 40 > R: f 5, h 5.
        oracle("M", "90"),
    ]
    expected = [
        liq(9, "a", "M", "1", "90", "90", "0"),
        claw(9, "f", "5", "a"),
        claw(9, "h", "5", "a"),
    ]
    # 1125 + 870 + 1105 - 90 = 3010 = deposits; positions -1 + 1 - 1 + 1 = 0.
    final = state(
        {
            "a": acct("0"),
            "f": acct("1125", {"M": "-1"}),
            "g": acct("870", {"M": "1"}),
            "h": acct("1105", {"M": "-1"}),
            "insurance-fund": acct("-90", {"M": "1"}),
        },
        {"M": "90"},
    )
    check(lines, expected, final)


def test_ts_at_the_ends_of_the_signed_64_bit_range() -> None:
    """§3: ts is a JSON integer in the signed 64-bit range; one past either end is invalid."""
    lines: list[Line] = [
        {**deposit("t", "1"), "ts": 2**63 - 1},  # 1: accepted
        {**deposit("t", "1"), "ts": 2**63},  # 2: invalid_field
        {**deposit("t", "1"), "ts": -(2**63)},  # 3: accepted
        {**deposit("t", "1"), "ts": -(2**63) - 1},  # 4: invalid_field
    ]
    expected = [rej(2, "invalid_field"), rej(4, "invalid_field")]
    check(lines, expected, state({"t": acct("2")}, {}))
