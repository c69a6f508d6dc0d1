#!/usr/bin/env python3
"""Failover, hand-over and cold start of the Kafka daemon with a hot standby, measured.

1. start a LocalKafka (or use --bootstrap) and fresh topics; produce ``--accounts``
   deposits (a ledger that size) plus ``--tail`` trading inputs up front;
2. process A (``--role standby``, elected at once as the only member) catches up; its
   snapshot at seq ``--accounts`` goes to the snapshot topic;
3. cold start: process B starts with an empty snapshot directory: time from its start
   to "standby: recovered" (snapshot from the topic + journal tail), then to in sync;
4. failover: live inputs at ``--rate``/s; ``kill -9`` A; time from the kill to the first
   batch B commits as the active one (its log's ``ts``);
5. A restarts with its snapshot directory deleted (a new machine) and follows; graceful
   hand-over: SIGTERM B; time to A's first committed batch;
6. the live feed ends, A drains, SIGTERM; the whole run is checked like a chaos trial
   (every input journaled once, outputs = ``clearing replay`` of the journal).

Prints one JSON line:

    python tools/bench_failover.py --accounts 200000 --tail 100000 --session-ms 3000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kafka_chaos  # tools/ is on sys.path: this file's directory

from clearing.kafka import create_topics
from clearing.ops.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
kafka_local = kafka_chaos.kafka_local
gen_events = kafka_chaos.gen_events


class Process:
    """One ``clearing run --role standby`` subprocess with JSON logs and its own port."""

    def __init__(self, name: str, config_path: Path, work: Path) -> None:
        self.name = name
        self.log_path = work / f"{name}.log"
        self.snapshot_dir = work / f"snapshots-{name}"
        self.port = kafka_local.free_port()
        self._config_path = config_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self, wipe: bool = False) -> None:
        if wipe:
            shutil.rmtree(self.snapshot_dir, ignore_errors=True)
        env = {
            **os.environ,
            "CLEARING_SNAPSHOT_DIR": str(self.snapshot_dir),
            "CLEARING_HTTP_LISTEN": f"127.0.0.1:{self.port}",
        }
        self.started_at = time.time()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clearing.cli", "run", "--config",
                 str(self._config_path), "--role", "standby"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    async def first(self, text: str, after: float, timeout_s: float = 600.0) -> float:
        """Wall time (from the log's ts) of the first line containing ``text`` logged
        at or after ``after``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines():
                at = dt.datetime.fromisoformat(line["ts"]).timestamp()
                if at >= after and text in line.get("msg", ""):
                    return at
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name}: {text!r} not logged in {timeout_s} s: {self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-10:])

    def metric(self, name: str) -> float | None:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5)
            for line in text.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        except OSError:
            return None
        return None

    async def in_sync(self, timeout_s: float = 600.0) -> float:
        """Wait until the standby reports lag 0; returns the wall time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lag = await asyncio.to_thread(self.metric, "clearing_standby_lag_offsets")
            synced = await asyncio.to_thread(self.metric, "clearing_standby_in_sync")
            if lag == 0 and synced == 1:
                return time.time()
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} never in sync: {self.tail()}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)


async def feed(
    config: Config, values: list[bytes], rate: float, stop: asyncio.Event
) -> dict[tuple[str, int, int], bytes]:
    """Live input: ``values`` at ``rate``/s until ``stop`` is set (or they run out)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=config.kafka.bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    acked: dict[tuple[str, int, int], bytes] = {}
    started = time.monotonic()
    try:
        for sent, value in enumerate(values):
            if stop.is_set():
                break
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            topic = str(getattr(config.topics, kafka_chaos.role_of(value)))
            meta = await producer.send_and_wait(topic, value)
            acked[meta.topic, meta.partition, meta.offset] = value
    finally:
        await producer.stop()
    return acked


async def caught_up(config: Config, active: Process, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await kafka_chaos.group_caught_up(config):
        if active.proc is not None and active.proc.poll() is not None:
            raise RuntimeError(f"{active.name} exited {active.proc.returncode}: {active.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError("the ledger did not catch up")
        await asyncio.sleep(0.5)


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


async def bench(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    session_ms = args.session_ms
    config_path = kafka_chaos.write_config(
        work, bootstrap, "failover", input_partitions=1,
        batch={"max_records": args.batch, "poll_timeout_ms": 50},
        snapshot={"dir": str(work / "unused"), "every_inputs": args.accounts, "keep": 2},
        daemon={"shutdown_timeout_s": 60.0, "fence_probe_interval_s": 2.0,
                "role": "standby", "session_timeout_ms": session_ms},
    )  # fmt: skip
    config = load_config(str(config_path), environ={})
    report = await create_topics(config)
    assert not report.problems, report.problems
    live_n = int(args.rate * 600)  # more than the run needs: the feed stops on a signal
    total = args.accounts + args.tail + live_n
    values = list(gen_events.generate(total, args.accounts, 8, args.seed))
    upfront, live = values[: args.accounts + args.tail], values[args.accounts + args.tail :]
    say(f"producing {len(upfront)} inputs up front ({work})")
    acked = await kafka_chaos.produce(config, upfront)
    say("starting A")

    a, b = Process("a", config_path, work), Process("b", config_path, work)
    a.start()
    await a.first("ready: ledger", a.started_at)
    await caught_up(config, a)
    say("A caught up; cold start of B")
    result: dict[str, Any] = {"accounts": args.accounts, "tail": args.tail,
                              "session_timeout_ms": session_ms,
                              "batch_max_records": args.batch}  # fmt: skip

    # Cold start of a new machine: empty directory, snapshot from the topic + the tail.
    b.start(wipe=True)
    recovered = await b.first("standby: recovered", b.started_at)
    result["cold_start_to_recovered_s"] = round(recovered - b.started_at, 2)
    result["cold_start_to_in_sync_s"] = round(await b.in_sync() - b.started_at, 2)
    restored = [line for line in b.lines() if "restored into" in line.get("msg", "")]
    result["cold_start_restored_from_topic"] = bool(restored)

    say("B in sync; live input, then kill -9 A")
    stop_feed = asyncio.Event()
    feeding = asyncio.create_task(feed(config, live, args.rate, stop_feed))
    await asyncio.sleep(3.0)
    killed_at = time.time()
    a.signal(signal.SIGKILL)
    a.wait()
    promoted = await b.first("promoted to active", killed_at)
    first_batch = await b.first("committed: seq", killed_at)
    result["failover_promoted_s"] = round(promoted - killed_at, 2)
    result["failover_first_batch_s"] = round(first_batch - killed_at, 2)

    say("B promoted; A restarts with an empty disk")
    a.start(wipe=True)  # the old machine is gone: a new one joins as the standby
    await a.first("standby: recovered", a.started_at)
    await a.in_sync()
    say("A in sync; SIGTERM B")
    term_at = time.time()
    b.signal(signal.SIGTERM)
    first_after = await a.first("committed: seq", term_at)
    result["handover_first_batch_s"] = round(first_after - term_at, 2)
    result["handover_old_exit"] = await asyncio.to_thread(b.wait)

    say("handed over; draining and verifying")
    stop_feed.set()
    acked.update(await feeding)
    await caught_up(config, a)
    a.signal(signal.SIGTERM)
    result["final_exit"] = await asyncio.to_thread(a.wait)
    counts = await kafka_chaos.verify(config, work, acked)
    result["verified"] = counts
    with __import__("contextlib").suppress(Exception):
        await kafka_chaos.delete_trial_topics(config)
    return result


async def _main(args: argparse.Namespace) -> int:
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = kafka_local.LocalKafka(heap=args.broker_heap)
        await asyncio.to_thread(broker.start)
        bootstrap = broker.bootstrap
    work = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    try:
        result = await bench(args, bootstrap, work)
    except (RuntimeError, kafka_chaos.TrialFailed) as exc:
        print(json.dumps({"error": str(exc), "work": str(work)}), flush=True)
        return 1
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.close)
    print(json.dumps(result), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--tail", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="live inputs/s")
    parser.add_argument("--session-ms", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=10_000, help="batch.max_records")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap")
    parser.add_argument("--broker-heap", default="1g")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
