"""Benchmarks of ``clearing risk`` and ``clearing stress`` (results in BENCHMARKS.md).

    python tools/bench_risk.py scenarios   # 1,000 scenarios, 100k accounts, 20 markets: <= 60 s
    python tools/bench_risk.py stress      # one stress of a 1M-account ledger: <= 5 s
    python tools/bench_risk.py --smoke all # small sizes, for CI (tests/risk/test_bench_risk.py)

``scenarios`` builds a leveraged ledger in memory (every account holds one position, 8%
a second one; leverage 2x-9.5x; a random-walk oracle history of one tick a minute per
market, before the positions open) and times the same code ``clearing risk`` runs: the
historical horizon scenarios of that history, scaled, through ``run_scenarios`` (a fork
per scenario). ``stress`` builds the 1M-account one-market ledger of ``tools/bench.py``
and times one ``run_scenarios`` call, then the whole ``clearing stress`` command on a
snapshot of it (a new process: loading the snapshot included).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clearing.engine import EngineCore, make_engine
from clearing.risk import run_scenarios
from clearing.risk._history import OracleTick, horizon_scenarios, oracle_tick, sample, to_moves
from clearing.risk._shock import Move
from clearing.snapshot import write_snapshot
from tools.bench import build_population, machine

MINUTE_NS = 60 * 10**9
START_TS_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def _dec(value: float, places: int = 4) -> str:
    return f"{value:.{places}f}".rstrip("0").rstrip(".") or "0"


def leveraged_ledger(accounts: int, markets: int, minutes: int, seed: int) -> Iterator[bytes]:
    """Inputs of the ``scenarios`` ledger (module docstring), deterministic for a seed."""
    rng = random.Random(seed)
    ids = [f"M{i:02d}-PERP" for i in range(markets)]
    prices = {m: rng.uniform(20, 2000) for m in ids}
    ts = START_TS_NS
    for m in ids:
        yield (
            f'{{"type":"market","market":"{m}","imr":"0.1","mmr":"0.05","liq_fee":"0.01",'
            f'"max_oracle_move":"0.2","ts":{ts}}}'
        ).encode()
    yield f'{{"type":"deposit","account":"insurance-fund","amount":"{accounts * 5}"}}'.encode()
    for _ in range(minutes):  # the history: one tick a minute per market, 0.2% a minute
        ts += MINUTE_NS
        for m in ids:
            prices[m] *= 1 + rng.gauss(0, 0.002)
            price = _dec(prices[m])
            yield f'{{"type":"oracle","market":"{m}","price":"{price}","ts":{ts}}}'.encode()
    ts += MINUTE_NS
    for m in ids:  # books 0.5% apart, ten levels a side, to price close-outs
        p = prices[m]
        bids = ",".join(f'["{_dec(p * (1 - 0.005 * k))}","{k * 50}"]' for k in range(1, 11))
        asks = ",".join(f'["{_dec(p * (1 + 0.005 * k))}","{k * 50}"]' for k in range(1, 11))
        yield f'{{"type":"book","market":"{m}","bids":[{bids}],"asks":[{asks}],"ts":{ts}}}'.encode()
    for pair in range(accounts // 2):
        long, short = f"a{2 * pair:07d}", f"a{2 * pair + 1:07d}"
        homes = [ids[pair % markets]] + ([ids[(pair + 7) % markets]] if pair % 12 == 0 else [])
        notional = 0.0
        fills = []
        for n, m in enumerate(homes):
            price = prices[m]
            qty = rng.uniform(500, 5000) / price
            notional += qty * price
            fills.append(
                f'{{"type":"fill","fill_id":"f{pair}-{n}","market":"{m}","price":"{_dec(price)}",'
                f'"qty":"{_dec(qty)}","buyer":"{long}","seller":"{short}","ts":{ts}}}'.encode()
            )
        for account in (long, short):
            cash = _dec(notional / rng.uniform(2, 9.5), 2)  # leverage 2x-9.5x
            yield (
                f'{{"type":"deposit","account":"{account}","amount":"{cash}","ts":{ts}}}'
            ).encode()
        yield from fills


def build(
    accounts: int, markets: int, minutes: int, core: str
) -> tuple[EngineCore, list[OracleTick]]:
    engine = make_engine(core)
    apply = engine.apply_encoded
    ticks: list[OracleTick] = []
    for raw in leveraged_ledger(accounts, markets, minutes, seed=1):
        apply(raw)
        tick = oracle_tick(raw)
        if tick is not None:
            ticks.append(tick)
    return engine, ticks


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its reaped children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bench_scenarios(
    accounts: int, markets: int, count: int, scale: int, core: str
) -> dict[str, object]:
    horizon_minutes = 60
    started = time.perf_counter()
    engine, ticks = build(accounts, markets, count + horizon_minutes + 1, core)
    built_s = time.perf_counter() - started
    marks = {m.market: m.mark_e8 for m in engine.summary().markets if m.mark_e8 is not None}
    started, cpu_before = time.perf_counter(), _cpu_s()
    history = horizon_scenarios(ticks, marks, horizon_minutes * MINUTE_NS, MINUTE_NS)
    chosen = sample(history, count, seed=1)
    moves = [to_moves(s, marks, Fraction(scale)) for s in chosen]
    outcomes = run_scenarios(engine, moves, jobs=os.cpu_count() or 1, measure_fund=True)
    run_s, cpu_s = time.perf_counter() - started, _cpu_s() - cpu_before
    draws = sum(1 for o in outcomes if o.total.fund_draw_e16)
    return {
        "core": core,
        "accounts": engine.account_count(),
        "markets": markets,
        "scenarios": len(outcomes),
        "ticks_per_scenario": sum(len(m) for m in moves) / max(1, len(moves)),
        "scale": scale,
        "liquidations": sum(o.total.liquidations for o in outcomes),
        "scenarios_with_liquidations": sum(1 for o in outcomes if o.total.liquidations),
        "scenarios_drawing_on_fund": draws,
        "build_s": round(built_s, 2),
        "run_s": round(run_s, 2),
        "per_scenario_ms": round(1000 * run_s / max(1, len(outcomes)), 2),
        # CPU seconds of the parent and every child: what the run costs on an idle machine
        # with one core (divide by the cores for the wall time there).
        "cpu_s": round(cpu_s, 2),
        "goal_s": 60,
    }


def bench_stress(accounts: int, core: str) -> dict[str, object]:
    started = time.perf_counter()
    engine = build_population(accounts, liquidation_scan=False, core=core)
    built_s = time.perf_counter() - started
    shock = [Move("BTC-PERP", 90 * 10**8)]  # -10% from 100
    started = time.perf_counter()
    [outcome] = run_scenarios(engine, [shock], jobs=1, measure_fund=True)
    stress_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="bench-risk-") as tmp:
        path = write_snapshot(tmp, engine.dump_state(), engine.seq, b"\0" * 32)
        del engine
        started, cpu_before = time.perf_counter(), _cpu_s()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "clearing.cli",
                "stress",
                path,
                "--shock",
                "BTC-PERP=-10%",
                "--json",
                "--core",
                core,
            ],
            capture_output=True,
            check=True,
        )
        command_s, command_cpu_s = time.perf_counter() - started, _cpu_s() - cpu_before
    reported = json.loads(done.stdout)
    assert reported["total"]["liquidations"] == outcome.total.liquidations
    return {
        "core": core,
        "accounts": accounts,
        "liquidations": outcome.total.liquidations,
        "build_s": round(built_s, 2),
        "stress_s": round(stress_s, 3),
        "command_from_snapshot_s": round(command_s, 2),
        "command_cpu_s": round(command_cpu_s, 2),  # its process and the stress's child
        "goal_s": 5,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("scenarios", "stress", "all"))
    parser.add_argument("--core", default="native", choices=("native", "python"))
    parser.add_argument("--smoke", action="store_true", help="small sizes (CI)")
    parser.add_argument("--scale", type=int, default=3, help="scenario scale (default 3)")
    args = parser.parse_args(argv)
    results: dict[str, object] = {"machine": machine(), "load_average": os.getloadavg()}
    if args.which in ("scenarios", "all"):
        size = (2_000, 4, 50) if args.smoke else (100_000, 20, 1_000)
        results["scenarios"] = bench_scenarios(*size, scale=args.scale, core=args.core)
    if args.which in ("stress", "all"):
        results["stress"] = bench_stress(2_000 if args.smoke else 1_000_000, args.core)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
