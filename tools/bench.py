"""Benchmarks for issue 5. Each prints its numbers; BENCHMARKS.md records the results.

    python tools/bench.py all                      # the full suite (takes a while)
    python tools/bench.py replay --events 1000000 --accounts 100000 --runs 3
    python tools/bench.py tick --accounts 1000000 --ticks 2000 --scan-ticks 5
    python tools/bench.py restart --accounts 1000000 --tail 1000000
    python tools/bench.py --smoke all              # the CI-sized version (ratios only)

Timings use time.perf_counter on one core; medians over runs. Nothing here is a test:
the engine's correctness tests and invariant checks run on the same code paths.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clearing.engine import (  # noqa: E402
    EngineCore,
    load_engine,
    make_engine,
    native_available,
)
from clearing.heap import settle_heap  # noqa: E402
from clearing.sequencer import Sequencer  # noqa: E402
from clearing.snapshot import load_latest  # noqa: E402
from tools.gen_events import generate  # noqa: E402

# The CI smoke run must stay in seconds; these sizes keep the index-vs-scan ratio visible.
SMOKE = {"events": 30_000, "accounts": 5_000, "tick_accounts": 20_000, "ticks": 200}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# -- 1. replay throughput --------------------------------------------------------------


def bench_replay(
    events: int, accounts: int, markets: int, runs: int, core: str
) -> dict[str, object]:
    """Generate a journal with `clearing ingest`, then time `clearing replay JOURNAL`."""
    work = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        inputs = work / "inputs.jsonl"
        with open(inputs, "wb") as out:
            for raw in generate(events, accounts, markets, seed=1):
                out.write(raw + b"\n")
        journal = work / "journal"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "clearing.cli", "ingest", str(inputs), "--journal",
             str(journal), "--snapshot-every", str(10**9), "--core", core],
            check=True, cwd=ROOT, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        ingest_s = time.perf_counter() - started
        timings = []
        cpu_timings = []
        for _ in range(runs):
            # CPU seconds of the replay process as well as wall time: on a shared machine
            # the wall time measures the neighbours too.
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "clearing.cli", "replay", str(journal), "-q",
                 "--events", os.devnull, "--no-verify-outputs", "--core", core],
                check=True, cwd=ROOT,
            )  # fmt: skip
            timings.append(time.perf_counter() - started)
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_timings.append(
                cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime
            )
        median_s = statistics.median(timings)
        median_cpu_s = statistics.median(cpu_timings)
        return {
            "core": core,
            "events": events,
            "accounts": accounts,
            "markets": markets,
            "ingest_s": round(ingest_s, 2),
            "ingest_events_per_s": round(events / ingest_s),
            "replay_runs_s": [round(t, 2) for t in timings],
            "replay_median_s": round(median_s, 2),
            "replay_events_per_s": round(events / median_s),
            "replay_cpu_runs_s": [round(t, 2) for t in cpu_timings],
            "replay_events_per_cpu_s": round(events / median_cpu_s),
            "load_average": os.getloadavg(),
            "goal_events_per_s": 250_000,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- 2. tick latency at scale, and 5. memory per position --------------------------------


def _one_market_population(accounts: int) -> Iterator[bytes]:
    """`accounts` accounts, each holding one position in one market, leverage spread so a
    tick at a time liquidates only a few: pairs of (long, short) with staggered cash."""
    yield (b'{"type":"market","market":"BTC-PERP","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}')
    yield b'{"type":"deposit","account":"insurance-fund","amount":"100000000"}'
    yield b'{"type":"oracle","market":"BTC-PERP","price":"100"}'
    for pair in range(accounts // 2):
        # Cash per unit in 1e-4 steps, so every account has its own liquidation mark: 1 in
        # 500 thinly margined (5.5..11: liquidated by a move of 1-7%), the rest 20..60.
        thin = pair % 500 == 0
        low, spread = (55_000, 55_000) if thin else (200_000, 400_000)
        cash_long = low + (pair * 7919) % spread
        cash_short = low + (pair * 104729) % spread
        yield b'{"type":"deposit","account":"L%d","amount":"%d.%04d"}' % (
            pair,
            *divmod(cash_long, 10_000),
        )
        yield b'{"type":"deposit","account":"S%d","amount":"%d.%04d"}' % (
            pair,
            *divmod(cash_short, 10_000),
        )
        yield (
            b'{"type":"fill","fill_id":"p%d","market":"BTC-PERP","price":"100","qty":"1",'
            b'"buyer":"L%d","seller":"S%d"}' % (pair, pair, pair)
        )


def build_population(accounts: int, liquidation_scan: bool, core: str = "python") -> EngineCore:
    engine = make_engine(core, liquidation_scan)
    apply = engine.apply_encoded
    for raw in _one_market_population(accounts):
        apply(raw)
    return engine


def _tick_prices(count: int) -> list[int]:
    """A gentle random walk around 100: most ticks liquidate nobody, some a handful."""
    import random

    rng = random.Random(5)
    price = 100.0
    prices = []
    for _ in range(count):
        price = min(130.0, max(70.0, price * (1 + rng.gauss(0, 0.003))))
        prices.append(round(price * 100))
    return prices


def _time_ticks(engine: EngineCore, prices: list[int]) -> tuple[list[float], int]:
    samples, per_tick = _time_ticks_detailed(engine, prices)
    return samples, sum(per_tick)


def _time_ticks_detailed(engine: EngineCore, prices: list[int]) -> tuple[list[float], list[int]]:
    """Engine time per tick, and the liquidations each tick caused."""
    samples = []
    liquidations = []
    # As the daemon runs: the heap settled once (after recovery), the collector on, so its
    # young-generation passes land in the samples like they would in production.
    settle_heap()
    apply = engine.apply_encoded
    for cents in prices:
        raw = b'{"type":"oracle","market":"BTC-PERP","price":"%d.%02d"}' % divmod(cents, 100)
        started = time.perf_counter()
        outputs = apply(raw)
        samples.append(time.perf_counter() - started)
        liquidations.append(sum(1 for e in outputs if e.startswith(b'{"type":"liquidation"')))
    return samples, liquidations


def bench_tick(accounts: int, ticks: int, scan_ticks: int, core: str) -> dict[str, object]:
    gc.collect()
    rss_before = _rss_bytes()
    started = time.perf_counter()
    engine = build_population(accounts, liquidation_scan=False, core=core)
    build_s = time.perf_counter() - started
    gc.collect()
    rss_after = _rss_bytes()
    positions = engine.summary().positions
    prices = _tick_prices(ticks)
    index_samples, per_tick = _time_ticks_detailed(engine, prices)
    liquidated = sum(per_tick)
    quiet = [t for t, n in zip(index_samples, per_tick, strict=True) if n == 0]
    busy = [(t, n) for t, n in zip(index_samples, per_tick, strict=True) if n > 0]
    engine.check_invariants()
    # The full scan, on the same state, for the first few ticks of the same path.
    snapshot = engine.dump_state()
    del engine
    gc.collect()
    # The full-scan baseline: every holder checked on a mark move.
    baseline = load_engine(snapshot, core, liquidation_scan=True)
    scan_samples, _ = _time_ticks(baseline, prices[:scan_ticks])
    index_p50 = statistics.median(index_samples)
    scan_p50 = statistics.median(scan_samples)
    return {
        "core": core,
        "accounts": accounts,
        "positions": positions,
        "build_s": round(build_s, 1),
        "ticks": ticks,
        "liquidations": liquidated,
        "index_p50_ms": round(index_p50 * 1e3, 4),
        "index_p99_ms": round(_percentile(index_samples, 0.99) * 1e3, 4),
        "index_max_ms": round(max(index_samples) * 1e3, 3),
        "quiet_ticks": len(quiet),
        "quiet_p50_ms": round(statistics.median(quiet) * 1e3, 4) if quiet else None,
        "quiet_p99_ms": round(_percentile(quiet, 0.99) * 1e3, 4) if quiet else None,
        "liquidating_ticks": len(busy),
        "liquidations_per_liquidating_tick_max": max((n for _, n in busy), default=0),
        "us_per_liquidation_median": round(statistics.median(t / n for t, n in busy) * 1e6, 1)
        if busy
        else None,
        "scan_ticks": scan_ticks,
        "scan_p50_ms": round(scan_p50 * 1e3, 2),
        "scan_over_index_p50": round(scan_p50 / index_p50),
        "rss_per_position_bytes": round((rss_after - rss_before) / max(positions, 1)),
        "goals": {"p99_ms": 1.0, "scan_ratio": 1000, "bytes_per_position": 300},
    }


# -- 4. restart --------------------------------------------------------------------------


def bench_restart(accounts: int, tail: int, core: str) -> dict[str, object]:
    """Snapshot of `accounts` accounts (one position each) + a journal tail of `tail`
    mixed events; time Sequencer.open_local (snapshot load + tail replay), opening the
    journal with the tail check (the restart setting) and with the full scan."""
    work = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    try:
        journal, snaps = str(work / "journal"), str(work / "snapshots")
        sequencer, _ = Sequencer.open_local(journal, snaps, core=core, snapshot_every_inputs=10**12)
        batch: list[tuple[str, bytes]] = []
        for number, raw in enumerate(_one_market_population(accounts)):
            batch.append((f"bench:{number}", raw))
            if len(batch) == 20_000:
                sequencer.submit(batch)
                batch = []
        sequencer.submit(batch)
        gc.collect()
        started = time.perf_counter()
        sequencer.snapshot()
        snapshot_write_s = time.perf_counter() - started
        snapshot_seq = sequencer.engine.seq
        batch = []
        for number, raw in enumerate(_tail_events(tail, accounts)):
            batch.append((f"tail:{number}", raw))
            if len(batch) == 20_000:
                sequencer.submit(batch)
                batch = []
        sequencer.submit(batch)
        sequencer.close(snapshot=False)
        timings = []
        full_timings = []
        for _ in range(2):
            for mode, runs in (("tail", timings), ("full", full_timings)):
                gc.collect()
                started = time.perf_counter()
                restarted, recovery = Sequencer.open_local(
                    journal, snaps, core=core, scan_mode=mode
                )
                runs.append(time.perf_counter() - started)
                assert recovery.snapshot_seq == snapshot_seq and recovery.replayed > 0
                restarted.close(snapshot=False)
        snapshot_bytes = sum(f.stat().st_size for f in Path(snaps).glob("*.snap"))
        # The restart split in two: snapshot read + state load + index build, then the tail.
        load_timings = []
        for _ in range(2):
            gc.collect()
            started = time.perf_counter()
            snapshot = load_latest(snaps)
            assert snapshot is not None
            load_engine(snapshot.state, core)
            load_timings.append(time.perf_counter() - started)
            del snapshot
        load_s = statistics.median(load_timings)
        restart_s = statistics.median(timings)
        return {
            "core": core,
            "accounts": accounts,
            "snapshot_bytes": snapshot_bytes,
            "snapshot_write_s": round(snapshot_write_s, 2),
            "snapshot_load_s": round(load_s, 2),
            "tail_replay_s": round(restart_s - load_s, 2),
            "tail_events_per_s": round(recovery.replayed / max(restart_s - load_s, 1e-9)),
            "tail_events": recovery.replayed,
            "restart_runs_s": [round(t, 2) for t in timings],
            "restart_median_s": round(statistics.median(timings), 2),
            # The same restart with every journal record verified before recovery.
            "restart_full_scan_runs_s": [round(t, 2) for t in full_timings],
            "restart_full_scan_median_s": round(statistics.median(full_timings), 2),
            "goal_s": 10,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tail_events(count: int, accounts: int) -> Iterator[bytes]:
    """Fills between existing accounts and oracle ticks, on the population's market."""
    import random

    rng = random.Random(9)
    pairs = accounts // 2
    price = 100.0
    for number in range(count):
        if number % 4 == 3:
            price = min(110.0, max(90.0, price * (1 + rng.gauss(0, 0.0005))))
            yield b'{"type":"oracle","market":"BTC-PERP","price":"%.2f"}' % price
        else:
            buyer = rng.randrange(pairs)
            yield (
                b'{"type":"fill","fill_id":"t%d","market":"BTC-PERP","price":"%.2f",'
                b'"qty":"0.01","buyer":"L%d","seller":"S%d"}'
                % (number, price, buyer, rng.randrange(pairs))
            )


# -- driver ------------------------------------------------------------------------------


def _run(name: str, fn: Callable[[], dict[str, object]]) -> dict[str, object]:
    print(f"== {name}", file=sys.stderr, flush=True)
    result = fn()
    print(json.dumps({name: result}), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI-sized runs")
    parser.add_argument(
        "--core",
        choices=("native", "python"),
        default="native" if native_available() else "python",
        help="engine core to measure (default: native when installed)",
    )
    sub = parser.add_subparsers(dest="bench", required=True)
    replay = sub.add_parser("replay")
    replay.add_argument("--events", type=int, default=1_000_000)
    replay.add_argument("--accounts", type=int, default=100_000)
    replay.add_argument("--markets", type=int, default=20)
    replay.add_argument("--runs", type=int, default=3)
    tick = sub.add_parser("tick")
    tick.add_argument("--accounts", type=int, default=1_000_000)
    tick.add_argument("--ticks", type=int, default=2_000)
    tick.add_argument("--scan-ticks", type=int, default=5)
    restart = sub.add_parser("restart")
    restart.add_argument("--accounts", type=int, default=1_000_000)
    restart.add_argument("--tail", type=int, default=1_000_000)
    sub.add_parser("all")
    args = parser.parse_args(argv)
    print(json.dumps({"machine": machine()}), flush=True)
    smoke = args.smoke
    if args.bench in ("replay", "all"):
        events = SMOKE["events"] if smoke else getattr(args, "events", 1_000_000)
        accounts = SMOKE["accounts"] if smoke else getattr(args, "accounts", 100_000)
        _run("replay", lambda: bench_replay(events, accounts, getattr(args, "markets", 20),
                                           1 if smoke else getattr(args, "runs", 3),
                                           args.core))  # fmt: skip
    if args.bench in ("tick", "all"):
        accounts = SMOKE["tick_accounts"] if smoke else getattr(args, "accounts", 1_000_000)
        ticks = SMOKE["ticks"] if smoke else getattr(args, "ticks", 2_000)
        scan_ticks = 20 if smoke else getattr(args, "scan_ticks", 5)
        _run("tick", lambda: bench_tick(accounts, ticks, scan_ticks, args.core))
    if args.bench in ("restart", "all"):
        accounts = SMOKE["tick_accounts"] if smoke else getattr(args, "accounts", 1_000_000)
        tail = SMOKE["events"] if smoke else getattr(args, "tail", 1_000_000)
        _run("restart", lambda: bench_restart(accounts, tail, args.core))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_rss_bytes": peak}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
