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
    jsonl,
    liq,
    market,
    oracle,
    state,
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
    # (use_index=False) runs the exact check on every holder and must agree.
    scan, indexed = Engine(use_index=False), Engine()
    for raw in jsonl(*lines).splitlines():
        assert scan.apply(raw) == indexed.apply(raw), raw
