"""The Kafka daemon against the real local broker: exactly-once consume -> journal ->
apply -> emit, recovery, fencing, DLQ and shutdown.

Every test gets its own topics and ledger id, so they share the session broker without
seeing each other. Daemons run in-process as asyncio tasks (fast), except the SIGTERM
test, which runs ``clearing run`` as a real subprocess. The reference for "correct
outputs" is always ``clearing replay`` (or the engine) over the journal's payloads in
journal order: identical bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from clearing.engine import Engine, encode_output, load_engine
from clearing.engine.persist import dump_state
from clearing.journal import GENESIS_HASH, Record, chain_hash
from clearing.kafka import (
    EXIT_FAILURE,
    EXIT_FENCED,
    EXIT_OK,
    EXIT_RECOVERY,
    EXIT_SHUTDOWN_TIMEOUT,
    HEADER_INDEX,
    HEADER_SEQ,
    Daemon,
    InputRecord,
    JournalChain,
    KafkaJournalError,
    KafkaJournalReader,
    create_topics,
    decode_journal_message,
    encode_journal_block,
    encode_journal_value,
    order_records,
    plan_batch,
    recover_from_kafka,
)
from clearing.kafka._clients import client_kwargs, make_producer
from clearing.ops.config import Config, ConfigError, Secret, load_config
from clearing.sequencer import encode_outputs
from clearing.snapshot import list_snapshots, read_snapshot, write_snapshot

pytestmark = pytest.mark.kafka

kafka_local = sys.modules["kafka_local"]  # loaded by conftest.py
REPO = Path(__file__).resolve().parents[2]
TEST_TIMEOUT_S = 90.0
MAX_MESSAGE_BYTES = 4096


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ----------------------------------------------------------------------------- config


def write_config(tmp_path: Path, bootstrap: str, name: str = "t", **sections: Any) -> Path:
    """A TOML config with fresh topic names and ledger id (sections override keys)."""
    suffix = uuid.uuid4().hex[:8]
    base: dict[str, dict[str, Any]] = {
        "kafka": {"bootstrap_servers": [bootstrap], "request_timeout_ms": 15000},
        "topics": {
            "fills": f"{name}-{suffix}.fills",
            "oracle": f"{name}-{suffix}.oracle",
            "book": f"{name}-{suffix}.book",
            "admin": f"{name}-{suffix}.admin",
            "events": f"{name}-{suffix}.events",
            "journal": f"{name}-{suffix}.journal",
            "dlq": f"{name}-{suffix}.dlq",
            "snapshots": f"{name}-{suffix}.snapshots",
            "control": f"{name}-{suffix}.control",
            "replication_factor": 1,
            "events_partitions": 3,
        },
        "batch": {"max_records": 25, "poll_timeout_ms": 50},
        "limits": {"max_message_bytes": MAX_MESSAGE_BYTES},
        "snapshot": {"dir": str(tmp_path / "snapshots"), "every_inputs": 1_000_000},
        "http": {"listen": ""},
        "daemon": {"shutdown_timeout_s": 20.0, "fence_probe_interval_s": 0.5},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    lines = [f'ledger_id = "{name}-{suffix}"']
    for section, values in base.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    path = tmp_path / f"{name}-{suffix}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def setup_ledger(tmp_path: Path, bootstrap: str, name: str = "t", **sections: Any) -> Config:
    config = load_config(str(write_config(tmp_path, bootstrap, name, **sections)), environ={})
    report = await create_topics(config)
    assert not report.problems, report.problems
    assert len(report.created) == 9
    return config


# -------------------------------------------------------------------------- scenario


Inputs = list[tuple[str, bytes, bytes | None]]  # (topic role, value, key)


def _j(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def market(name: str, imr: str, mmr: str, liq_fee: str, **extra: str) -> bytes:
    return _j({"type": "market", "market": name, "imr": imr, "mmr": mmr, "liq_fee": liq_fee,
               **extra})  # fmt: skip


def deposit(account: str, amount: str) -> bytes:
    return _j({"type": "deposit", "account": account, "amount": amount})


def withdraw(account: str, amount: str) -> bytes:
    return _j({"type": "withdraw", "account": account, "amount": amount})


def oracle(name: str, price: str) -> bytes:
    return _j({"type": "oracle", "market": name, "price": price})


def fill(
    fill_id: str, name: str, price: Any, qty: str, buyer: str, seller: str, **fees: str
) -> bytes:
    return _j({"type": "fill", "fill_id": fill_id, "market": name, "price": price, "qty": qty,
               "buyer": buyer, "seller": seller, **fees})  # fmt: skip


def book(name: str, **sides: list[list[str]]) -> bytes:
    return _j({"type": "book", "market": name, **sides})


def scenario(seed: int = 7, groups: int = 12, trades: int = 140) -> list[Inputs]:
    """Phases of (role, value, key) inputs: setup, trading, crash, aftermath.

    Levered longs buy from well-funded shorts; the crash liquidates the longs against the
    book with a tiny insurance fund, so there are fund draws, clawbacks and bad debt.
    Bad lines of every kind are mixed in; all of them fit on one .jsonl line (no
    newline, not blank) so the journal can be replayed through ``clearing replay``.
    """
    rng = random.Random(seed)
    setup: Inputs = [
        ("admin", market("BTC-PERP", "0.1", "0.05", "0.01"), None),
        ("admin", market("ETH-PERP", "0.2", "0.1", "0.02", max_oracle_move="0.1"), None),
        ("admin", market("ADA-PERP", "0.01", "0.005", "0"), None),
        ("admin", deposit("insurance-fund", "15"), None),
        ("admin", deposit("gambler", "1"), None),
    ]
    for i in range(groups):
        setup.append(("admin", deposit(f"long{i:02d}", "100"), f"long{i:02d}".encode()))
        setup.append(("admin", deposit(f"short{i:02d}", str(900 + 10 * i)), None))
    setup += [
        ("admin", withdraw("short00", "5000"), None),  # insufficient cash
        ("admin", deposit("fee-pool", "5"), None),  # reserved account
        ("admin", b"{not json", b"bad"),
        ("admin", b'{"type":"teleport","account":"x"}', None),
        ("admin", b"\xff\xfe\x00garbage", None),
    ]
    trading: Inputs = [
        ("oracle", oracle("BTC-PERP", "100"), None),
        ("oracle", oracle("ETH-PERP", "50"), None),
        # No bids: the crash's close-outs are priced at the mark.
        ("book", book("BTC-PERP", asks=[["101", "50"]]), None),
        ("book", book("DOGE-PERP", bids=[["1", "1"]]), None),  # unknown market
    ]
    for i in range(groups):
        value = fill(f"L{i}", "BTC-PERP", "100", "9.5", f"long{i:02d}", f"short{i:02d}",
                     buyer_fee="0.5", seller_fee="-0.1")  # fmt: skip
        trading.append(("fills", value, f"L{i}".encode()))
    for n in range(trades):
        a, b = rng.sample(range(groups), 2)
        price = f"{50 + rng.randint(-200, 200) / 100:.2f}"
        qty = f"0.{rng.randint(1, 99):02d}"
        trading.append(("fills", fill(f"E{n}", "ETH-PERP", price, qty, f"short{a:02d}",
                                      f"short{b:02d}"), None))  # fmt: skip
        if n % 10 == 0:
            tick = f"{50 + rng.randint(-100, 100) / 100:.2f}"
            trading.append(("oracle", oracle("ETH-PERP", tick), None))
    trading += [
        ("fills", fill("E3", "ETH-PERP", "50", "1", "short01", "short02"), None),  # duplicate
        ("fills", fill("S1", "ETH-PERP", "50", "1", "short01", "short01"), None),  # self trade
        ("fills", fill("R1", "ETH-PERP", "50", "1", "fee-pool", "short01"), None),  # reserved
        ("fills", fill("U1", "XRP-PERP", "1", "1", "short03", "short01"), None),  # no market
        ("fills", fill("F1", "ETH-PERP", 1.5, "1", "short03", "short01"), None),  # a float
        ("fills", b"[1,2,3]", None),
        ("oracle", oracle("ETH-PERP", "-3"), None),
    ]
    # The longs go under at the mark: the fund pays the first deficits, then the shorts'
    # profits are clawed back.
    crash: Inputs = [
        ("oracle", oracle("ETH-PERP", "70"), None),  # held by the guard
        ("oracle", oracle("BTC-PERP", "88"), None),
        ("admin", withdraw("short05", "1"), None),
        ("admin", withdraw("long03", "1"), None),
        ("book", book("BTC-PERP", bids=[["80", "5"]]), None),
        ("oracle", oracle("ETH-PERP", "71"), None),  # confirms the held tick
    ]
    # A fill leaves the gambler flat with negative cash (bankrupt): with the fund drained
    # and nobody else holding ADA, the loss is bad debt.
    aftermath: Inputs = [
        ("fills", fill("A1", "ADA-PERP", "100", "1", "gambler", "short03"), None),
        ("fills", fill("A2", "ADA-PERP", "50", "1", "short03", "gambler"), None),
        ("oracle", oracle("BTC-PERP", "70"), None),
    ]
    return [setup, trading, crash, aftermath]


def flat(phases: list[Inputs]) -> Inputs:
    return [item for phase in phases for item in phase]


# --------------------------------------------------------------------------- kafka io


def topic_of(config: Config, role: str) -> str:
    return str(getattr(config.topics, role))


async def produce(config: Config, items: Inputs) -> list[tuple[str, int, int]]:
    """Produce in order (plain idempotent producer); returns (topic, partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=config.kafka.bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        futures = []
        for role, value, key in items:
            futures.append(await producer.send(topic_of(config, role), value, key=key))
        results = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(r.topic, r.partition, r.offset) for r in results]


async def read_all(
    config: Config,
    topic: str,
    *,
    isolation: str = "read_committed",
    done: Callable[[list[ConsumerRecord]], bool] | None = None,
    timeout_s: float = 15.0,
    settle_s: float = 0.4,
) -> list[ConsumerRecord]:
    """Every record of ``topic`` (all partitions). Committed data shows up shortly after
    the commit returns, so read until ``done`` holds, and then until nothing new arrived
    for ``settle_s`` (so that a duplicate would be seen, not cut off)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=config.kafka.bootstrap_servers,
        isolation_level=isolation,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        quiet_since = loop.time()
        while loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=100)
            got = [r for recs in batches.values() for r in recs]
            records.extend(got)
            if got:
                quiet_since = loop.time()
            elif (done is None or done(records)) and loop.time() - quiet_since >= settle_s:
                break
    finally:
        await consumer.stop()
    return records


def read_journal(config: Config) -> list[Record]:
    """The whole journal topic, verified (seqs and chain) by the daemon's own reader."""
    with KafkaJournalReader(config) as reader:
        return list(reader.read())


async def journal_until(config: Config, last_seq: int, timeout_s: float = 15.0) -> list[Record]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        records = await asyncio.to_thread(read_journal, config)
        if (records and records[-1].seq >= last_seq) or loop.time() > deadline:
            return records
        await asyncio.sleep(0.2)


def header(record: ConsumerRecord, name: str) -> bytes | None:
    for key, value in record.headers:
        if key == name:
            return bytes(value)
    return None


async def events_in_order(config: Config, expected: int) -> list[bytes]:
    """Committed output events restored to global order by (seq, index) headers."""
    records = await read_all(config, config.topics.events, done=lambda rs: len(rs) >= expected)
    keyed = []
    for r in records:
        seq = int(header(r, HEADER_SEQ) or b"-1")
        index = int(header(r, HEADER_INDEX) or b"-1")
        assert msgspec.json.decode(r.value)["seq"] == seq
        keyed.append(((seq, index), r.value))
    keyed.sort()
    keys = [k for k, _ in keyed]
    assert len(keys) == len(set(keys)), "an output event was emitted twice"
    return [v for _, v in keyed]


def replay_cli(tmp_path: Path, payloads: list[bytes]) -> list[bytes]:
    """``clearing replay`` over the payloads as a .jsonl file: the auditor's outputs."""
    for payload in payloads:
        assert b"\n" not in payload and payload.strip(b" \t\r"), payload
    inputs = tmp_path / f"journal-{uuid.uuid4().hex[:6]}.jsonl"
    inputs.write_bytes(b"".join(p + b"\n" for p in payloads))
    events = tmp_path / f"replayed-{uuid.uuid4().hex[:6]}.jsonl"
    # The daemon's ledgers are under rules version 1 (replay's default is the newest).
    command = [sys.executable, "-m", "clearing.cli", "replay", str(inputs), "--rules", "1"]
    proc = subprocess.run(
        [*command, "--events", str(events)],
        capture_output=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return events.read_bytes().splitlines()


def replay_engine(payloads: list[bytes]) -> list[bytes]:
    engine = Engine()
    return [encode_output(e) for p in payloads for e in engine.apply(p)]


class Running:
    """A daemon running in-process as an asyncio task."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        self.daemon = Daemon(config, **kwargs)
        self.task = asyncio.create_task(self.daemon.run())

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        await self._until(lambda: self.daemon.ready, timeout_s, "ready")

    async def wait_seq(self, seq: int, timeout_s: float = 30.0) -> None:
        await self._until(lambda: self.daemon.committed_seq >= seq, timeout_s, f"seq {seq}")

    async def _until(self, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not cond():
            if self.task.done():
                raise AssertionError(f"daemon exited with {self.task.result()} before {what}")
            if loop.time() > deadline:
                raise AssertionError(
                    f"daemon not at {what} after {timeout_s} s (seq {self.daemon.committed_seq})"
                )
            await asyncio.sleep(0.02)

    async def exit_code(self, timeout_s: float = 30.0) -> int:
        return await asyncio.wait_for(self.task, timeout_s)

    async def stop(self, timeout_s: float = 30.0) -> int:
        self.daemon.request_stop()
        return await self.exit_code(timeout_s)


def sequenced_count(items: Inputs) -> int:
    return sum(1 for _, value, _ in items if len(value) <= MAX_MESSAGE_BYTES)


async def check_against_replay(
    config: Config, tmp_path: Path, last_seq: int, *, cli: bool = True
) -> list[Record]:
    """The committed journal is complete and verified, and the committed events are
    exactly (byte for byte, once each) what replaying its payloads gives."""
    journal = await journal_until(config, last_seq)
    assert [r.seq for r in journal] == list(range(1, last_seq + 1))
    payloads = [r.payload for r in journal]
    expected = replay_cli(tmp_path, payloads) if cli else replay_engine(payloads)
    assert expected == replay_engine(payloads)
    got = await events_in_order(config, len(expected))
    assert got == expected
    # Each journal record's outputs are those same bytes, per input.
    assert b"".join(r.outputs for r in journal) == b"".join(e + b"\n" for e in expected)
    return journal


# ------------------------------------------------------------------- tests: pure parts


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('ledger_id = "x"\n[batch]\nmax_record = 5\n')
    with pytest.raises(ConfigError, match=r"unknown key 'batch\.max_record'.*max_records"):
        load_config(str(path), environ={})
    path.write_text('ledger_id = "x"\n[batch]\nmax_records = 0\n')
    with pytest.raises(ConfigError, match=r"batch\.max_records: Expected `int` >= 1"):
        load_config(str(path), environ={})
    path.write_text("[batch]\n")
    with pytest.raises(ConfigError, match=r"required key 'ledger_id'.*CLEARING_LEDGER_ID"):
        load_config(str(path), environ={})
    cli = subprocess.run(
        [sys.executable, "-m", "clearing.cli", "run", "--config", str(path)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert cli.returncode == 2 and "required key 'ledger_id'" in cli.stderr
    with pytest.raises(ConfigError, match="CLEARING_BATCH_POLL_TIMEOUT_MS"):
        load_config(
            None, environ={"CLEARING_LEDGER_ID": "x", "CLEARING_BATCH_POLL_TIMEOUT_MS": "soon"}
        )
    with pytest.raises(ConfigError, match=r"kafka\.security.*sasl_username"):
        load_config(None, environ={"CLEARING_LEDGER_ID": "x",
                                   "CLEARING_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})  # fmt: skip


def test_config_environment_overrides_and_secrets_stay_hidden(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'ledger_id = "file"\n[kafka]\nbootstrap_servers = ["a:1"]\n'
        '[kafka.security]\nprotocol = "SASL_PLAINTEXT"\nsasl_username = "u"\n'
        'sasl_password = "hunter2-secret"\n'
    )
    config = load_config(
        str(path),
        environ={
            "CLEARING_LEDGER_ID": "env",
            "CLEARING_KAFKA_BOOTSTRAP_SERVERS": "h1:9092, h2:9093",
            "CLEARING_SNAPSHOT_ON_SHUTDOWN": "false",
            "CLEARING_KAFKA_VERSION": "4.4.0",  # another tool's variable: ignored
        },
    )
    assert config.ledger_id == "env"
    assert config.transactional_id == "clearing-env" == config.group_id
    assert config.kafka.bootstrap_servers == ["h1:9092", "h2:9093"]
    assert config.snapshot.on_shutdown is False
    assert config.kafka.security.sasl_password == Secret("hunter2-secret")
    for text in (repr(config), str(config), json.dumps(config.redacted())):
        assert "hunter2" not in text
    assert config.topics.inputs == ("clearing.admin", "clearing.oracle", "clearing.book",
                                    "clearing.fills")  # fmt: skip
    secret_file = tmp_path / "sasl-password"
    secret_file.write_text("from-a-file\n")
    from_file = load_config(
        str(path),
        environ={"CLEARING_KAFKA_SECURITY_SASL_PASSWORD": "",
                 "CLEARING_KAFKA_SECURITY_SASL_PASSWORD_FILE": str(secret_file)},
    )  # fmt: skip
    assert from_file.kafka.security.sasl_password == Secret("from-a-file")
    kwargs = client_kwargs(from_file, "test")
    assert kwargs["sasl_plain_password"] == "from-a-file"
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT" and kwargs["ssl_context"] is None
    example = load_config(
        str(REPO / "deploy" / "clearing.example.toml"),
        environ={"CLEARING_KAFKA_SECURITY_SASL_PASSWORD": "from-the-environment"},
    )
    assert example.topics.journal == "clearing.journal"
    assert example.kafka.security.sasl_password == Secret("from-the-environment")


def test_plan_batch_orders_sequences_and_routes() -> None:
    def rec(topic: str, partition: int, offset: int, ts_ms: int, value: bytes) -> InputRecord:
        return InputRecord(topic, partition, offset, ts_ms, b"k", value)

    rank = {"adm": 0, "orc": 1, "bk": 2, "fil": 3}
    batch = {
        ("fil", 0): [rec("fil", 0, 7, 10, b"f7"), rec("fil", 0, 8, 5, b"f8")],
        ("adm", 0): [rec("adm", 0, 3, 10, b"a3")],
        ("orc", 1): [rec("orc", 1, 1, 9, b"o1")],
    }
    ordered = order_records(batch, rank)
    # Per-partition order is kept even when timestamps go backwards (f7 before f8).
    assert [r.value for r in ordered] == [b"o1", b"a3", b"f7", b"f8"]

    engine, chain = Engine(), JournalChain()
    market = b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0"}'
    records = [
        rec("adm", 0, 0, 1, market),
        rec("orc", 0, 0, 2, b'{"type":"oracle","market":"M","price":"1"}'),
        rec("fil", 0, 0, 3, b"x" * 100),
        rec("fil", 0, 1, 4, b"nope"),
    ]
    plan = plan_batch(engine, chain, records, journal_topic="j", events_topic="e",
                      dlq_topic="d", ledger_id="L", max_message_bytes=90)  # fmt: skip
    assert (plan.first_seq, plan.last_seq, engine.seq) == (1, 3, 3)
    assert plan.offsets == {("adm", 0): 1, ("orc", 0): 1, ("fil", 0): 2}
    # One block: the three sequenced inputs in one journal message, keyed by its first seq.
    assert [(m.topic, m.partition, m.key) for m in plan.journal] == [("j", 0, b"1")]
    assert dict(plan.journal[0].headers) == {"clearing.block": b"3"}
    journal = decode_journal_message(plan.journal[0].value, plan.journal[0].headers)
    assert [r.source for r in journal] == ["kafka:adm:0:0", "kafka:orc:0:0", "kafka:fil:0:1"]
    prev = GENESIS_HASH
    for r in journal:
        prev = chain_hash(prev, r.seq, r.source.encode(), r.payload, r.outputs)
        assert r.chain_hash == prev
    assert plan.head_hash == prev == chain.head_hash
    assert [dict(m.headers)["clearing.reason"] for m in plan.dlq] == [b"oversized", b"malformed"]
    assert [m.value for m in plan.dlq] == [b"x" * 100, b"nope"]
    assert "clearing.seq" not in dict(plan.dlq[0].headers)  # oversized: never sequenced
    assert [m.key for m in plan.events] == [b"fil:0"]  # a reject naming no account


# ------------------------------------------------------------------- tests: the broker


async def test_topics_create_is_idempotent_and_guards_the_journal(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(tmp_path, kafka_bootstrap, "topics")
        again = await create_topics(config)
        assert again.created == [] and len(again.existing) == 9 and not again.problems
        # A journal topic made by hand with finite retention and 2 partitions is refused.
        bad = msgspec.structs.replace(
            config, topics=msgspec.structs.replace(config.topics, journal=uniq("badjournal"))
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(bad.topics.journal, 2, 1, topic_configs={"retention.ms": "60000"})]
            )
        finally:
            await admin.close()
        report = await create_topics(bad)
        problems = " ".join(report.problems)
        assert "2 partitions" in problems and "retention.ms=60000" in problems
        cli = subprocess.run(
            [sys.executable, "-m", "clearing.cli", "topics", "create", "--config",
             str(write_config(tmp_path, kafka_bootstrap, "cli"))],
            capture_output=True, text=True, cwd=REPO, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.count("created") == 9
        # A snapshot topic that retention could empty (delete policy) is refused too.
        bad_snapshots = msgspec.structs.replace(
            config, topics=msgspec.structs.replace(config.topics, snapshots=uniq("badsnaps"))
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(bad_snapshots.topics.snapshots, 1, 1)])
        finally:
            await admin.close()
        problems = " ".join((await create_topics(bad_snapshots)).problems)
        assert "1 partitions" in problems and "cleanup.policy=delete" in problems


async def test_a_large_journal_record_fits_and_reads_back(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """One input with megabytes of outputs (a clawback from every account) is one journal
    message: the topic, producer and reader limits must all let it through."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(tmp_path, kafka_bootstrap, "large")
        outputs = b"".join(
            b'{"type":"clawback","seq":1,"account":"acct-%07d","amount":"0.01","cause":"x"}\n' % i
            for i in range(40_000)
        )
        record = JournalChain().append(1, "test:0", deposit("a", "1"), outputs)
        assert len(encode_journal_value(record)) > 3 * 1024 * 1024
        producer = make_producer(config)
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send(
                    config.topics.journal, encode_journal_value(record), partition=0
                )
        finally:
            await producer.stop()
        journal = await journal_until(config, 1)
        assert journal == [record]


async def test_journal_blocks_and_single_records_read_as_one_verified_log(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A journal written before blocks (one record per message) and continued in blocks
    reads back as one chain; reads can start inside a block; a block whose header
    disagrees with its value, or whose seqs skip, is refused."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(tmp_path, kafka_bootstrap, "blocks")
        chain = JournalChain()
        records = [chain.append(i, f"test:{i}", deposit("a", "1"), b"") for i in range(1, 13)]
        messages = [
            (encode_journal_value(records[0]), []),
            (encode_journal_value(records[1]), []),
            *[
                (m.value, m.headers)
                for m in (
                    encode_journal_block(config.topics.journal, records[2:9]),
                    encode_journal_block(config.topics.journal, records[9:12]),
                )
            ],
        ]
        producer = make_producer(config)
        await producer.start()
        try:
            async with producer.transaction():
                for value, headers in messages:
                    await producer.send(config.topics.journal, value, partition=0, headers=headers)
        finally:
            await producer.stop()
        assert await journal_until(config, 12) == records

        def read_from_anchor() -> tuple[dict[int, int | None], Record, list[Record]]:
            with KafkaJournalReader(config) as reader:
                list(reader.read())
                offsets = {seq: reader.offset_of(seq) for seq in range(1, 13)}
            # A fresh reader anchored mid-block, as a snapshot at seq 5 would anchor it.
            with KafkaJournalReader(config) as fresh:
                fresh.anchor(5, offsets[5])  # type: ignore[arg-type]
                return offsets, fresh.record_at(5), list(fresh.read(6))

        offsets, middle, tail_read = await asyncio.to_thread(read_from_anchor)
        # Two single-record messages, then two blocks: four offsets for twelve seqs.
        assert len(set(offsets.values())) == 4
        assert offsets[3] == offsets[5] == offsets[9] != offsets[10] == offsets[12]
        assert middle == records[4] and tail_read == records[5:]

        # Damage: a block's header count disagrees; a block that skips a seq.
        for name, value, headers in (
            (
                "count",
                encode_journal_block(config.topics.journal, records[:3]).value,
                [("clearing.block", b"4")],
            ),
            (
                "gap",
                encode_journal_block(config.topics.journal, [records[0], records[2]]).value,
                [("clearing.block", b"2")],
            ),
        ):
            bad = msgspec.structs.replace(
                config, topics=msgspec.structs.replace(config.topics, journal=uniq(name))
            )
            assert not (await create_topics(bad)).problems
            producer = make_producer(bad)
            await producer.start()
            try:
                async with producer.transaction():
                    await producer.send(bad.topics.journal, value, partition=0, headers=headers)
            finally:
                await producer.stop()
            expected = "not a journal record" if name == "count" else "records are missing"
            with pytest.raises(KafkaJournalError, match=expected):
                await asyncio.to_thread(read_journal, bad)


async def test_end_to_end_outputs_equal_replay_of_the_journal(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(tmp_path, kafka_bootstrap, "e2e")
        phases = scenario(groups=20, trades=240)
        run = Running(config)
        await run.wait_ready()
        started = time.perf_counter()
        expected_seq = 0
        produced: list[tuple[str, int, int]] = []
        for phase in phases:
            produced += await produce(config, phase)
            expected_seq += sequenced_count(phase)
            await run.wait_seq(expected_seq)  # phases apply in order: setup before trading
        elapsed_s = time.perf_counter() - started
        assert await run.stop() == EXIT_OK
        assert run.daemon.batches_committed > 3

        journal = await check_against_replay(config, tmp_path, expected_seq)
        # Every produced input was journaled exactly once, with its Kafka position.
        assert sorted(r.source for r in journal) == sorted(
            f"kafka:{t}:{p}:{o}" for t, p, o in produced
        )
        types = [msgspec.json.decode(line)["type"] for r in journal for line in
                 r.outputs.splitlines()]  # fmt: skip
        for kind in ("liquidation", "fund_draw", "clawback", "bad_debt", "withdrawal",
                     "oracle_held", "reject"):  # fmt: skip
            assert kind in types, f"the scenario should exercise {kind}"
        # Rejected inputs are in the DLQ, raw bytes unchanged, with their position.
        dlq = await read_all(
            config, config.topics.dlq, done=lambda rs: len(rs) >= types.count("reject")
        )
        assert len(dlq) == types.count("reject")
        by_source = {r.source: r.payload for r in journal}
        for message in dlq:
            source = "kafka:{}:{}:{}".format(
                *(header(message, f"clearing.source.{k}").decode()  # type: ignore[union-attr]
                  for k in ("topic", "partition", "offset"))
            )  # fmt: skip
            assert by_source[source] == message.value
        print(f"\ne2e: {expected_seq} inputs in {elapsed_s:.2f} s, "
              f"{run.daemon.batches_committed} transactions")  # fmt: skip


async def test_dlq_keeps_poison_raw_and_never_stops(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(tmp_path, kafka_bootstrap, "dlq")
        poison: Inputs = [
            ("fills", b"", b"empty"),  # a tombstone-like empty value
            ("fills", b"\xc3\x28 invalid utf-8", b"utf8"),
            ("fills", b'{"type":\n"deposit"}', b"newline"),
            ("oracle", b"[" * 100_0 + b"]" * 100_0, None),  # absurd nesting
            ("book", b'{"type":"book","market":"M"}' + b" " * (MAX_MESSAGE_BYTES + 1), b"big"),
            (
                "admin",
                json.dumps({"type": "deposit", "account": "a", "amount": "1"}).encode(),
                None,
            ),
        ]
        run = Running(config)
        await run.wait_ready()
        positions = await produce(config, poison)
        await run.wait_seq(5)
        assert await run.stop() == EXIT_OK
        dlq = await read_all(config, config.topics.dlq, done=lambda rs: len(rs) >= 5)
        assert len(dlq) == 5
        by_offset = {
            (t, p, o): (v, k) for (t, p, o), (_, v, k) in zip(positions, poison, strict=True)
        }
        reasons = []
        for message in dlq:
            key = (header(message, "clearing.source.topic").decode(),  # type: ignore[union-attr]
                   int(header(message, "clearing.source.partition")),  # type: ignore[arg-type]
                   int(header(message, "clearing.source.offset")))  # type: ignore[arg-type]  # fmt: skip
            value, original_key = by_offset[key]
            assert message.value == value and message.key == original_key
            assert header(message, "clearing.ledger") == config.ledger_id.encode()
            reasons.append(header(message, "clearing.reason"))
        assert sorted(reasons) == [b"invalid_field"] + [b"malformed"] * 3 + [b"oversized"]
        journal = await journal_until(config, 5)
        assert [r.payload for r in journal] == [
            v for _, v, _ in poison if len(v) <= MAX_MESSAGE_BYTES
        ]
        expected = replay_engine([r.payload for r in journal])
        assert await events_in_order(config, len(expected)) == expected


async def test_failed_batch_is_aborted_invisible_and_redone_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(tmp_path, kafka_bootstrap, "abort")
        items = flat(scenario(seed=3, groups=6))
        await produce(config, items)
        total = sequenced_count(items)

        def fail_second_batch(batch_no: int) -> None:
            if batch_no == 2:
                raise RuntimeError("injected failure after sending, before commit")

        run = Running(config, before_commit=fail_second_batch)
        assert await run.exit_code() == EXIT_FAILURE
        committed = run.daemon.committed_seq
        assert 0 < committed < total and run.daemon.batches_committed == 1

        journal = await asyncio.to_thread(read_journal, config)
        assert [r.seq for r in journal] == list(range(1, committed + 1))
        visible = await read_all(config, config.topics.events)
        assert all(int(header(r, HEADER_SEQ)) <= committed for r in visible)  # type: ignore[arg-type]
        # The aborted batch really was written: read_uncommitted sees its journal records.
        raw = await read_all(config, config.topics.journal, isolation="read_uncommitted")
        assert max(decode_journal_message(r.value, r.headers)[-1].seq for r in raw) > committed

        rerun = Running(config)
        await rerun.wait_seq(total)
        assert rerun.daemon.recovery is not None and rerun.daemon.recovery.replayed == committed
        assert await rerun.stop() == EXIT_OK
        await check_against_replay(config, tmp_path, total, cli=False)


async def test_a_violation_found_by_the_background_check_stops_the_daemon(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(
            tmp_path,
            kafka_bootstrap,
            "broken",
            limits={"max_message_bytes": MAX_MESSAGE_BYTES, "invariant_check_inputs": 10},
            snapshot={"dir": str(tmp_path / "snapshots"), "every_inputs": 10},
            # The damage is done by hand to the Python core's ledger: the extension has
            # no test hooks. (Both cores' checks catch it: tests/engine/test_contract.py.)
            engine={"core": "python"},
        )
        items = flat(scenario(seed=5, groups=4))
        await produce(config, items)
        run: Running
        broken: list[int] = []

        def break_the_ledger(batch_no: int) -> None:
            # Once a clean snapshot exists (written by a background child), create money
            # out of nowhere in the fund's cash, which exists from genesis.
            if not broken and list_snapshots(str(tmp_path / "snapshots")):
                engine = run.daemon.engine
                assert isinstance(engine, Engine)
                engine.ledger.fund.cash_e16 += 1
                broken.append(batch_no)

        run = Running(config, before_commit=break_the_ledger)
        assert await run.exit_code() == EXIT_FAILURE
        assert broken, "no snapshot was written before the end of the inputs"
        metrics = run.daemon.metrics
        assert metrics.registry.get_sample_value("clearing_invariant_violation") == 1
        # Snapshots were written in the background before the damage (every 10 inputs),
        # and none of the broken state: each one that exists still balances.
        snapshots = list_snapshots(str(tmp_path / "snapshots"))
        assert snapshots
        for info in snapshots:
            state = load_engine(read_snapshot(info.path).state)
            state.check_invariants()


async def test_a_stuck_batch_is_aborted_when_the_shutdown_bound_passes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(
            tmp_path, kafka_bootstrap, "bound", daemon={"shutdown_timeout_s": 1.0}
        )
        await produce(config, scenario(groups=3, trades=10)[0])
        stuck = asyncio.Event()

        async def hang(batch_no: int) -> None:
            stuck.set()
            await asyncio.Event().wait()  # a commit that never comes back

        run = Running(config, before_commit=hang)
        await asyncio.wait_for(stuck.wait(), 30)
        started = time.monotonic()
        assert await run.stop() == EXIT_SHUTDOWN_TIMEOUT
        assert time.monotonic() - started < 1.0 + 5.0
        assert run.daemon.committed_seq == 0
        assert await read_all(config, config.topics.events, settle_s=1.0) == []
        assert not list_snapshots(str(tmp_path / "snapshots"))  # never of an uncommitted state


async def test_a_batch_slower_than_the_send_limit_that_keeps_moving_commits(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send limit (2 x kafka.request_timeout_ms, here 4 s) bounds the time without an
    answered send, not a batch's total send time: a batch whose sends take longer than
    the limit but keep being answered commits (it used to exit 1, and the
    restart planned the same batch again, forever). The sends are slowed down here, as
    a batch of millions of events would be; the stuck case (nothing acknowledged) is
    test_journal_topic_deleted_while_running_stops_the_daemon in test_chaos.py."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(
            tmp_path,
            kafka_bootstrap,
            "slowsend",
            kafka={"bootstrap_servers": [kafka_bootstrap], "request_timeout_ms": 2000},
            batch={"max_records": 1000, "poll_timeout_ms": 500},
        )
        items = flat(scenario(seed=3, groups=6))
        await produce(config, items)
        total = sequenced_count(items)
        loop = asyncio.get_running_loop()
        real_send = AIOKafkaProducer.send
        open_batch_first_send: list[float] = []
        batch_send_s: list[float] = []

        async def slow_send(self: AIOKafkaProducer, topic: str, *args: Any, **kw: Any) -> Any:
            if topic == config.topics.events:
                if not open_batch_first_send:
                    open_batch_first_send.append(loop.time())
                await asyncio.sleep(0.2)  # the earlier sends are acknowledged meanwhile
            return await real_send(self, topic, *args, **kw)

        def measure(batch_no: int) -> None:  # after the batch's sends, before its commit
            if open_batch_first_send:
                batch_send_s.append(loop.time() - open_batch_first_send.pop())

        monkeypatch.setattr(AIOKafkaProducer, "send", slow_send)
        run = Running(config, before_commit=measure)
        await run.wait_seq(total, timeout_s=70.0)
        assert await run.stop() == EXIT_OK
        monkeypatch.undo()
        limit_s = 2 * config.kafka.request_timeout_ms / 1000
        print(
            f"\nslow sends: {len(batch_send_s)} batches with events, sends took "
            f"{max(batch_send_s):.1f} s at most (limit {limit_s} s without progress)"
        )
        assert max(batch_send_s) > limit_s, "no batch's sends outlasted the limit: no test"
        await check_against_replay(config, tmp_path, total, cli=False)


async def test_restart_resumes_without_loss_or_duplication(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(
            tmp_path, kafka_bootstrap, "restart", snapshot={"every_inputs": 40, "keep": 2}
        )
        phases = scenario(seed=11, groups=10)
        await produce(config, flat(phases[:2]))
        first_total = sequenced_count(flat(phases[:2]))

        stop_at = 4
        run: Running | None = None

        def stop_after(batch_no: int) -> None:
            if batch_no == stop_at:
                assert run is not None
                # The open batch still commits, and the next if it was already planned
                # (batches are pipelined one deep).
                run.daemon.request_stop()

        run = Running(config, before_commit=stop_after)
        assert await run.exit_code() == EXIT_OK
        stopped_at = run.daemon.committed_seq
        assert run.daemon.batches_committed in (stop_at, stop_at + 1)
        assert stopped_at < first_total
        snapshots = list_snapshots(str(tmp_path / "snapshots"))
        assert snapshots[-1].journal_seq == stopped_at  # written on the clean stop
        assert len(snapshots) <= 2  # pruned

        rerun = Running(config)
        await rerun.wait_ready()
        recovery = rerun.daemon.recovery
        assert recovery is not None and recovery.snapshot_seq == stopped_at
        assert recovery.replayed == 0
        await rerun.wait_seq(first_total)
        await produce(config, flat(phases[2:]))
        total = first_total + sequenced_count(flat(phases[2:]))
        await rerun.wait_seq(total)
        assert await rerun.stop() == EXIT_OK

        # A restart after deleting the newest snapshots replays the journal tail instead.
        # (The snapshot topic would restore the newest: this restart does without it.)
        for info in list_snapshots(str(tmp_path / "snapshots"))[1:]:
            os.unlink(info.path)
        local_only = msgspec.structs.replace(config.snapshot, publish=False)
        third = Running(msgspec.structs.replace(config, snapshot=local_only))
        await third.wait_ready()
        assert third.daemon.recovery is not None
        assert third.daemon.recovery.replayed == total - third.daemon.recovery.snapshot_seq > 0
        assert await third.stop() == EXIT_OK
        await check_against_replay(config, tmp_path, total)


async def test_second_instance_fences_the_first(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(
            tmp_path, kafka_bootstrap, "fence", batch={"max_records": 10, "poll_timeout_ms": 50}
        )
        items = flat(scenario(seed=5, groups=6))
        total = sequenced_count(items)
        await produce(config, items)
        second: Running | None = None

        async def take_over_mid_batch(batch_no: int) -> None:
            # While the first instance holds an open transaction, the second starts:
            # its InitProducerId aborts that transaction and fences the first.
            nonlocal second
            if batch_no == 3:
                second = Running(config)
                await second.wait_ready()

        first = Running(config, before_commit=take_over_mid_batch)
        assert await first.exit_code() == EXIT_FENCED
        assert "FENCED" in caplog.text
        assert first.daemon.batches_committed == 2
        assert second is not None
        await second.wait_seq(total)

        # An idle zombie notices too (offsets-only probe), and exits without writing.
        third = Running(config)
        await third.wait_ready()
        assert await second.exit_code(timeout_s=15) == EXIT_FENCED
        assert await third.stop() == EXIT_OK
        await check_against_replay(config, tmp_path, total, cli=False)


async def test_recovery_refuses_missing_truncated_or_diverging_journals(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        base = await setup_ledger(tmp_path, kafka_bootstrap, "refuse")

        def with_journal(name: str) -> Config:
            return msgspec.structs.replace(
                base,
                ledger_id=uniq("refuse"),
                topics=msgspec.structs.replace(base.topics, journal=name),
                snapshot=msgspec.structs.replace(base.snapshot, dir=str(tmp_path / uniq("s"))),
            )

        async def journal_with(records: list[Record]) -> Config:
            config = with_journal(uniq("journal"))
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(config.topics.journal, 1, 1)])
            finally:
                await admin.close()
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
            await producer.start()
            try:
                for record in records:
                    await producer.send_and_wait(
                        config.topics.journal, encode_journal_value(record), partition=0
                    )
            finally:
                await producer.stop()
            return config

        def chained(payloads: list[bytes], first_seq: int = 1) -> list[Record]:
            engine, chain = Engine(), JournalChain(first_seq - 1, GENESIS_HASH)
            engine.seq = first_seq - 1
            return [
                chain.append(engine.seq + 1, f"test:{i}", p, encode_outputs(engine.apply(p)))
                for i, p in enumerate(payloads)
            ]

        deposit = b'{"type":"deposit","account":"a","amount":"5"}'
        cases: dict[str, Config] = {
            "missing": with_journal(uniq("nojournal")),
            "truncated": await journal_with(chained([deposit, deposit], first_seq=5)),
            "gap": await journal_with([chained([deposit])[0], chained([deposit] * 3)[2]]),
        }
        # A correctly chained record whose recorded outputs are not what its input gives.
        forged = JournalChain().append(
            1, "test:0", b'{"type":"withdraw","account":"a","amount":"5"}', b'{"x":1}\n'
        )
        cases["diverging outputs"] = await journal_with([forged])
        ahead = await journal_with(chained([deposit]))
        assert ahead.snapshot_dir is not None
        write_snapshot(ahead.snapshot_dir, dump_state(Engine()), 9, b"\x01" * 32, {})
        cases["snapshot ahead"] = ahead
        expected_text = {
            "missing": "do not exist",
            "truncated": "not 1: the topic is truncated",
            "gap": "records are missing",
            "diverging outputs": "re-derived outputs differ",
            "snapshot ahead": "journal records were lost",
        }
        for name, config in cases.items():
            run = Running(config)
            code = await run.exit_code()
            assert code == EXIT_RECOVERY, name
            assert not run.daemon.ready, name
        # The messages say what is wrong.
        for name, config in cases.items():
            if name == "missing":
                continue
            with pytest.raises(Exception, match=expected_text[name]):
                await asyncio.to_thread(recover_from_kafka, config)


async def test_sigterm_stops_cleanly_with_a_snapshot(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        port = kafka_local.free_port()
        config_path = write_config(
            tmp_path, kafka_bootstrap, "term", http={"listen": f"127.0.0.1:{port}"}
        )
        config = load_config(str(config_path), environ={})
        assert not (await create_topics(config)).problems
        env = {**os.environ, "CLEARING_LOG_JSON": "true"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "clearing.cli", "run", "--config", str(config_path)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_http(f"{url}/readyz", 200, proc)
            items = flat(scenario(seed=9, groups=4))
            await produce(config, items)
            total = sequenced_count(items)
            await journal_until(config, total)
            metrics = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"{url}/metrics").read()
            )
            assert b"clearing_input_records_total" in metrics
            sent_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
            stop_s = time.monotonic() - sent_at
        finally:
            if proc.poll() is None:
                proc.kill()
            _, stderr = proc.communicate()
        assert code == EXIT_OK, stderr.decode()[-3000:]
        assert stop_s < config.daemon.shutdown_timeout_s
        lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
        assert any("stopped cleanly" in line["msg"] for line in lines)
        # Every ledger-changing line carries the seq and the Kafka source offset.
        committed = [line for line in lines if "committed: seq" in line["msg"]]
        assert committed and all(line["source"].startswith("kafka:") for line in committed)
        assert max(line["seq"] for line in committed) == total
        waterfall = [line for line in lines if line["msg"].startswith("liquidation ")]
        assert waterfall and all("seq" in line and "source" in line for line in waterfall)
        snap = read_snapshot(list_snapshots(str(tmp_path / "snapshots"))[-1].path)
        assert snap.journal_seq == total
        journal = await journal_until(config, total)
        assert snap.journal_hash == journal[-1].chain_hash
        assert snap.meta["journal_topic"] == config.topics.journal
        print(f"\nsigterm: exit {code} {stop_s:.2f} s after SIGTERM, snapshot at seq {total}")


async def wait_http(
    url: str, status: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: object = None
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        try:
            got = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).status)
        except urllib.error.HTTPError as exc:
            got = exc.code
        except OSError as exc:
            got = exc
        if got == status:
            return
        last = got
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered {status} (last: {last!r})")
