#!/usr/bin/env python3
"""Cost of the read API's engine views at scale (docs/operations.md, "Read API").

Builds a ledger of ``--accounts`` accounts with one position each over ``--markets``
markets on the native core (the Python core is loaded from its snapshot with
``--python``: building it input by input takes far longer), then times
``rankings(1000)`` (the ranked lists' pass over every account), one ``account_view`` and
one ``market_view(depth 10)``, each a median of several calls. Prints JSON lines:

    python tools/bench_read_views.py --accounts 1000000 --python
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clearing.engine import EngineCore, load_engine, make_engine


def build(accounts: int, markets: int) -> EngineCore:
    engine = make_engine("native")

    def put(event: dict[str, str]) -> None:
        engine.apply_encoded(json.dumps(event).encode())

    for m in range(markets):
        market = f"M{m:02d}"
        put({"type": "market", "market": market, "imr": "0.1", "mmr": "0.05", "liq_fee": "0"})
        put({"type": "oracle", "market": market, "price": "100"})
    for i in range(accounts):
        put({"type": "deposit", "account": f"a{i:07d}", "amount": str(50 + i % 1000)})
    for i in range(0, accounts - 1, 2):
        put({"type": "fill", "fill_id": f"f{i}", "market": f"M{(i // 2) % markets:02d}",
             "price": "100", "qty": str(1 + i % 7), "buyer": f"a{i:07d}",
             "seller": f"a{i + 1:07d}"})  # fmt: skip
    return engine


def median_ms(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 3)


def measure(engine: EngineCore, core: str, runs: int) -> None:
    result = {
        "core": core,
        "accounts": engine.account_count(),
        "rankings_1000_ms": median_ms(lambda: engine.rankings(1000), runs),
        "account_view_ms": median_ms(lambda: engine.account_view("a0000123"), 20),
        "market_view_depth10_ms": median_ms(lambda: engine.market_view("M03", 10), 20),
    }
    print(json.dumps({"read_views": result}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="calls of rankings per median")
    parser.add_argument("--python", action="store_true", help="also the Python core")
    args = parser.parse_args()
    if args.accounts < 2 or not 1 <= args.markets <= 99 or args.runs < 1:
        parser.error("need --accounts >= 2, --markets from 1 to 99, --runs >= 1")
    native = build(args.accounts, args.markets)
    measure(native, "native", args.runs)
    if args.python:
        python = load_engine(native.dump_state(), core="python")
        if python.rankings(1000) != native.rankings(1000):
            print("the two cores' rankings differ", file=sys.stderr)
            return 1
        measure(python, "python", args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
