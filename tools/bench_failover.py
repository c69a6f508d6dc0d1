#!/usr/bin/env python3
"""Failover, hand-over and cold start of the Kafka daemon with a hot standby, measured.

1. setup (not timed): start a LocalKafka (or use --bootstrap) and fresh topics; produce
   the ledger's ``--accounts`` deposits in bulk; process A (``--role standby``, elected
   at once as the only member) journals them all, then SIGTERM: its shutdown snapshot
   (every account, seq S) goes to the snapshot topic. The deposits are journaled before
   any trading input exists: the daemon merges its input partitions as it fetches them,
   and trading among accounts not funded yet liquidates and claws back from the whole
   ledger, batches of millions of output events that measure nothing of interest;
2. tail: ``--tail`` trading inputs produced in bulk; A restarts (its local snapshot) and
   journals them (``tail_catch_up_s``, from its log);
3. cold start: process B starts with an empty snapshot directory: time from its start to
   "standby: recovered" (snapshot S from the topic + the ``--tail`` journal records),
   then to in sync;
4. failover: live inputs at ``--rate``/s; ``kill -9`` A; time from the kill to the first
   batch B commits as the active one (its log's ``ts``);
5. A restarts with its snapshot directory deleted (a new machine) and follows; graceful
   hand-over: SIGTERM B; time to A's first committed batch;
6. the live feed ends, A drains, SIGTERM; the whole run is checked like a chaos trial
   (every input journaled once, outputs = ``clearing replay`` of the journal) unless
   ``--no-verify``.

Prints progress on stderr and one JSON line on stdout (the issue's size: ~2.5 min on a
quiet 2-core machine, most of it setup and the final check):

    python tools/bench_failover.py --accounts 1000000 --tail 1000000 --session-ms 3000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
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

MARKETS = 8
# A phase that waits on the daemon (catching up, recovering) fails after this long: far
# more than a 1M-account run needs on a loaded machine, so only a stuck run hits it.
PHASE_TIMEOUT_S = 1800.0
# The bulk producer's batches stay under the input topics' max.message.bytes
# (limits.max_message_bytes + 64 KiB = 128 KiB in kafka_chaos's config).
BULK_BATCH_BYTES = 100_000
BULK_IN_FLIGHT = 64
INPUT_PARTITION = 0  # the benchmark's input topics have one partition each


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
        self._lines: list[dict[str, Any]] = []
        self._read_bytes = 0
        self.env: dict[str, str] = {}  # config overrides (CLEARING_*) for the next start

    def start(self, wipe: bool = False) -> None:
        if wipe:
            shutil.rmtree(self.snapshot_dir, ignore_errors=True)
        env = {
            **os.environ,
            "CLEARING_SNAPSHOT_DIR": str(self.snapshot_dir),
            "CLEARING_HTTP_LISTEN": f"127.0.0.1:{self.port}",
            **self.env,
        }
        self.started_at = time.time()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clearing.cli", "run", "--config",
                 str(self._config_path), "--role", "standby"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def lines(self) -> list[dict[str, Any]]:
        """The log's JSON lines so far (read incrementally: a log re-read whole every
        0.1 s took a share of the two cores the daemons are measured on)."""
        with open(self.log_path, "rb") as f:
            f.seek(self._read_bytes)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1
        self._read_bytes += complete
        for raw in chunk[:complete].splitlines():
            if raw.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    line = json.loads(raw)
                    line["at"] = dt.datetime.fromisoformat(line["ts"]).timestamp()
                    self._lines.append(line)
        return self._lines

    def logged(self, text: str, after: float) -> list[dict[str, Any]]:
        return [x for x in self.lines() if x["at"] >= after and text in x.get("msg", "")]

    async def first(self, text: str, after: float, timeout_s: float = PHASE_TIMEOUT_S) -> float:
        """Wall time (from the log's ts) of the first line containing ``text`` logged
        at or after ``after``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.logged(text, after)
            if found:
                return float(found[0]["at"])
            self.check_alive()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name}: {text!r} not logged in {timeout_s} s: {self.tail()}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")

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

    async def in_sync(self, timeout_s: float = PHASE_TIMEOUT_S) -> float:
        """Wait until the standby reports lag 0; returns the wall time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            lag = await asyncio.to_thread(self.metric, "clearing_standby_lag_offsets")
            synced = await asyncio.to_thread(self.metric, "clearing_standby_in_sync")
            if lag == 0 and synced == 1:
                return time.time()
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} never in sync within {timeout_s} s: {self.tail()}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def exit_code(self, timeout_s: float) -> int:
        """Wait for the process to exit; kill it and fail if it takes longer."""
        assert self.proc is not None
        try:
            return await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError(f"{self.name} did not exit within {timeout_s} s") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def produce_bulk(
    config: Config, values: Sequence[bytes]
) -> dict[tuple[str, int, int], bytes]:
    """Produce ``values`` as fast as the producer goes (setup, not timed): record
    batches built here and sent whole (aiokafka's batch API: no future per message,
    several times the per-message rate), up to ``BULK_IN_FLIGHT`` at a time. Values are
    appended in stream order, each to its topic's open batch, so their timestamps (the
    daemon's merge order across topics) follow the stream as a live feed's would. No
    retries: on a healthy broker a failed send fails the benchmark (RuntimeError), the
    setup is not what is measured."""
    producer = AIOKafkaProducer(
        bootstrap_servers=config.kafka.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        max_batch_size=BULK_BATCH_BYTES,
        request_timeout_ms=60_000,
    )
    await producer.start()
    acked: dict[tuple[str, int, int], bytes] = {}
    in_flight: list[tuple[asyncio.Future[Any], str, list[bytes]]] = []
    open_batches: dict[str, tuple[Any, list[bytes]]] = {}

    async def send(topic: str) -> None:
        batch, held = open_batches.pop(topic)
        batch.close()
        future = await producer.send_batch(batch, topic, partition=INPUT_PARTITION)
        in_flight.append((future, topic, held))
        while len(in_flight) > BULK_IN_FLIGHT:
            await settle_oldest()

    async def settle_oldest() -> None:
        future, topic, sent = in_flight.pop(0)
        try:
            base = (await future).offset
        except Exception as exc:
            raise RuntimeError(f"producing the setup inputs failed: {exc!r}") from exc
        for index, value in enumerate(sent):
            acked[topic, INPUT_PARTITION, base + index] = value

    try:
        for value in values:
            topic = str(getattr(config.topics, kafka_chaos.role_of(value)))
            for _ in range(2):
                if topic not in open_batches:
                    open_batches[topic] = (producer.create_batch(), [])
                batch, held = open_batches[topic]
                if batch.append(key=None, value=value, timestamp=None) is not None:
                    held.append(value)
                    break
                if not held:
                    raise RuntimeError(f"an input of {len(value)} bytes fills no batch")
                await send(topic)  # full: send it, append to a new one
        for topic in list(open_batches):
            await send(topic)
        while in_flight:
            await settle_oldest()
    finally:
        await producer.stop()
    return acked


async def feed(
    config: Config, values: Iterator[bytes], rate: float, stop: asyncio.Event
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


async def caught_up(config: Config, active: Process, timeout_s: float = PHASE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await kafka_chaos.group_caught_up(config):
        active.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ledger did not catch up within {timeout_s} s")
        await asyncio.sleep(0.5)


# The new active's way from elected to serving, as its log tells it (``takeover_steps``).
TAKEOVER_STEPS = {
    "elected": "holds the control partition",
    "producer_fenced_old": "transactional producer",
    "promoted": "promoted to active",
    "ready": "ready: ledger",
    "first_batch": "committed: seq",
}


def takeover_steps(process: Process, since: float) -> dict[str, float | None]:
    """Seconds from ``since`` (the kill, the SIGTERM) to each step of the take-over."""
    out: dict[str, float | None] = {}
    for name, text in TAKEOVER_STEPS.items():
        found = process.logged(text, since)
        out[name] = round(found[0]["at"] - since, 2) if found else None
    return out


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def write_bench_config(args: argparse.Namespace, bootstrap: str, work: Path) -> Path:
    return kafka_chaos.write_config(
        work, bootstrap, "failover", input_partitions=1,
        batch={"max_records": args.batch, "poll_timeout_ms": 50},
        # No periodic snapshot: the one at the end of the setup (SIGTERM) is what the
        # cold starts load, with exactly the --tail records after it.
        snapshot={"dir": str(work / "unused"), "every_inputs": 10**12, "keep": 2},
        daemon={"shutdown_timeout_s": args.shutdown_s, "fence_probe_interval_s": 2.0,
                "role": "standby", "session_timeout_ms": args.session_ms},
    )  # fmt: skip


async def setup_ledger(
    config: Config, a: Process, setup: list[bytes], shutdown_s: float
) -> tuple[dict[tuple[str, int, int], bytes], dict[str, Any]]:
    """Phase 1: the funded accounts journaled by A, and A's shutdown snapshot of them in
    the snapshot topic. Returns the acked inputs and the phase's figures."""
    say(f"producing {len(setup)} setup inputs (markets, deposits)")
    started = time.monotonic()
    acked = await produce_bulk(config, setup)
    produced_s = time.monotonic() - started
    say(f"produced in {produced_s:.1f} s; A journals them")
    a.start()
    await a.first("ready: ledger", a.started_at)
    await caught_up(config, a)
    say("A caught up; SIGTERM: its shutdown snapshot goes to the snapshot topic")
    term_at = time.time()
    a.signal(signal.SIGTERM)
    code = await a.exit_code(shutdown_s + 60)
    if code != 0:
        raise RuntimeError(f"A exited {code} after SIGTERM: {a.tail()}")
    published = a.logged("published to", term_at)
    if not published:
        raise RuntimeError(f"A's shutdown snapshot was not published: {a.tail()}")
    return acked, {
        "setup_inputs": len(setup),
        "setup_produce_s": round(produced_s, 1),
        "snapshot_seq": published[-1].get("seq"),
        "snapshot_published": published[-1]["msg"],
        "snapshot_write_and_publish_s": round(published[-1]["at"] - term_at, 2),
    }


async def journal_tail(
    config: Config, a: Process, tail: list[bytes]
) -> tuple[dict[tuple[str, int, int], bytes], dict[str, Any]]:
    """Phase 2: the trading tail, journaled by A (restarted on its local snapshot)."""
    say(f"producing {len(tail)} tail inputs")
    acked = await produce_bulk(config, tail)
    say("A restarts on its snapshot and journals the tail")
    a.start()
    ready = await a.first("ready: ledger", a.started_at)
    await caught_up(config, a)
    batches = a.logged("committed: seq", ready)
    if not batches:
        raise RuntimeError(f"A committed no batch of the tail: {a.tail()}")
    seconds = batches[-1]["at"] - ready
    return acked, {
        "tail_inputs": len(tail),
        "tail_catch_up_s": round(seconds, 2),
        "tail_inputs_per_s": round(len(tail) / max(seconds, 1e-9)),
    }


async def cold_start(b: Process) -> dict[str, Any]:
    """Phase 3: B on an empty disk, from the snapshot topic and the journal's tail."""
    b.start(wipe=True)
    recovered = await b.first("standby: recovered", b.started_at)
    in_sync = await b.in_sync()
    restored = b.logged("restored into", b.started_at)
    line = b.logged("standby: recovered", b.started_at)[0]["msg"]
    return {
        "cold_start_to_recovered_s": round(recovered - b.started_at, 2),
        "cold_start_to_in_sync_s": round(in_sync - b.started_at, 2),
        "cold_start_restored_from_topic": bool(restored),
        "cold_start_log": line,
    }


async def bench(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    config_path = write_bench_config(args, bootstrap, work)
    config = load_config(str(config_path), environ={})
    report = await create_topics(config)
    if report.problems:
        raise RuntimeError(f"creating the topics failed: {report.problems}")
    # One stream: the markets, the deposits and the fund's, then trading; the live part
    # is drawn lazily (the feed stops on a signal).
    stream = gen_events.generate(10**12, args.accounts, MARKETS, args.seed)
    setup = list(itertools.islice(stream, MARKETS + args.accounts + 1))
    tail = list(itertools.islice(stream, args.tail))
    result: dict[str, Any] = {"accounts": args.accounts, "tail": args.tail,
                              "session_timeout_ms": args.session_ms,
                              "batch_max_records": args.batch,
                              "shutdown_snapshot": args.shutdown_snapshot}  # fmt: skip
    a, b = Process("a", config_path, work), Process("b", config_path, work)
    try:
        acked, figures = await setup_ledger(config, a, setup, args.shutdown_s)
        result.update(figures)
        del setup
        more, figures = await journal_tail(config, a, tail)
        acked.update(more)
        result.update(figures)
        del tail
        if not args.shutdown_snapshot:
            for process in (a, b):
                process.env["CLEARING_SNAPSHOT_ON_SHUTDOWN"] = "false"
        say("A caught up; cold start of B (empty disk)")
        result.update(await cold_start(b))

        say("B in sync; live input, then kill -9 A")
        stop_feed = asyncio.Event()
        feeding = asyncio.create_task(feed(config, stream, args.rate, stop_feed))
        await asyncio.sleep(3.0)
        killed_at = time.time()
        a.signal(signal.SIGKILL)
        await a.exit_code(60)
        promoted = await b.first("promoted to active", killed_at)
        first_batch = await b.first("committed: seq", killed_at)
        result["failover_promoted_s"] = round(promoted - killed_at, 2)
        result["failover_first_batch_s"] = round(first_batch - killed_at, 2)
        result["failover_steps_s"] = takeover_steps(b, killed_at)

        say("B promoted; A restarts with an empty disk")
        a.start(wipe=True)  # the old machine is gone: a new one joins as the standby
        await a.first("standby: recovered", a.started_at)
        await a.in_sync()
        say("A in sync; SIGTERM B")
        term_at = time.time()
        b.signal(signal.SIGTERM)
        first_after = await a.first("committed: seq", term_at)
        result["handover_first_batch_s"] = round(first_after - term_at, 2)
        result["handover_steps_s"] = takeover_steps(a, term_at)
        result["handover_old_exit"] = await b.exit_code(args.shutdown_s + 60)

        say("handed over; draining")
        stop_feed.set()
        acked.update(await feeding)
        await caught_up(config, a)
        a.signal(signal.SIGTERM)
        result["final_exit"] = await a.exit_code(args.shutdown_s + 60)
    finally:
        a.kill()
        b.kill()
    if args.verify:
        say("verifying (every input journaled once, outputs = clearing replay)")
        started = time.monotonic()
        result["verified"] = await kafka_chaos.verify(config, work, acked)
        result["verify_s"] = round(time.monotonic() - started, 1)
    with contextlib.suppress(Exception):
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
    ok = (
        result.get("handover_old_exit") == 0
        and result.get("final_exit") == 0
        and result.get("cold_start_restored_from_topic") is True
    )
    result["ok"] = ok
    print(json.dumps(result), flush=True)
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work} (daemon logs a.log, b.log)", file=sys.stderr)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000, help="funded accounts")
    parser.add_argument(
        "--tail", type=int, default=1_000_000, help="trading inputs after the snapshot"
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="live inputs/s")
    parser.add_argument("--session-ms", type=int, default=3000, help="daemon.session_timeout_ms")
    parser.add_argument("--batch", type=int, default=10_000, help="batch.max_records")
    parser.add_argument(
        "--shutdown-s", type=float, default=300.0,
        help="daemon.shutdown_timeout_s (a SIGTERM writes and publishes a snapshot)",
    )  # fmt: skip
    parser.add_argument(
        "--no-shutdown-snapshot", dest="shutdown_snapshot", action="store_false",
        help="after the setup, SIGTERM writes no snapshot (snapshot.on_shutdown=false): "
             "in the hand-over the old active's snapshot then does not compete with the "
             "new active for this machine's cores, as on two machines",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap")
    parser.add_argument("--broker-heap", default="1g")
    parser.add_argument(
        "--no-verify", dest="verify", action="store_false",
        help="skip the final check (minutes at 2M inputs)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.accounts < 2 or args.tail < 1 or args.rate <= 0:
        parser.error("--accounts must be at least 2, --tail at least 1, --rate positive")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
