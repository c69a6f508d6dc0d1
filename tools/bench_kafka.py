#!/usr/bin/env python3
"""End-to-end throughput of the Kafka daemon on the real local broker.

1. start a LocalKafka (or use --bootstrap), create fresh topics;
2. produce ``--events`` inputs from ``tools/gen_events.py`` up front (routed by type to
   the admin/oracle/book/fills topics);
3. start ``clearing run`` (a subprocess; ``--profile`` runs it under cProfile) and time
   it from process start until everything is committed: the consumer group's committed
   offsets (written in the same transactions as the outputs) reach every input
   partition's end, then a read_committed read of the journal's last record confirms
   the last expected seq;
4. scrape the daemon's /metrics (time per batch in the engine, in sends, in commits),
   SIGTERM it.

Prints JSON lines like tools/bench.py:

    python tools/bench_kafka.py --events 1000000
    python tools/bench_kafka.py --events 100000 --profile

Comparing versions (the machine's speed drifts by tens of percent within an hour, so
only runs interleaved in the same minutes compare): check the other version out in a
worktree and run both, alternating, each against a fresh broker:

    git worktree add /tmp/before <commit>
    python tools/bench_kafka.py --rounds 5 --daemon-checkout /tmp/before --daemon-checkout .

The last line, ``summary``, gives each checkout's median and, round by round, each
checkout's throughput over the first one's (here: the new version over the old).

Read load (docs/operations.md, "Read API"): ``--read-rps 1000`` runs every round twice,
without and with a client issuing that many read-API requests a second to the daemon
(loopback only; at most ``--read-max-s`` seconds and rps x that many requests; sent
every 10 ms, pipelined over ``--read-connections`` keep-alive connections, 4 by
default), the order alternating round by round; ``read_load_summary`` gives both
medians and the per-round ratio of throughput with the client over without:

    python tools/bench_kafka.py --events 1000000 --rounds 3 --read-rps 1000
    python tools/bench_kafka.py --events 1000000 --rounds 3 --read-rps 1000 --read-connections 1000

On a standby instead (a read replica, docs/operations.md "Reads from the standby"):
``--standby --read-rps 1000 --reads-to standby`` runs a standby in both arms and sends
the reads to it in one, so the ratio is what readers on the standby cost the active:

    python tools/bench_kafka.py --events 1000000 --rounds 6 --standby --read-rps 1000 \
        --reads-to standby --pin-active-cpu 0 --standby-nice 19
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.util
import json
import os
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Runnable from a checkout without an install, like tools/bench.py.
sys.path.insert(0, str(REPO))

from clearing.kafka import KafkaJournalReader, create_topics  # noqa: E402
from clearing.ops.config import Config, load_config  # noqa: E402


class CaughtUp:
    """Has the ledger's consumer group committed every input partition to its end? The
    inputs are all produced before the daemon starts, so the ends are read once; each
    probe is then one offset fetch on clients opened once (a fresh admin client and
    consumer per probe took ~0.45 s and a share of the two cores, which made the timing
    coarse: runs came out in steps of ~0.7 s)."""

    def __init__(self, config: Config) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        kw = {"bootstrap_servers": config.kafka.bootstrap_servers}
        self._config = config
        self._group = config.group_id
        self._topics = config.topics.inputs
        self._admin = AIOKafkaAdminClient(**kw)
        self._consumer = AIOKafkaConsumer(**kw, group_id=None, enable_auto_commit=False)
        self._ends: dict[Any, int] = {}
        # (perf_counter, the active's committed seq) at each probe
        self.committed_seqs: list[tuple[float, int]] = []

    async def start(self, expected: int) -> int:
        """Read the input partitions' ends, which hold at least the ``expected`` acked
        records (fresh topics, produced up front; more if a failed send was re-sent and
        had been written after all): a probe reading fewer would say "caught up" too
        early. Returns the records in the input topics, which the journal must reach."""
        await self._admin.start()
        await self._consumer.start()
        deadline = time.monotonic() + 30
        while True:
            tps = await chaos.partitions_of(self._config, self._topics)
            ends = await self._consumer.end_offsets(tps)
            self._ends = {tp: end for tp, end in ends.items() if end}
            total = sum(self._ends.values())
            if total >= expected:
                return total
            if time.monotonic() > deadline:
                raise RuntimeError(f"input partitions hold {ends}, expected {expected} records")
            await asyncio.sleep(0.2)  # metadata of just-created topics may lag

    async def close(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def __call__(self) -> bool:
        committed = await self._admin.list_consumer_group_offsets(self._group)
        # Fresh topics: the committed offsets add up to the inputs journaled, the seq.
        total = sum(committed[tp].offset for tp in self._ends if tp in committed)
        self.committed_seqs.append((time.perf_counter(), total))
        return all(
            tp in committed and committed[tp].offset >= end for tp, end in self._ends.items()
        )


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


chaos = _load("kafka_chaos")
kafka_local = _load("kafka_local")
standby_tools = _load("bench_kafka_standby")


def emit(name: str, result: Any) -> None:
    print(json.dumps({name: result}), flush=True)


async def journal_reaches(config: Config, seq: int, timeout_s: float = 30.0) -> int:
    """The journal's last seq once it is ``seq`` (or the last one read at the timeout).
    The group's offsets and the journal records commit in one transaction, but the
    broker writes each partition's commit marker on its own, so a read_committed reader
    can see the journal's last records a few milliseconds after the offsets."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = await asyncio.to_thread(journal_last_seq, config)
        if last >= seq or time.monotonic() > deadline:
            return last
        await asyncio.sleep(0.1)


def journal_last_seq(config: Config) -> int:
    with KafkaJournalReader(config) as reader:
        tail = reader.tail()
        return tail.last.seq if tail.last is not None else 0


def scrape(port: int, timeout_s: float = 5.0) -> dict[str, float]:
    """The daemon's unlabelled /metrics samples; raises ``OSError`` when it does not answer."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as got:
        text = got.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if "{" in name:
            continue
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def breakdown(m: dict[str, float], seconds: float) -> dict[str, Any]:
    def total(name: str) -> float:
        return m.get(f"{name}_sum", 0.0)

    parts = {
        "engine_apply_s": total("clearing_engine_apply_seconds"),
        "send_s": total("clearing_journal_write_seconds"),
        "commit_s": total("clearing_transaction_commit_seconds"),
        "snapshot_s": total("clearing_snapshot_duration_seconds"),
    }
    accounted = sum(parts.values())
    return {
        **{k: round(v, 2) for k, v in parts.items()},
        "other_s (poll, decode, offsets, recovery, startup)": round(seconds - accounted, 2),
        "batches": int(m.get("clearing_engine_apply_seconds_count", 0)),
        "mean_batch_records": round(
            m.get("clearing_engine_batch_records_sum", 0)
            / max(1.0, m.get("clearing_engine_batch_records_count", 0)),
            1,
        ),
    }


def cpu_seconds(pid: int | None) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a live process so far (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick_s = 1 / os.sysconf("SC_CLK_TCK")
    return int(fields[11]) * tick_s, int(fields[12]) * tick_s  # utime, stime


def cpu_split(
    after: tuple[float, float] | None, before: tuple[float, float] | None
) -> dict[str, float] | None:
    if after is None or before is None:
        return None
    user, system = after[0] - before[0], after[1] - before[1]
    return {"user": round(user, 2), "system": round(system, 2), "total": round(user + system, 2)}


def readable(port: int) -> bool:
    """Does the read API on ``port`` answer (an active once ready, a standby once it
    follows the journal)?"""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/system", timeout=2):
            return True
    except OSError:
        return False


class ReadLoad:
    """A read-API client on loopback at a fixed rate, bounded in count and time, as one
    client (a dashboard backend, a gateway) would send them: the requests due are sent
    every ``_TICK_S`` in one write, pipelined (HTTP/1.1: several requests written at
    once, the answers read back in order), on ``connections`` keep-alive connections in
    turn. A request due while ``_MAX_WAITING`` are unanswered is counted as skipped, not
    sent. ``connections`` at least the rate is the other extreme: many pollers, each
    request written on a connection of its own (a read and a write each on the
    daemon)."""

    _TICK_S = 0.01
    _MAX_WAITING = 1000

    def __init__(
        self, port: int, rps: int, paths: list[str], max_s: float, connections: int = 4
    ) -> None:
        self.port = port
        self.rps = rps
        self.paths = paths
        self.max_s = max_s
        self.max_requests = int(rps * max_s)
        self.connections = max(1, min(connections, 1024))
        self.statuses: dict[str, int] = {}
        self.latencies_ms: list[float] = []
        self.skipped = 0
        self._open: list[_ReadConnection] = []
        self._started = 0.0
        self._stopped = 0.0

    @property
    def waiting(self) -> int:
        return sum(len(c.due) for c in self._open)

    async def connect(self) -> None:
        """Open the connections while the daemon starts (its ops port opens before
        recovery), one at a time: a burst of connects to a busy daemon overflows its
        listen backlog, and the dropped SYNs cost seconds of retransmission."""
        loop = asyncio.get_running_loop()
        while len(self._open) < self.connections:
            try:
                _, protocol = await loop.create_connection(
                    lambda: _ReadConnection(self), "127.0.0.1", self.port
                )
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)  # not listening yet
                continue
            self._open.append(protocol)

    async def run(self, connecting: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        await connecting
        self._started = due = loop.time()
        deadline = due + self.max_s
        sent = turn = 0
        try:
            while sent < self.max_requests and loop.time() < deadline:
                batch: list[tuple[str, float]] = []
                waiting = self.waiting
                while due <= loop.time() and sent < self.max_requests:
                    if waiting + len(batch) >= self._MAX_WAITING:
                        self.skipped += 1
                    else:
                        batch.append((self.paths[sent % len(self.paths)], due))
                    sent += 1
                    due += 1 / self.rps
                # One write a tick, the connections in turn (one wakeup of the daemon);
                # as many pollers (a connection per request a second), one request each.
                for chunk in self._chunks(batch):
                    await self._send(turn % len(self._open), chunk)
                    turn += 1
                await asyncio.sleep(max(self._TICK_S, due - loop.time()))
        finally:
            self._stopped = loop.time()

    def _chunks(self, batch: list[tuple[str, float]]) -> list[list[tuple[str, float]]]:
        if self.connections >= self.rps:
            return [[request] for request in batch]
        return [batch] if batch else []

    async def _send(self, index: int, batch: list[tuple[str, float]]) -> None:
        connection = self._open[index]
        if connection.lost:  # the daemon closed it (idle for 5 s, say): reconnect
            loop = asyncio.get_running_loop()
            _, connection = await loop.create_connection(
                lambda: _ReadConnection(self), "127.0.0.1", self.port
            )
            self._open[index] = connection
        connection.send(batch)

    def answered(self, status: str, due: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies_ms.append((asyncio.get_running_loop().time() - due) * 1000)

    def failed(self, name: str) -> None:
        self.statuses[name] = self.statuses.get(name, 0) + 1

    async def stop(self) -> dict[str, Any]:
        unanswered = self.waiting  # sent, still waiting for a batch boundary
        for connection in self._open:
            connection.due.clear()
            connection.close()
        answered = len(self.latencies_ms)
        ranked = sorted(self.latencies_ms)
        seconds = (self._stopped or asyncio.get_running_loop().time()) - self._started
        return {
            "target_rps": self.rps, "answered": answered, "statuses": self.statuses,
            "skipped_queue_full": self.skipped, "unanswered_at_stop": unanswered,
            "connections": self.connections,
            "achieved_rps": round(answered / seconds) if seconds > 0 else None,
            # From when each request was due, so queueing in the client counts too.
            "latency_ms_p50": round(ranked[answered // 2], 2) if ranked else None,
            "latency_ms_p99": round(ranked[int(answered * 0.99)], 2) if ranked else None,
        }  # fmt: skip


async def finish_standby(
    standby: Any, caught_up: CaughtUp, done_at: float, last_seq: int, batch_records: int
) -> dict[str, Any]:
    """The standby's figures once the active is done: it must apply every record (its
    outputs checked against the active's) and exit 0 on SIGTERM."""
    ended = await standby.finish(last_seq)
    figures = standby_tools.lag_figures(
        standby.samples, caught_up.committed_seqs, standby_started=standby.started,
        done_at=done_at, last_seq=last_seq, batch_records=batch_records,
    )  # fmt: skip
    ok = ended["reached_last_seq"] and ended["exit"] == 0 and not figures.get("was_active")
    return {"ok": ok, **ended, "nice": standby.nice, "sample_interval_s": standby.interval_s,
            **figures}  # fmt: skip


class _ReadConnection(asyncio.Protocol):
    """One keep-alive connection of ``ReadLoad``: writes a batch of requests at once and
    matches the responses, in order, to their due times."""

    _REQUEST = "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"

    def __init__(self, load: ReadLoad) -> None:
        self.load = load
        self.due: collections.deque[float] = collections.deque()
        self.lost = False
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for _ in self.due:
            self.load.failed(type(exc).__name__ if exc else "closed")
        self.due.clear()

    def send(self, batch: list[tuple[str, float]]) -> None:
        assert self._transport is not None
        self._transport.write("".join(self._REQUEST.format(path) for path, _ in batch).encode())
        self.due.extend(due for _, due in batch)

    def data_received(self, data: bytes) -> None:
        # Parsed in place by offset: a boundary's answers arrive together, dozens at once.
        buffer = self._buffer + data if self._buffer else data
        at = 0
        while True:
            end = buffer.find(b"\r\n\r\n", at)
            if end < 0:
                break
            field = buffer.find(b"Content-Length: ", at, end)
            length = (
                int(buffer[field + 16 : buffer.find(b"\r\n", field, end + 2)]) if field >= 0 else 0
            )
            if len(buffer) < end + 4 + length:
                break
            status = buffer[at + 9 : at + 12].decode("latin-1")
            at = end + 4 + length
            if self.due:
                self.load.answered(status, self.due.popleft())
        self._buffer = buffer[at:]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def read_paths(values: list[bytes]) -> list[str]:
    """A request mix over the stream's own ids: mostly single accounts (what support
    staff and per-account risk views ask), some markets, the system accounts, and the
    ranked lists (served from their cache)."""
    import msgspec

    deposited: set[str] = set()
    markets: list[str] = []
    for value in values:
        event = msgspec.json.decode(value)
        if event.get("type") == "deposit":
            deposited.add(event["account"])
        elif event.get("type") == "market":
            markets.append(event["market"])
    accounts = sorted(deposited)[:200] or ["nobody"]
    quote = urllib.parse.quote
    paths = [f"/v1/accounts/{quote(a, safe='')}" for a in accounts]
    paths += [f"/v1/markets/{quote(m, safe='')}" for m in markets[:20]]
    paths += ["/v1/system", "/v1/rankings/nearest-liquidation?limit=50"] * 10
    if markets:
        paths += [f"/v1/rankings/largest-positions?market={quote(markets[0])}"] * 10
    return paths


async def run(args: argparse.Namespace) -> tuple[int, dict[str, Any] | None]:
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = kafka_local.LocalKafka(heap=args.broker_heap, full_jit=args.broker_jit == "full")
        await asyncio.to_thread(broker.start)
        bootstrap = broker.bootstrap
        props = broker.server_properties()
        emit("broker", {
            "version": broker.version, "heap": args.broker_heap,
            "jvm": " ".join(broker.jvm_flags) + " (tools/kafka_local.py)",
            **{k: props[k] for k in ("num.network.threads", "num.io.threads",
                                      "min.insync.replicas", "default.replication.factor")},
            "log.flush": "Kafka default (no fsync per message; page cache)",
        })  # fmt: skip
    max_records = args.max_records or default_max_records(args.daemon_checkout)
    work = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    port = kafka_local.free_port()
    try:
        path = chaos.write_config(
            work, bootstrap, "bench", input_partitions=args.input_partitions,
            batch={"max_records": max_records, "max_bytes": args.max_bytes,
                   "poll_timeout_ms": 100},
            snapshot={"every_inputs": 10**9, "on_shutdown": False},
            http={"listen": f"127.0.0.1:{port}"},
            topics={"events_partitions": args.events_partitions},
            log={"json": True, "level": "INFO"},
            engine={"core": args.core},
        )  # fmt: skip
        config = load_config(str(path), environ={})
        assert not (await create_topics(config)).problems
        values = chaos.input_stream(args.events, args.seed, args.accounts, args.markets)
        t0 = time.perf_counter()
        acked = await chaos.produce(config, values)
        produce_s = time.perf_counter() - t0
        assert len(acked) == args.events
        emit("produce", {"events": args.events, "seconds": round(produce_s, 2),
                         "events_per_s": round(args.events / produce_s)})  # fmt: skip
        emit("daemon_config", {"checkout": str(args.daemon_checkout),
                               "commit": checkout_commit(args.daemon_checkout),
                               "engine.core": args.core,
                               "batch.max_records": max_records,
                               "batch.max_bytes": args.max_bytes,
                               "input_partitions": args.input_partitions,
                               "events_partitions": args.events_partitions,
                               "active_pinned_to_cpu": getattr(args, "pin_active_cpu", None),
                               "producer": "acks=all, idempotent, transactional, linger_ms=0, "
                                           "max_batch_size=256 KiB"})  # fmt: skip
        prof = work / "daemon.prof"
        cmd = [sys.executable]
        pin_cpu = getattr(args, "pin_active_cpu", None)
        if pin_cpu is not None:
            cmd = ["taskset", "-c", str(pin_cpu), *cmd]  # exec: the same pid
        if args.profile:
            cmd += ["-m", "cProfile", "-o", str(prof)]
        daemon_path = config_for_checkout(path, args.daemon_checkout)
        cmd += ["-m", "clearing.cli", "run", "--config", str(daemon_path)]
        log_path = work / "daemon.log"
        broker_pid = broker.proc.pid if broker is not None and broker.proc else None
        broker_cpu_before = cpu_seconds(broker_pid)
        caught_up = CaughtUp(config)
        inputs = await caught_up.start(len(acked))
        with open(log_path, "wb") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=args.daemon_checkout, stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL, env=dict(os.environ))  # fmt: skip
            ready_s: float | None = None
            rps = getattr(args, "read_client_rps", 0)
            standby = (
                standby_tools.StandbyRun(args.daemon_checkout, daemon_path, work,
                                         kafka_local.free_port(), args.standby_sample_s,
                                         args.standby_nice)
                if getattr(args, "with_standby", False) else None
            )  # fmt: skip
            # --reads-to standby: the read client polls the standby (a read replica).
            reads_port = (
                standby.port if standby is not None and args.reads_to == "standby" else port
            )
            load = (
                ReadLoad(reads_port, rps, read_paths(values), args.read_max_s,
                         args.read_connections)
                if rps else None
            )  # fmt: skip
            connecting = asyncio.create_task(load.connect()) if load is not None else None
            loading: asyncio.Task[None] | None = None
            try:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"daemon exited {proc.returncode}: see {log_path}")
                    if ready_s is None:
                        with contextlib.suppress(OSError):
                            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                            ready_s = time.perf_counter() - started
                            if standby is not None:
                                # Only now: a standby started first would be elected.
                                standby.start()
                    if (
                        load is not None and connecting is not None and loading is None
                        and ready_s is not None and readable(reads_port)
                    ):  # fmt: skip
                        loading = asyncio.create_task(load.run(connecting))
                    with contextlib.suppress(Exception):
                        if await caught_up():
                            break
                    await asyncio.sleep(0.05)
                done_s = time.perf_counter() - started
                for task in (connecting, loading):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                read_load = await load.stop() if load is not None else None
                daemon_cpu = cpu_seconds(proc.pid)
                broker_cpu = cpu_seconds(broker_pid)
                # The standby stops first: the active leaving the control group would
                # hand it the ledger.
                standby_result = (
                    await finish_standby(standby, caught_up, done_s + started, inputs,
                                         max_records)
                    if standby is not None else None
                )  # fmt: skip
                last_seq = await journal_reaches(config, inputs)
                metrics = await asyncio.to_thread(scrape, port)
                proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(proc.wait, 60)
            finally:
                if standby is not None:
                    await standby.stop_sampling()
                    standby.kill()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                await caught_up.close()
        result = {
            # inputs > events only if the producer re-sent a send that had been written.
            "events": args.events, "inputs": inputs, "last_seq": last_seq,
            "ok": last_seq == inputs,
            "seconds": round(done_s, 2), "events_per_s": round(inputs / done_s),
            "startup_to_ready_s": round(ready_s, 2) if ready_s is not None else None,
            "events_per_s_after_ready": round(inputs / (done_s - (ready_s or 0))),
            "profiled": args.profile, "exit": code,
            "breakdown": breakdown(metrics, done_s),
            # CPU seconds used while the daemon ran (2 cores here): how far each side is
            # from being the bottleneck.
            "daemon_cpu_s": cpu_split(daemon_cpu, (0.0, 0.0)),
            "broker_cpu_s": cpu_split(broker_cpu, broker_cpu_before),
            "read_load": read_load,
            "reads_to": args.reads_to if rps else None,
            "standby": standby_result,
        }  # fmt: skip
        if standby_result is not None:
            result["ok"] = result["ok"] and standby_result["ok"]
        emit("daemon_end_to_end", result)
        if not result["ok"] or code != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-40:]
            print("daemon log (last 40 lines):", *tail, sep="\n", file=sys.stderr)
            if standby is not None:
                print("standby log (last 20 lines):", standby.tail(), sep="\n", file=sys.stderr)
        if args.profile and prof.exists():
            stats = pstats.Stats(str(prof))
            total = stats.total_tt  # type: ignore[attr-defined]
            rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
            top = [
                {"function": f"{Path(f).name}:{line}({fn})", "tottime_s": round(tt, 2),
                 "share": round(tt / total, 3)}
                for (f, line, fn), (_cc, _nc, tt, _ct, _callers) in rows[: args.top]
            ]  # fmt: skip
            emit("profile_top_tottime", {"total_s": round(total, 2), "top": top})
        return (0 if result["ok"] and code == 0 else 1), result
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.close)
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-records",
        type=int,
        help="batch.max_records (default: the daemon checkout's own default)",
    )
    parser.add_argument("--max-bytes", type=int, default=4 * 1024 * 1024, help="batch.max_bytes")
    parser.add_argument("--input-partitions", type=int, default=1)
    parser.add_argument("--events-partitions", type=int, default=3)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--broker-heap", default="1g")
    parser.add_argument(
        "--broker-jit",
        choices=("full", "c1"),
        default="c1",
        help="the broker JVM's JIT: full (as in production) or C1-only (the tests' fast start)",
    )
    parser.add_argument("--profile", action="store_true", help="run the daemon under cProfile")
    parser.add_argument(
        "--core", choices=("auto", "native", "python"), default="auto", help="engine.core"
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--daemon-checkout", type=Path, action="append",
        help="run the daemon from this checkout (default: this one); give it twice or "
             "more to compare versions under one harness, interleaved run by run",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="run each checkout this many times, interleaved, and print a summary "
             "(medians, and per round each checkout's throughput over the first one's)",
    )  # fmt: skip
    parser.add_argument(
        "--read-rps", type=int, default=0,
        help="also run each round with a read-API client at this many requests/s "
             "(loopback), alternating with a run without it (max 5000)",
    )  # fmt: skip
    parser.add_argument(
        "--read-connections", type=int, default=4,
        help="the read client's keep-alive connections, requests pipelined on each "
             "(1 to 1024; as many as --read-rps: many pollers, one request at a time each)",
    )  # fmt: skip
    parser.add_argument(
        "--read-max-s",
        type=float,
        default=300.0,
        help="the read client stops after this many seconds (and rps x this many requests)",
    )
    parser.add_argument(
        "--standby", action="store_true",
        help="also run each round with a hot standby (clearing run --role standby) "
             "following the journal, alternating with a run without it; report its lag",
    )  # fmt: skip
    parser.add_argument(
        "--standby-sample-s", type=float, default=0.1,
        help="how often the standby's lag is sampled (its /metrics), seconds",
    )  # fmt: skip
    parser.add_argument(
        "--standby-nice", type=int, default=0, choices=range(20), metavar="0..19",
        help="run the standby at this niceness: on a machine where the active, the broker "
             "and the standby share the cores, 19 leaves the active and the broker their "
             "CPU, so the ratio shows the standby's other costs (its fetches from the "
             "broker), as with the standby on another machine; its lag then shows "
             "nothing about keeping up",
    )  # fmt: skip
    parser.add_argument(
        "--reads-to", choices=("active", "standby"), default="active",
        help="where the read client sends its requests; standby (with --standby and "
             "--read-rps): a standby runs in both arms and the reads go to it, so the "
             "comparison is the active's throughput with and without reads on its standby",
    )  # fmt: skip
    parser.add_argument(
        "--pin-active-cpu", type=int, default=None, metavar="CPU",
        help="run the daemon alone on this CPU and everything else (this harness, the "
             "broker it starts, a standby, the read client) on the others: on a 2-core "
             "machine the nearest thing to the active having its own host",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.pin_active_cpu is not None:
        others = os.sched_getaffinity(0) - {args.pin_active_cpu}
        if args.pin_active_cpu not in os.sched_getaffinity(0) or not others:
            parser.error("--pin-active-cpu needs a CPU this process may use, and one more")
        # Before the broker starts: its process inherits this affinity.
        os.sched_setaffinity(0, others)
    if args.reads_to == "standby" and not (args.standby and args.read_rps):
        parser.error("--reads-to standby needs --standby and --read-rps")
    if args.standby and args.read_rps and args.reads_to != "standby":
        parser.error(
            "--standby and --read-rps are separate comparisons: give one of them, or add "
            "--reads-to standby (a standby in both arms, the reads on it in one)"
        )
    if args.standby_sample_s <= 0:
        parser.error("--standby-sample-s must be positive")
    if not 0 <= args.read_rps <= 5000:
        parser.error("--read-rps must be from 0 to 5000")
    if not 1 <= args.read_connections <= 1024:
        parser.error("--read-connections must be from 1 to 1024")
    if args.read_max_s <= 0:
        parser.error("--read-max-s must be positive")
    checkouts: list[Path] = args.daemon_checkout or [REPO]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if len({c.resolve() for c in checkouts}) < len(checkouts):
        parser.error("--daemon-checkout names the same checkout twice")
    # The machine's speed drifts (see BENCHMARKS.md): versions are compared run against
    # run in the same minutes, never against numbers from another hour.
    results: dict[Path, list[dict[str, Any] | None]] = {c: [] for c in checkouts}
    loaded: dict[Path, list[dict[str, Any] | None]] = {c: [] for c in checkouts}
    code = 0
    for round_no in range(args.rounds):
        for checkout in checkouts:
            args.daemon_checkout = checkout
            # With a read client or a standby: without and with it, the order
            # alternating by round.
            plan = [False, True] if args.read_rps or args.standby else [False]
            for with_it in plan if round_no % 2 == 0 else plan[::-1]:
                args.read_client_rps = args.read_rps if with_it else 0
                # --reads-to standby: a standby in both arms, the reads the difference.
                args.with_standby = args.standby and (with_it or args.reads_to == "standby")
                run_code, result = asyncio.run(run(args))
                code = code or run_code
                (loaded if with_it else results)[checkout].append(result)
    if args.rounds > 1 or len(checkouts) > 1:
        emit("summary", summarize(results))
    if args.read_rps:
        emit("read_load_summary", summarize_with_without(results, loaded, "read_load"))
    if args.standby and args.reads_to != "standby":
        emit("standby_summary", summarize_with_without(results, loaded, "standby"))
    return code


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(results: dict[Path, list[dict[str, Any] | None]]) -> dict[str, Any]:
    """Medians per checkout over its runs and, against the first checkout, the median of
    the per-round ratios (a failed run leaves its round out of the ratios)."""
    first = next(iter(results))
    out: dict[str, Any] = {}
    for checkout, runs in results.items():
        ok = [r for r in runs if r is not None and r["ok"]]
        entry: dict[str, Any] = {
            "commit": checkout_commit(checkout),
            "events_per_s": [r["events_per_s"] if r else None for r in runs],
            "median_events_per_s": _median([r["events_per_s"] for r in ok]),
            "median_daemon_cpu_s": _median([r["daemon_cpu_s"]["total"] for r in ok]),
            # None with --bootstrap: the broker is not ours to measure.
            "median_broker_cpu_s": _median(
                [r["broker_cpu_s"]["total"] for r in ok if r["broker_cpu_s"] is not None]
            ),
        }
        if checkout != first:
            ratios = [
                round(r["events_per_s"] / base["events_per_s"], 3)
                for r, base in zip(runs, results[first], strict=True)
                if r is not None and base is not None and r["ok"] and base["ok"]
            ]
            entry[f"ratio_to_{first}"] = ratios
            entry["median_ratio"] = _median(ratios)
        out[str(checkout)] = entry
    return out


def summarize_with_without(
    without: dict[Path, list[dict[str, Any] | None]],
    with_it: dict[Path, list[dict[str, Any] | None]],
    detail: str,
) -> dict[str, Any]:
    """Per checkout: the median throughput without and with the extra load (the read
    client, the standby), and per round the ratio with/without (a failed run leaves its
    round out); ``detail``, each with-run's own report of the load, as a list."""
    out: dict[str, Any] = {}
    for checkout, plain in without.items():
        pairs = [
            (base, loaded)
            for base, loaded in zip(plain, with_it[checkout], strict=True)
            if base is not None and loaded is not None and base["ok"] and loaded["ok"]
        ]
        ratios = [round(loaded["events_per_s"] / base["events_per_s"], 3) for base, loaded in pairs]
        # What the reads cost the daemon itself, whatever else shares the machine: its
        # extra CPU time over the run without them, per answered request.
        extra_cpu_us = [
            round(
                (loaded["daemon_cpu_s"]["total"] - base["daemon_cpu_s"]["total"])
                / loaded["read_load"]["answered"]
                * 1e6
            )
            for base, loaded in pairs
            if loaded.get("read_load") and loaded["read_load"]["answered"]
        ]
        out[str(checkout)] = {
            "median_events_per_s_without": _median([b["events_per_s"] for b, _ in pairs]),
            "median_events_per_s_with": _median([w["events_per_s"] for _, w in pairs]),
            "ratio_with_over_without": ratios,
            "median_ratio": _median(ratios),
            "failed_rounds": len(plain) - len(pairs),
            detail: [w[detail] for _, w in pairs],
        }
        if detail == "read_load":
            out[str(checkout)]["daemon_extra_cpu_us_per_answer"] = extra_cpu_us
    return out


def default_max_records(checkout: Path) -> int:
    """The checkout's own default ``batch.max_records`` (versions differ in it)."""
    code = "from clearing.ops.config import BatchConfig; print(BatchConfig().max_records)"
    out = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return int(out.stdout)


_UNKNOWN_KEY = re.compile(r"unknown key '([a-z_]+)\.([a-z_]+)'")


def config_for_checkout(path: Path, checkout: Path) -> Path:
    """``path`` as the daemon of ``checkout`` accepts it: an older checkout refuses keys
    added after it (e.g. ``topics.snapshots``), so each key its own loader names unknown
    is dropped, one at a time, into a copy. Those keys only name topics and settings the
    older code has no use for."""
    text = path.read_text()
    check = (
        "import sys; from clearing.ops.config import load_config; "
        "load_config(sys.argv[1], environ={})"
    )
    for _ in range(20):
        trial = path.with_suffix(".checkout.toml")
        trial.write_text(text)
        done = subprocess.run([sys.executable, "-c", check, str(trial)], cwd=checkout,
                              capture_output=True, text=True)  # fmt: skip
        unknown = _UNKNOWN_KEY.search(done.stderr)
        if done.returncode == 0 or unknown is None:
            return trial
        section, key = unknown.groups()
        text = _drop_key(text, section, key)
    return trial


def _drop_key(text: str, section: str, key: str) -> str:
    out, current = [], None
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped.strip("[]")
        elif current == section and stripped.split("=")[0].strip() == key:
            continue
        out.append(line)
    return "".join(out)


def checkout_commit(checkout: Path) -> str:
    """The checkout's commit, with "+dirty" when it has uncommitted changes."""
    git = ["git", "-C", str(checkout)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown"
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return head.stdout.strip() + ("+dirty" if dirty else "")


if __name__ == "__main__":
    sys.exit(main())
