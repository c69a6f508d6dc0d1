#!/usr/bin/env python3
"""What one read-API request costs the server's thread, without Kafka (BENCHMARKS.md,
"Read API under load").

Serves the read API (``OpsServer`` + ``ReadApi``) over a native ledger of ``--accounts``
accounts, half long and half short in one market (so a market view has that many
holders), with a batch boundary every ``--boundary-ms`` standing in for the daemon's
loop; ``tools/bench_kafka.py``'s read client runs in a second process at ``--rps`` for
``--seconds`` over ``--connections`` connections, on a mix of accounts, the market and
the system accounts. Prints one JSON line: the server thread's CPU time per answered
request (connects included) and the client's report:

    python tools/bench_read_server.py --connections 4
    python tools/bench_read_server.py --connections 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402

from clearing.engine import EngineCore, make_engine  # noqa: E402
from clearing.ops.http import OpsServer  # noqa: E402
from clearing.ops.metrics import Metrics  # noqa: E402
from clearing.ops.read_api import ReadApi  # noqa: E402
from clearing.ops.reads import CommittedReads  # noqa: E402

_CLIENT = """
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
import bench_kafka

async def main() -> None:
    port, rps, seconds, connections = (int(a) for a in sys.argv[2:6])
    paths = json.loads(sys.stdin.read())
    load = bench_kafka.ReadLoad(port, rps, paths, seconds, connections)
    await load.run(asyncio.create_task(load.connect()))
    for _ in range(100):  # the last answers come at the next boundaries
        if not load.waiting:
            break
        await asyncio.sleep(0.05)
    print(json.dumps(await load.stop()))

asyncio.run(main())
"""


def build(accounts: int) -> EngineCore:
    engine = make_engine("native")

    def put(event: dict[str, str]) -> None:
        engine.apply_encoded(msgspec.json.encode(event))

    put({"type": "market", "market": "BTC", "imr": "0.1", "mmr": "0.05", "liq_fee": "0.01"})
    put({"type": "oracle", "market": "BTC", "price": "100"})
    for i in range(accounts):
        put({"type": "deposit", "account": f"a{i}", "amount": "1000"})
    for i in range(0, accounts - 1, 2):
        put({"type": "fill", "fill_id": f"f{i}", "market": "BTC", "price": "100", "qty": "1",
             "buyer": f"a{i}", "seller": f"a{i + 1}"})  # fmt: skip
    return engine


async def run(args: argparse.Namespace) -> dict[str, object]:
    engine = build(args.accounts)
    reads = CommittedReads()
    metrics = Metrics()
    metrics.set_ready(True)
    api = ReadApi(reads, lambda: engine.seq)
    paths = [f"/v1/accounts/a{i}" for i in range(min(200, args.accounts))]
    paths += ["/v1/markets/BTC"] * 20 + ["/v1/system"] * 10
    async with OpsServer(metrics, port=0, read_api=api) as server:
        command = [sys.executable, "-c", _CLIENT, str(REPO / "tools"), str(server.port),
                   str(args.rps), str(args.seconds), str(args.connections)]  # fmt: skip
        client = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(json.dumps(paths).encode())
        client.stdin.close()
        started_s = time.thread_time()
        while client.poll() is None:
            if reads.wanted:
                reads.answer(engine)
            await asyncio.sleep(args.boundary_ms / 1000)
        server_s = time.thread_time() - started_s
        report = json.loads(client.stdout.read() or b"null")
    if client.returncode != 0 or report is None:
        raise SystemExit(f"the read client failed (exit {client.returncode})")
    answered = report["answered"]
    return {
        "server_cpu_s": round(server_s, 3),
        "server_cpu_us_per_request": round(server_s / answered * 1e6, 1) if answered else None,
        "client": report,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--rps", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--boundary-ms", type=float, default=50.0)
    args = parser.parse_args()
    if args.accounts < 2 or args.rps < 1 or args.seconds < 1 or args.boundary_ms <= 0:
        parser.error("--accounts must be at least 2; --rps, --seconds, --boundary-ms positive")
    if not 1 <= args.connections <= 1024:
        parser.error("--connections must be from 1 to 1024")
    print(json.dumps({"read_server": asyncio.run(run(args))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
