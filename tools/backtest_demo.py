"""Back-test of ``clearing risk`` on the demo's ledger (docs/fund-risk.md shows the output).

    clearing demo --no-live --dir /tmp/demo
    python tools/backtest_demo.py /tmp/demo

Finds the demo's scripted crash in its journal (the first oracle tick that moves a mark
down by more than 5%), asks ``clearing risk`` and ``clearing stress`` about the ledger
just before it (``--until`` the seq before that tick), and adds up what the crash
actually cost: the recorded outputs from the crash tick to the fund's recapitalisation
(the first deposit to ``insurance-fund`` after it), and the fund's equity before and
after. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from fractions import Fraction
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgspec

from clearing.journal import LocalJournal
from clearing.risk._history import oracle_tick
from clearing.risk._outcome import StepOutputs, parse_e16, summarise
from clearing.risk._render import cash
from clearing.risk._source import load_ledger

CRASH_MOVE = Fraction(-5, 100)  # a tick this far down from the previous one is the crash
RISK_RUNS = (
    ("1m", "10s", "1"),
    ("1m", "10s", "3"),
    ("5m", "10s", "1"),
    ("5m", "10s", "3"),
)


def _find_crash(journal_dir: str) -> tuple[int, int, str]:
    """(crash seq, recapitalisation seq, crashed market)."""
    journal = LocalJournal(journal_dir, readonly=True, scan_mode="tail")
    last: dict[str, int] = {}
    crash_seq, market = 0, ""
    try:
        for record in journal.read():
            if crash_seq and b'"insurance-fund"' in record.payload:
                payload = msgspec.json.decode(record.payload)
                if payload.get("type") == "deposit":
                    return crash_seq, record.seq, market
            tick = oracle_tick(record.payload)
            if tick is None or crash_seq:
                continue
            before = last.get(tick.market)
            if before is not None and Fraction(tick.price_e8 - before, before) < CRASH_MOVE:
                crash_seq, market = record.seq, tick.market
            last[tick.market] = tick.price_e8
    finally:
        journal.close()
    raise SystemExit(f"{journal_dir}: no crash followed by a fund deposit found")


def _actual(journal_dir: str, first: int, last: int) -> dict[str, Any]:
    journal = LocalJournal(journal_dir, readonly=True, scan_mode="tail")
    try:
        steps = [
            StepOutputs("all", r.payload, r.outputs.splitlines()) for r in journal.read(first, last)
        ]
    finally:
        journal.close()
    total = summarise(steps).total
    before = load_ledger(journal_dir, first - 1, "auto").engine.summary()
    after = load_ledger(journal_dir, last, "auto").engine.summary()
    return {
        "liquidations": total.liquidations,
        "accounts": total.accounts_liquidated,
        "fund_draw_e16": total.fund_draw_e16,
        "clawback_e16": total.clawback_e16 + total.adl_e16,
        "bad_debt_e16": total.bad_debt_e16,
        "fund_before_e16": before.fund_equity_e16,
        "fund_after_e16": after.fund_equity_e16,
        "marks_before": {m.market: m.mark_e8 for m in before.markets},
        "marks_after": {m.market: m.mark_e8 for m in after.markets},
    }


def _cli(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "clearing.cli", *args, "--json"],
        capture_output=True,
        check=True,
        text=True,
    )
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_dir")
    args = parser.parse_args(argv)
    journal_dir = os.path.join(args.demo_dir, "journal")
    crash, recap, market = _find_crash(journal_dir)
    before = str(crash - 1)
    actual = _actual(journal_dir, crash, recap - 1)
    print(f"crash: {market} tick at seq {crash}; fund recapitalised at seq {recap}\n")
    print("| what | fund draws | clawbacks + ADL | bad debt | fund equity loss |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for horizon, step, scale in RISK_RUNS:
        report = _cli(
            "risk",
            journal_dir,
            "--until",
            before,
            "--horizon",
            horizon,
            "--step",
            step,
            "--scale",
            scale,
        )
        fd, cl, bd, el = (
            report[k]["99.9"]["es_e16"]
            for k in ("fund_draws", "clawback_and_adl", "bad_debt", "fund_equity_loss")
        )
        print(
            f"| `risk --horizon {horizon} --step {step} --scale {scale}`: ES 99.9% of "
            f"{report['scenarios']} scenarios; coverage "
            f"{report['coverage_ratio'] or 'unbounded'}, equity coverage "
            f"{report['equity_coverage_ratio'] or 'unbounded'} "
            f"| {cash(fd)} | {cash(cl)} | {cash(bd)} | {cash(el)} |"
        )
    mark_before = actual["marks_before"][market]
    mark_after = actual["marks_after"][market]
    move = Fraction(mark_after - mark_before, mark_before) * 100
    pct = f"{float(move):.2f}"
    stress = _cli("stress", journal_dir, "--until", before, "--shock", f"{market}={pct}%")
    total = {
        k: parse_e16(v) for k, v in stress["total"].items() if k != "market" and isinstance(v, str)
    }
    fell = parse_e16(stress["fund_equity_before"]) - parse_e16(stress["fund_equity_after"])
    print(
        f"| `stress --shock {market}={pct}%` (the crash's net move, in one tick) "
        f"| {cash(total['fund_draw'])} | {cash(total['clawback'] + total['adl'])} "
        f"| {cash(total['bad_debt'])} "
        f"| {cash(fell)} |"
    )
    print(
        f"| **actual**, seq {crash}..{recap - 1} ({actual['liquidations']} liquidations of "
        f"{actual['accounts']} accounts) | {cash(actual['fund_draw_e16'])} "
        f"| {cash(actual['clawback_e16'])} | {cash(actual['bad_debt_e16'])} "
        f"| {cash(actual['fund_before_e16'] - actual['fund_after_e16'])} |"
    )
    print(f"\nfund equity just before the crash: {cash(actual['fund_before_e16'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
