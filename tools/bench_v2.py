"""Benchmarks for rules version 2 (issue 18). Each prints its numbers as JSON lines;
BENCHMARKS.md records the results.

    python tools/bench_v2.py tick --accounts 1000000 --ticks 2000   # liq_step = 0.25
    python tools/bench_v2.py adl --accounts 1000000                 # one ADL pass
    python tools/bench_v2.py funding --accounts 1000000 --runs 5    # one funding input
    python tools/bench_v2.py --smoke all                            # CI-sized

Every population is one market of `accounts` single-position accounts (pairs of a long
and a short), as tools/bench.py's tick benchmark builds it, on a version-2 ledger. Times
are the engine's time for one input (time.perf_counter around `apply_encoded`).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clearing.engine import make_engine, native_available  # noqa: E402
from clearing.engine.native import NativeEngine  # noqa: E402
from tools.bench import _percentile, _tick_prices, _time_ticks_detailed, machine  # noqa: E402

SMOKE_ACCOUNTS = 20_000
MARKET = b"BTC-PERP"


def _population(accounts: int, v2_fields: bytes, fund: int, thin: bool) -> Iterator[bytes]:
    """`accounts` accounts holding one position each at 100, cash per unit staggered so
    each has its own liquidation mark; with `thin`, 1 in 500 pairs is thinly margined
    (a move of 1-7% liquidates it), else every account survives a 15% move."""
    yield (
        b'{"type":"market","market":"BTC-PERP","imr":"0.1","mmr":"0.05","liq_fee":"0.01"'
        + v2_fields
        + b"}"
    )
    if fund:
        yield b'{"type":"deposit","account":"insurance-fund","amount":"%d"}' % fund
    yield b'{"type":"oracle","market":"BTC-PERP","price":"100"}'
    for pair in range(accounts // 2):
        low, spread = (55_000, 55_000) if thin and pair % 500 == 0 else (200_000, 400_000)
        for prefix, factor in ((b"L", 7919), (b"S", 104729)):
            cash = low + (pair * factor) % spread
            yield b'{"type":"deposit","account":"%s%d","amount":"%d.%04d"}' % (
                prefix,
                pair,
                *divmod(cash, 10_000),
            )
        yield (
            b'{"type":"fill","fill_id":"p%d","market":"BTC-PERP","price":"100","qty":"1",'
            b'"buyer":"L%d","seller":"S%d"}' % (pair, pair, pair)
        )


def _build(core: str, lines: Iterator[bytes]) -> tuple[NativeEngine | object, float]:
    engine = make_engine(core, rules_version=2)
    apply = engine.apply_encoded
    started = time.perf_counter()
    for raw in lines:
        apply(raw)
    return engine, time.perf_counter() - started


def bench_tick(accounts: int, ticks: int, core: str) -> dict[str, object]:
    """Oracle ticks on a market with liq_step = 0.25: thin accounts are cut a quarter at
    a time (several steps per account in one input when one is not enough)."""
    engine, build_s = _build(core, _population(accounts, b',"liq_step":"0.25"', 10**8, True))
    prices = _tick_prices(ticks)
    samples, per_tick = _time_ticks_detailed(engine, prices)  # type: ignore[arg-type]
    engine.check_invariants()  # type: ignore[attr-defined]
    return {
        "core": core,
        "rules": 2,
        "accounts": accounts,
        "liq_step": "0.25",
        "build_s": round(build_s, 1),
        "ticks": ticks,
        "liquidation_events": sum(per_tick),
        "p50_ms": round(statistics.median(samples) * 1e3, 4),
        "p99_ms": round(_percentile(samples, 0.99) * 1e3, 4),
        "max_ms": round(max(samples) * 1e3, 3),
        "goal_p99_ms": 1.0,
    }


def bench_adl(accounts: int, core: str) -> dict[str, object]:
    """One ADL pass over a market with `accounts` holders: a whale long of 1000 units at
    100 on 5000 of cash (E = MM) is closed out on a 10% drop with the fund empty, and its
    5000 deficit and 1000 units go to the most profitable shorts (every short is a
    candidate; each takes one unit and pays 5)."""
    lines = _population(accounts, b',"loss_policy":"adl"', 0, False)
    engine, build_s = _build(core, lines)
    setup = (
        b'{"type":"deposit","account":"whale","amount":"5000"}',
        b'{"type":"deposit","account":"maker","amount":"100000"}',
        b'{"type":"fill","fill_id":"w","market":"BTC-PERP","price":"100","qty":"1000",'
        b'"buyer":"whale","seller":"maker"}',
    )
    for raw in setup:
        engine.apply_encoded(raw)  # type: ignore[attr-defined]
    gc.collect()
    tick = b'{"type":"oracle","market":"BTC-PERP","price":"90"}'
    cpu_started = time.process_time()
    started = time.perf_counter()
    outputs = engine.apply_encoded(tick)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    engine.check_invariants()  # type: ignore[attr-defined]
    kinds = [json.loads(raw)["type"] for raw in outputs]
    if kinds.count("adl") == 0:
        raise SystemExit("bench_v2 adl: the tick ran no ADL pass; the set-up is wrong")
    return {
        "core": core,
        "rules": 2,
        "holders": accounts + 2,
        "build_s": round(build_s, 1),
        "adl_events": kinds.count("adl"),
        "liquidations": kinds.count("liquidation"),
        "tick_with_adl_ms": round(elapsed * 1e3, 2),
        # CPU time of this process: on a shared machine the wall time counts the
        # neighbours' share of the cores too.
        "tick_with_adl_cpu_ms": round(cpu * 1e3, 2),
        "goal_ms": 50,
    }


def bench_funding(accounts: int, runs: int, core: str) -> dict[str, object]:
    """A `funding` input over a market with `accounts` holders (every one pays or
    receives, so every one is re-indexed)."""
    engine, build_s = _build(core, _population(accounts, b"", 10**8, False))
    gc.collect()
    samples = []
    cpu_samples = []
    for run in range(runs):
        rate = b"0.0001" if run % 2 == 0 else b"-0.0001"
        raw = b'{"type":"funding","market":"BTC-PERP","rate":"%s"}' % rate
        cpu_started = time.process_time()
        started = time.perf_counter()
        engine.apply_encoded(raw)  # type: ignore[attr-defined]
        samples.append(time.perf_counter() - started)
        cpu_samples.append(time.process_time() - cpu_started)
    engine.check_invariants()  # type: ignore[attr-defined]
    return {
        "core": core,
        "rules": 2,
        "holders": accounts,
        "build_s": round(build_s, 1),
        "runs_ms": [round(t * 1e3, 1) for t in samples],
        "median_ms": round(statistics.median(samples) * 1e3, 1),
        "cpu_runs_ms": [round(t * 1e3, 1) for t in cpu_samples],
        "cpu_median_ms": round(statistics.median(cpu_samples) * 1e3, 1),
        "goal_ms": 200,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI-sized runs")
    parser.add_argument(
        "--core",
        choices=("native", "python"),
        default="native" if native_available() else "python",
        help="engine core to measure (default: native when installed)",
    )
    parser.add_argument("bench", choices=("tick", "adl", "funding", "all"))
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--ticks", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    accounts = SMOKE_ACCOUNTS if args.smoke else args.accounts
    print(json.dumps({"machine": machine()}), flush=True)
    if args.bench in ("tick", "all"):
        ticks = 200 if args.smoke else args.ticks
        print(json.dumps({"tick_v2": bench_tick(accounts, ticks, args.core)}), flush=True)
        gc.collect()
    if args.bench in ("adl", "all"):
        print(json.dumps({"adl": bench_adl(accounts, args.core)}), flush=True)
        gc.collect()
    if args.bench in ("funding", "all"):
        print(json.dumps({"funding": bench_funding(accounts, args.runs, args.core)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
