#!/usr/bin/env python3
"""Fault injection for the Kafka daemon: kill -9, SIGTERM and broker restarts/outages
while a producer feeds realistic inputs through the real local broker.

One trial:

1. fresh topics and ledger id on the broker (the tool's own LocalKafka, or --bootstrap);
2. a producer feeds ``--events`` inputs from ``tools/gen_events.py`` at ``--rate``/s,
   each routed to its input topic by type (admin/oracle/book/fills, 2 partitions each);
3. meanwhile a supervisor loop runs ``clearing run --config F`` as a subprocess and
   restarts it whenever it exits (exit 1 = failure, 3 = fenced, 0 = after a SIGTERM);
   exit 2 or 4 (bad config / refused to start) fails the trial: a person would have to
   look. A chaos loop hits it every 0.1..``--max-gap`` s with one of ``--faults``:
   ``kill`` (SIGKILL the daemon), ``term`` (SIGTERM), ``broker-restart``
   (LocalKafka.restart()), ``broker-kill`` (SIGKILL the broker, start it again),
   ``broker-outage`` (stop the broker for ``--outage-s`` s, then start it);
4. once the producer is done and the chaos loop has stopped, the last daemon runs until
   the consumer group's committed offsets reach every input partition's end, then gets
   SIGTERM (it must exit 0);
5. checks (``verify``): every record of every input topic is journaled exactly once
   (source = its topic:partition:offset, payload = its bytes, per-partition order kept);
   the journal verifies (seqs 1..N, chain hashes) with the daemon's own reader; the
   read_committed events topic sorted by the (seq, index) headers is, byte for byte and
   once each, ``clearing replay`` of the journal's payloads; each journal record's
   recorded outputs are those bytes; every DLQ record is a distinct input.

``--mode standby`` runs two processes of the ledger instead (both ``--role standby``,
each under its own supervisor, each with its own snapshot directory): the faults
(``kill``, ``term``) hit either at random, and some kills also delete that process's
snapshot directory before it restarts. The checks are the same.

Prints one JSON line per trial and a summary line:

    python tools/kafka_chaos.py --trials 100 --events 50000 --seed 1
    python tools/kafka_chaos.py --trials 5 --faults kill,term,broker-restart,broker-outage
    python tools/kafka_chaos.py --mode standby --trials 50 --events 20000 --faults kill,term

The broker faults need the tool's own broker (no --bootstrap). Exit status 0 iff every
trial passed. Trial directories (daemon logs, config) are kept under --work for failed
trials only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

# Runnable from a checkout without an install.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clearing.journal import Record
from clearing.kafka import HEADER_INDEX, HEADER_SEQ, KafkaJournalReader, create_topics
from clearing.kafka._batch import HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, parse_source
from clearing.kafka._batch import HEADER_SOURCE_TOPIC as HEADER_DLQ_TOPIC
from clearing.kafka._topics import describe_partitions
from clearing.ops.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
FAULTS = ("kill", "term", "broker-restart", "broker-kill", "broker-outage")
BROKER_FAULTS = frozenset({"broker-restart", "broker-kill", "broker-outage"})
EXIT_OK, EXIT_BAD_CONFIG, EXIT_RECOVERY = 0, 2, 4
ROLE_OF_TYPE = {"market": "admin", "deposit": "admin", "withdraw": "admin",
                "oracle": "oracle", "book": "book", "fill": "fills"}  # fmt: skip
MAX_MESSAGE_BYTES = 65536


def load_tool(name: str) -> ModuleType:
    """A module from tools/ by path (tools/ is not a package); shared via sys.modules."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


kafka_local = load_tool("kafka_local")
gen_events = load_tool("gen_events")


class TrialFailed(AssertionError):
    """A trial's outcome is wrong (or the daemon refused to run); the message says how."""


# ----------------------------------------------------------------------------- config


def write_config(
    work: Path,
    bootstrap: str,
    name: str = "chaos",
    *,
    input_partitions: int = 2,
    **sections: dict[str, Any],
) -> Path:
    """A daemon TOML config with fresh topic names and ledger id."""
    suffix = uuid.uuid4().hex[:8]
    prefix = f"{name}-{suffix}"
    base: dict[str, dict[str, Any]] = {
        "kafka": {"bootstrap_servers": [bootstrap], "request_timeout_ms": 15000},
        "topics": {
            **{
                role: f"{prefix}.{role}"
                for role in (
                    "admin",
                    "oracle",
                    "book",
                    "fills",
                    "events",
                    "journal",
                    "dlq",
                    "snapshots",
                    "control",
                )
            },
            "replication_factor": 1,
            "input_partitions": input_partitions,
            "events_partitions": 3,
        },
        "batch": {"max_records": 200, "poll_timeout_ms": 50},
        "limits": {"max_message_bytes": MAX_MESSAGE_BYTES},
        "snapshot": {"dir": str(work / "snapshots"), "every_inputs": 7000, "keep": 3},
        "http": {"listen": ""},
        "log": {"json": True},
        "daemon": {"shutdown_timeout_s": 20.0, "fence_probe_interval_s": 2.0},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    lines = [f'ledger_id = "{prefix}"']
    for section, values in base.items():  # "kafka.security" is a section name too
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{prefix}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def input_stream(events: int, seed: int, accounts: int = 500, markets: int = 8) -> list[bytes]:
    return list(gen_events.generate(events, accounts, markets, seed))


def role_of(raw: bytes) -> str:
    return ROLE_OF_TYPE[msgspec.json.decode(raw)["type"]]


# --------------------------------------------------------------------------- kafka io


async def produce(
    config: Config,
    values: Sequence[bytes],
    *,
    rate: float | None = None,
    kwargs: dict[str, Any] | None = None,
) -> dict[tuple[str, int, int], bytes]:
    """Produce ``values`` (at ``rate``/s if set), retrying through broker outages.

    Returns {(topic, partition, offset): value} of the acknowledged sends. A send that
    failed may still have been written (and is re-sent): the input topics themselves are
    the ground truth for what the daemon must journal.
    """
    producer = AIOKafkaProducer(
        **(kwargs or {"bootstrap_servers": config.kafka.bootstrap_servers}),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=30000,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    acked: dict[tuple[str, int, int], bytes] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunk = 500
    try:
        for first in range(0, len(values), chunk):
            if rate:
                delay = started + first / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending = list(values[first : first + chunk])
            for attempt in range(60):
                futures = []
                for value in pending:
                    topic = str(getattr(config.topics, role_of(value)))
                    futures.append(await producer.send(topic, value))
                results = await asyncio.gather(*futures, return_exceptions=True)
                retry = []
                for value, result in zip(pending, results, strict=True):
                    if isinstance(result, BaseException):
                        retry.append(value)
                    else:
                        acked[result.topic, result.partition, result.offset] = value
                if not retry:
                    break
                # Per-partition order of the retried tail is kept (it is a suffix
                # of each partition's sends); what matters is only that every record
                # present in the input topics gets journaled exactly once.
                pending = retry
                await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
            else:
                raise TrialFailed(f"producer could not send {len(pending)} inputs")
    finally:
        await producer.stop()
    return acked


async def partitions_of(
    config: Config, topics: Sequence[str], kwargs: dict[str, Any] | None = None
) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**(kwargs or {"bootstrap_servers": config.kafka.bootstrap_servers}))
    await admin.start()
    try:
        found = await describe_partitions(admin, topics)
    finally:
        await admin.close()
    return [TopicPartition(t, p) for t in topics for p in range(found.get(t) or 0)]


async def read_topic(
    config: Config,
    topics: Sequence[str],
    *,
    kwargs: dict[str, Any] | None = None,
    timeout_s: float = 300.0,
) -> list[ConsumerRecord]:
    """Every read_committed record of ``topics`` up to their end (last stable) offsets."""
    consumer = AIOKafkaConsumer(
        **(kwargs or {"bootstrap_servers": config.kafka.bootstrap_servers}),
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        tps = await partitions_of(config, topics, kwargs)
        if not tps:
            raise TrialFailed(f"topics {topics} not found")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while remaining:
            if asyncio.get_running_loop().time() > deadline:
                raise TrialFailed(f"reading {topics} timed out ({len(records)} records read)")
            batches = await consumer.getmany(timeout_ms=200, max_records=20000)
            for batch in batches.values():
                records.extend(batch)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return records


async def group_caught_up(config: Config, *, kwargs: dict[str, Any] | None = None) -> bool:
    """Has the ledger's consumer group committed every input partition up to its end?"""
    kw = kwargs or {"bootstrap_servers": config.kafka.bootstrap_servers}
    admin = AIOKafkaAdminClient(**kw)
    consumer = AIOKafkaConsumer(**kw, group_id=None, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(config.group_id)
        tps = await partitions_of(config, config.topics.inputs, kwargs)
        ends = await consumer.end_offsets(tps)
        return all(
            ends[tp] == 0 or (tp in committed and committed[tp].offset >= ends[tp]) for tp in tps
        )
    finally:
        await consumer.stop()
        await admin.close()


def header(record: ConsumerRecord, name: str) -> bytes | None:
    for key, value in record.headers:
        if key == name:
            return bytes(value)
    return None


def replay_cli(work: Path, payloads: list[bytes]) -> list[bytes]:
    """``clearing replay`` over the payloads (a .jsonl file): the auditor's outputs."""
    inputs = work / "journal-payloads.jsonl"
    inputs.write_bytes(b"".join(p + b"\n" for p in payloads))
    events = work / "replayed.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "clearing.cli", "replay", str(inputs), "--rules", "1",
         "--events", str(events)],
        capture_output=True, cwd=REPO, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise TrialFailed(f"clearing replay failed: {proc.stderr.decode()[-2000:]}")
    return events.read_bytes().splitlines()


def read_journal(config: Config) -> list[Record]:
    """The whole journal, verified (seqs from 1, chain hashes) by the daemon's reader."""
    with KafkaJournalReader(config) as reader:
        return list(reader.read())


async def verify(
    config: Config,
    work: Path,
    acked: dict[tuple[str, int, int], bytes],
    *,
    kwargs: dict[str, Any] | None = None,
) -> dict[str, int]:
    """The end-to-end checks of one run (see the module docstring). Raises TrialFailed."""

    def check(cond: bool, what: str) -> None:
        if not cond:
            raise TrialFailed(what)

    inputs = {
        (r.topic, r.partition, r.offset): r.value
        for r in await read_topic(config, config.topics.inputs, kwargs=kwargs)
    }
    for where, value in acked.items():
        check(inputs.get(where) == value, f"acknowledged input {where} missing or changed")
    journal = await asyncio.to_thread(read_journal, config)
    check([r.seq for r in journal] == list(range(1, len(journal) + 1)), "journal seqs")
    sources: dict[tuple[str, int, int], int] = {}
    last_offset: dict[tuple[str, int], int] = {}
    for record in journal:
        where = parse_source(record.source)
        check(where is not None, f"seq {record.seq}: source {record.source!r}")
        assert where is not None
        check(where not in sources, f"input {where} journaled twice (seq {sources.get(where)}"
                                    f" and {record.seq})")  # fmt: skip
        sources[where] = record.seq
        check(inputs.get(where) == record.payload, f"seq {record.seq}: payload != input {where}")
        tp = (where[0], where[1])
        check(last_offset.get(tp, -1) < where[2], f"seq {record.seq}: {tp} out of order")
        last_offset[tp] = where[2]
    lost = sorted(set(inputs) - set(sources))
    check(not lost, f"{len(lost)} inputs never journaled, first {lost[:5]}")
    payloads = [r.payload for r in journal]
    expected = replay_cli(work, payloads)
    check(
        b"".join(r.outputs for r in journal) == b"".join(e + b"\n" for e in expected),
        "journal records' outputs != clearing replay",
    )
    keyed: list[tuple[tuple[int, int], bytes]] = []
    for r in await read_topic(config, [config.topics.events], kwargs=kwargs):
        seq, index = int(header(r, HEADER_SEQ) or b"-1"), int(header(r, HEADER_INDEX) or b"-1")
        keyed.append(((seq, index), r.value))
    keyed.sort()
    keys = [k for k, _ in keyed]
    dupes = len(keys) - len(set(keys))
    check(dupes == 0, f"{dupes} output events emitted twice")
    got = [v for _, v in keyed]
    if got != expected:
        first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                     min(len(got), len(expected)))  # fmt: skip
        raise TrialFailed(
            f"events topic != clearing replay: {len(got)} vs {len(expected)} events, first "
            f"difference at #{first}: {got[first : first + 1]!r} vs {expected[first : first + 1]!r}"
        )
    dlq = await read_topic(config, [config.topics.dlq], kwargs=kwargs)
    dlq_sources = [
        (header(r, HEADER_DLQ_TOPIC), header(r, HEADER_SOURCE_PARTITION),
         header(r, HEADER_SOURCE_OFFSET)) for r in dlq
    ]  # fmt: skip
    check(len(dlq_sources) == len(set(dlq_sources)), "an input went to the DLQ twice")
    return {"inputs": len(inputs), "journal": len(journal), "events": len(got), "dlq": len(dlq)}


async def delete_trial_topics(config: Config) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka.bootstrap_servers)
    await admin.start()
    try:
        t = config.topics
        await admin.delete_topics([*t.inputs, t.events, t.journal, t.dlq, t.snapshots, t.control])
    finally:
        await admin.close()


# ------------------------------------------------------------------------ supervisor


@dataclass
class Supervisor:
    """Runs ``clearing run`` as a subprocess and restarts it whenever it exits."""

    config_path: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    restart_delay_s: float = 0.3
    proc: asyncio.subprocess.Process | None = None
    exits: list[int] = field(default_factory=list)
    starts: int = 0
    stopping: bool = False
    refused: str | None = None
    start_offset: int = 0
    # Standby mode: this process's own snapshot directory, deleted before the next start
    # when ``wipe_next`` is set (the machine's disk was lost with the process).
    snapshot_dir: Path | None = None
    wipe_next: bool = False
    wipes: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while not self.stopping:
            if self.wipe_next and self.snapshot_dir is not None:
                shutil.rmtree(self.snapshot_dir, ignore_errors=True)
                self.wipe_next = False
                self.wipes += 1
            with open(self.log_path, "ab") as log:
                self.starts += 1
                self.start_offset = log.tell()
                log.write(f"--- start #{self.starts} at {time.time():.3f}\n".encode())
                log.flush()
                self.proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "clearing.cli", "run", "--config",
                    str(self.config_path), cwd=REPO, env=self.env,
                    stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                )  # fmt: skip
                code = await self.proc.wait()
            self.exits.append(code)
            if code in (EXIT_BAD_CONFIG, EXIT_RECOVERY):
                self.refused = f"daemon exited {code}; see {self.log_path}:\n{self.log_tail()}"
                return
            if self.stopping:
                return
            await asyncio.sleep(self.restart_delay_s)

    def serving(self) -> bool:
        """Is the current daemon alive and past recovery ("ready" logged since its start)?"""
        if self.proc is None or self.proc.returncode is not None:
            return False
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.start_offset)
                return b'"msg":"ready: ledger' in log.read()
        except OSError:
            return False

    def past_startup(self) -> bool:
        """Has the current process installed its signal handlers and begun its work
        (a standby recovered, or an active ready)? A SIGTERM before that kills it by
        the signal's default action, before any of its work began."""
        if self.proc is None or self.proc.returncode is not None:
            return False
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.start_offset)
                text = log.read()
        except OSError:
            return False
        return b'"msg":"standby: recovered' in text or b'"msg":"ready: ledger' in text

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def signal(self, sig: signal.Signals) -> bool:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
            return True
        return False

    async def stop(self, timeout_s: float = 40.0) -> int | None:
        """SIGTERM the current daemon and stop restarting; its exit code."""
        self.stopping = True
        self.signal(signal.SIGTERM)
        assert self._task is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await self._task
            return None
        return self.exits[-1] if self.exits else None


# ---------------------------------------------------------------------------- trials


@dataclass
class TrialResult:
    trial: int
    seed: int
    ok: bool
    seconds: float
    faults: dict[str, int]
    daemon_starts: int
    exit_codes: dict[str, int]
    counts: dict[str, int]
    error: str | None = None
    work: str | None = None

    def as_json(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if v is not None})


async def _apply_fault(
    fault: str, sup: Supervisor, broker: Any, outage_s: float, rng: random.Random
) -> None:
    if fault in ("kill", "term"):
        proc = sup.proc
        if sup.signal(signal.SIGKILL if fault == "kill" else signal.SIGTERM):
            assert proc is not None
            await asyncio.wait_for(proc.wait(), 60)
    elif fault == "broker-restart":
        await asyncio.to_thread(broker.restart)
    elif fault == "broker-kill":
        await asyncio.to_thread(broker.kill)
        await asyncio.to_thread(broker.start)
    elif fault == "broker-outage":
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(outage_s * rng.uniform(0.7, 1.0))
        await asyncio.to_thread(broker.start)
    else:
        raise ValueError(fault)


async def run_trial(
    bootstrap: str,
    *,
    trial: int = 0,
    events: int = 50_000,
    seed: int = 1,
    rate: float | None = 5000.0,
    faults: Sequence[str] = ("kill",),
    max_gap_s: float = 3.0,
    outage_s: float = 15.0,
    broker: Any = None,
    work_root: Path | None = None,
    keep: bool = False,
    catch_up_timeout_s: float = 600.0,
    schedule: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrialResult:
    """One trial (see the module docstring); never raises for a wrong outcome.

    ``schedule``: apply exactly these faults in this order (random gaps), instead of
    random ones from ``faults`` until the producer is done.
    """
    if BROKER_FAULTS & set(schedule or faults) and broker is None:
        raise ValueError("broker faults need the LocalKafka object")
    rng = random.Random(seed * 1_000_003 + trial)
    work = Path(tempfile.mkdtemp(prefix=f"chaos-{trial}-", dir=work_root))
    say = log or (lambda _msg: None)
    config_path = write_config(work, bootstrap)
    sup = Supervisor(config_path, work / "daemon.log")
    planned = list(schedule or ())

    async def hit(fault_counts: dict[str, int]) -> None:
        fault = planned.pop(0) if schedule else rng.choice(list(faults))
        fault_counts[fault] = fault_counts.get(fault, 0) + 1
        say(f"trial {trial}: {fault} (daemon start #{sup.starts})")
        await _apply_fault(fault, sup, broker, outage_s, rng)

    return await _supervised_trial(
        config_path, work, [sup], hit, rng,
        trial=trial, events=events, seed=seed, rate=rate, max_gap_s=max_gap_s,
        hits=len(planned) if schedule else None, keep=keep,
        catch_up_timeout_s=catch_up_timeout_s,
    )  # fmt: skip


STANDBY_SESSION_MS = 3000


async def run_standby_trial(
    bootstrap: str,
    *,
    trial: int = 0,
    events: int = 50_000,
    seed: int = 1,
    rate: float | None = 5000.0,
    faults: Sequence[str] = ("kill",),
    max_gap_s: float = 3.0,
    wipe_probability: float = 0.4,
    work_root: Path | None = None,
    keep: bool = False,
    catch_up_timeout_s: float = 600.0,
    log: Callable[[str], None] | None = None,
) -> TrialResult:
    """``--mode standby``: two processes of one ledger, both ``--role standby`` (Kafka's
    control group elects the active one), each restarted by its own supervisor. The
    chaos loop kills (or SIGTERMs) either one at random, and on some kills deletes that
    process's snapshot directory before it restarts (its machine's disk is gone, so it
    restores from the snapshot topic). Same checks as a single-process trial."""
    rng = random.Random(seed * 1_000_003 + trial)
    work = Path(tempfile.mkdtemp(prefix=f"chaos-standby-{trial}-", dir=work_root))
    say = log or (lambda _msg: None)
    config_path = write_config(
        work, bootstrap, daemon={"shutdown_timeout_s": 20.0, "fence_probe_interval_s": 2.0,
                                 "role": "standby", "session_timeout_ms": STANDBY_SESSION_MS}
    )  # fmt: skip
    sups = []
    for name in ("a", "b"):
        snapshots = work / f"snapshots-{name}"
        env = {**os.environ, "CLEARING_SNAPSHOT_DIR": str(snapshots)}
        sups.append(Supervisor(config_path, work / f"daemon-{name}.log", env=env,
                               snapshot_dir=snapshots))  # fmt: skip

    async def hit(fault_counts: dict[str, int]) -> None:
        target = rng.choice(sups)
        fault = rng.choice(list(faults))
        wipe = fault == "kill" and rng.random() < wipe_probability
        key = f"{fault}+wipe" if wipe else fault
        fault_counts[key] = fault_counts.get(key, 0) + 1
        role = "active" if target.serving() else "standby"
        say(f"trial {trial}: {key} of {target.log_path.name} ({role})")
        # Only ever set here: a later fault before the restart must not cancel a wipe.
        target.wipe_next = target.wipe_next or wipe
        await _apply_fault(fault, target, None, 0.0, rng)

    return await _supervised_trial(
        config_path, work, sups, hit, rng,
        trial=trial, events=events, seed=seed, rate=rate, max_gap_s=max_gap_s, hits=None,
        keep=keep, catch_up_timeout_s=catch_up_timeout_s,
    )  # fmt: skip


async def _supervised_trial(
    config_path: Path,
    work: Path,
    sups: list[Supervisor],
    hit: Callable[[dict[str, int]], Awaitable[None]],
    rng: random.Random,
    *,
    trial: int,
    events: int,
    seed: int,
    rate: float | None,
    max_gap_s: float,
    hits: int | None,
    keep: bool,
    catch_up_timeout_s: float,
) -> TrialResult:
    """The trial both modes run over their supervisors: start them and the producer,
    ``hit`` every 0.1..``max_gap_s`` s (``hits`` times, or while the producer runs and
    three times after), wait until one of them serves with the inputs all consumed,
    SIGTERM them (the standby first), check; never raises for a wrong outcome."""
    started = time.monotonic()
    fault_counts: dict[str, int] = {}
    counts: dict[str, int] = {}
    error: str | None = None
    config = load_config(str(config_path), environ={})
    try:
        report = await create_topics(config)
        if report.problems:
            raise TrialFailed(f"topics: {report.problems}")
        values = input_stream(events, seed=seed + trial)
        for sup in sups:
            sup.start()
        producing = asyncio.create_task(produce(config, values, rate=rate))
        extra, done = 3, 0
        while done < hits if hits is not None else (not producing.done() or extra > 0):
            await asyncio.sleep(rng.uniform(0.1, max_gap_s))
            _raise_refused(sups)
            if producing.done():
                extra -= 1
            await hit(fault_counts)
            done += 1
        acked = await producing
        deadline = time.monotonic() + catch_up_timeout_s
        await _wait_caught_up(config, sups, deadline)
        await _stop_all(sups, deadline)
        counts = await verify(config, work, acked)
        if any(sup.snapshot_dir is not None for sup in sups):
            counts["wipes"] = sum(sup.wipes for sup in sups)
        if len(acked) != events:
            raise TrialFailed(f"{len(acked)} of {events} inputs acknowledged")
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        for sup in sups:
            if not sup.stopping and sup._task is not None:
                await sup.stop()
    exit_codes: dict[str, int] = {}
    for sup in sups:
        for code in sup.exits:
            exit_codes[str(code)] = exit_codes.get(str(code), 0) + 1
    result = TrialResult(
        trial=trial, seed=seed, ok=error is None, seconds=round(time.monotonic() - started, 1),
        faults=fault_counts, daemon_starts=sum(sup.starts for sup in sups),
        exit_codes=exit_codes, counts=counts, error=error,
        work=str(work) if error or keep else None,
    )  # fmt: skip
    if error is None:
        with contextlib.suppress(Exception):
            await delete_trial_topics(config)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _raise_refused(sups: Sequence[Supervisor]) -> None:
    for sup in sups:
        if sup.refused:
            raise TrialFailed(sup.refused)


async def _wait_caught_up(config: Config, sups: Sequence[Supervisor], deadline: float) -> None:
    """Until a process serves and the group's offsets reach every input partition's end."""
    while True:
        _raise_refused(sups)
        with contextlib.suppress(Exception):
            if any(sup.serving() for sup in sups) and await group_caught_up(config):
                return
        if time.monotonic() > deadline:
            tails = "\n".join(sup.log_tail() for sup in sups)
            raise TrialFailed(f"no daemon caught up in time:\n{tails}")
        await asyncio.sleep(0.5)


async def _stop_all(sups: Sequence[Supervisor], deadline: float) -> None:
    """SIGTERM every process; each must exit 0."""
    # The final SIGTERMs go to running processes (one just restarted would die of it
    # before installing its handler).
    while not all(sup.past_startup() for sup in sups):
        if time.monotonic() > deadline:
            raise TrialFailed("a restarted process never got past its start-up")
        await asyncio.sleep(0.2)
    # The standby first (its stop changes nothing), then the active.
    for sup in sorted(sups, key=lambda s: s.serving()):
        code = await sup.stop()
        if code != EXIT_OK:
            raise TrialFailed(f"final SIGTERM of {sup.log_path.name}: exit {code}:\n"
                              f"{sup.log_tail()}")  # fmt: skip


async def _main(args: argparse.Namespace) -> int:
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        print(f"unknown faults {sorted(unknown)}; choose from {FAULTS}", file=sys.stderr)
        return 2
    if args.mode == "standby" and set(faults) - {"kill", "term"}:
        print("--mode standby takes the faults kill and term", file=sys.stderr)
        return 2
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = kafka_local.LocalKafka(heap=args.broker_heap)
        await asyncio.to_thread(broker.start)
        bootstrap = broker.bootstrap
    elif BROKER_FAULTS & set(faults):
        print("broker faults need the tool's own broker (drop --bootstrap)", file=sys.stderr)
        return 2
    work_root = Path(args.work) if args.work else None
    if work_root:
        work_root.mkdir(parents=True, exist_ok=True)
    passed = 0
    seconds: list[float] = []
    try:
        for trial in range(args.trials):
            if args.mode == "standby":
                result = await run_standby_trial(
                    bootstrap, trial=trial, events=args.events, seed=args.seed,
                    rate=args.rate, faults=faults, max_gap_s=args.max_gap,
                    work_root=work_root, keep=args.keep,
                    log=(lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None,
                )  # fmt: skip
                print(result.as_json(), flush=True)
                passed += result.ok
                seconds.append(result.seconds)
                if not result.ok and args.stop_on_failure:
                    break
                continue
            result = await run_trial(
                bootstrap, trial=trial, events=args.events, seed=args.seed, rate=args.rate,
                faults=faults, max_gap_s=args.max_gap, outage_s=args.outage_s, broker=broker,
                work_root=work_root, keep=args.keep,
                log=(lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None,
            )  # fmt: skip
            print(result.as_json(), flush=True)
            passed += result.ok
            seconds.append(result.seconds)
            if not result.ok and args.stop_on_failure:
                break
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.close)
    summary = {
        "mode": args.mode,
        "trials": len(seconds), "passed": passed, "events": args.events, "faults": faults,
        "seconds_per_trial": round(sum(seconds) / max(1, len(seconds)), 1),
    }  # fmt: skip
    print(json.dumps({"summary": summary}), flush=True)
    return 0 if passed == len(seconds) == args.trials else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument(
        "--mode",
        choices=("single", "standby"),
        default="single",
        help="single: one daemon; standby: two processes (Kafka elects the active), "
        "faults hit either, some kills delete that process's snapshot directory",
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=5000.0, help="inputs/s; 0 = unthrottled")
    parser.add_argument("--faults", default="kill", help=f"comma list of {','.join(FAULTS)}")
    parser.add_argument("--max-gap", type=float, default=3.0, help="max s between faults")
    parser.add_argument("--outage-s", type=float, default=15.0)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--broker-heap", default="1g")
    parser.add_argument("--work", help="parent dir for trial dirs (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep topics and dirs of passes")
    parser.add_argument("--stop-on-failure", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.rate = args.rate or None
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
