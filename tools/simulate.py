"""Deterministic fault simulation of the sequencer, one seed at a time: the command line.

The simulation itself (feeders, faults through a faulty disk, the shadow engine, every
check) is ``testkit.simulator``; its docstring says what is injected and checked.

    python tools/simulate.py --seed 17                     # one seed, 20,000 inputs
    python tools/simulate.py --seeds 1-500 --jobs 2        # 500 seeds x 20,000 = 10M inputs
    python tools/simulate.py --seeds 1-4 --events 5000     # a quick look
    python tools/simulate.py --seed 17 --core native       # the daemon's native fast path

Exit status: 0 when every seed held every property, 1 when one did not (each violation
is printed with the command that reproduces it), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter

# Runnable from a checkout without an install.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clearing.engine.native import native_available
from testkit.simulator import SeedResult, as_json, run_seed


def _run_seed_args(args: tuple[int, int, str | None, bool, str | None, str]) -> SeedResult:
    # Torn-tail warnings are counted (by a handler on "clearing"), not printed.
    logging.getLogger("clearing").propagate = False
    return run_seed(*args)


def parse_seeds(text: str) -> list[int]:
    """``7``, ``1-200`` (inclusive) or ``1,5,9``."""
    seeds: list[int] = []
    for part in text.split(","):
        low, dash, high = part.partition("-")
        seeds.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument("--seeds", help="seeds to run: 1-200, or 1,5,9 (default: 1)")
    parser.add_argument(
        "--events", type=int, default=20_000, help="unique inputs per seed (default 20,000)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel")
    parser.add_argument("--fsync", choices=("batch", "always", "never"), help="force a policy")
    parser.add_argument(
        "--core",
        choices=("python", "native"),
        default="python",
        help="the sequencer's engine core (default python; the shadow is always Python's)",
    )
    parser.add_argument("--workdir", help="where seed directories go (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep every seed's directory")
    parser.add_argument(
        "--json", metavar="FILE", help="append one JSON line per seed as it finishes"
    )
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else parse_seeds(args.seeds or "1")
    started = time.perf_counter()
    if args.core == "native" and not native_available():
        print("--core native needs the clearing_native extension: pip install ./native")
        return 2
    tasks = [(s, args.events, args.workdir, args.keep, args.fsync, args.core) for s in seeds]
    results: list[SeedResult] = []
    json_out = open(args.json, "a") if args.json else None  # noqa: SIM115 - closed below

    def record(result: SeedResult) -> None:
        results.append(result)
        print(result.line(), flush=True)
        if json_out is not None:
            json_out.write(json.dumps(as_json(result)) + "\n")
            json_out.flush()

    try:
        if args.jobs > 1 and len(seeds) > 1:
            context = multiprocessing.get_context("fork")
            with context.Pool(args.jobs, maxtasksperchild=10) as pool:
                for result in pool.imap_unordered(_run_seed_args, tasks):
                    record(result)
        else:
            for task in tasks:
                record(_run_seed_args(task))
    finally:
        if json_out is not None:
            json_out.close()
    wall = time.perf_counter() - started
    failed = [r for r in results if r.failure is not None]
    total = sum(r.events for r in results)
    faults: Counter[str] = Counter()
    outputs: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    recoveries: Counter[str] = Counter()
    known: Counter[str] = Counter()
    observations: Counter[str] = Counter()
    for r in results:
        faults.update(r.faults)
        outputs.update(r.outputs)
        checks.update(r.checks)
        recoveries.update(r.recoveries)
        known.update(r.known_bugs)
        observations.update({k: v for k, v in r.observations.items() if "workdir" not in k})
    print(
        f"\n{len(results)} seeds, {total:,} inputs (+{sum(r.redelivered for r in results):,} "
        f"redelivered), {sum(r.steps for r in results):,} steps in {wall:.0f} s wall "
        f"({total / wall:,.0f} inputs/s); violations: {len(failed)}"
    )
    print(f"faults injected: {dict(sorted(faults.items()))}")
    print(f"recoveries: {dict(sorted(recoveries.items()))}")
    print(f"outputs: {dict(sorted(outputs.items()))}")
    print(f"checks: {dict(sorted(checks.items()))}")
    print(f"known engine bugs hit (not violations): {dict(known) or 'none'}")
    print(f"observations: {dict(sorted(observations.items())) or 'none'}")
    print(f"peak RSS of a worker: {max(r.peak_rss for r in results) / 2**20:.0f} MiB")
    for r in failed:
        print(f"VIOLATION: {r.failure}")
        core = "" if args.core == "python" else f" --core {args.core}"
        print(f"  reproduce: python tools/simulate.py --seed {r.seed} --events {args.events}{core}")
        for key in r.observations:
            if key.startswith("workdir_kept:"):
                print(f"  files: {key.split(':', 1)[1]}")
    print("RESULT: " + ("OK" if not failed else "FAILED"))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
