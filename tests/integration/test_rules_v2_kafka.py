"""Rules version 2 (SPEC §9) in Kafka mode, against the real broker: a new ledger takes
``engine.rules_version``, every journal message records it (header ``clearing.rules``),
and everything that reads the journal topic (recovery, the snapshot topic, ``clearing
replay``/``journal``/``stress``/``risk``/``proof`` on ``kafka://``) runs the version the
topic recorded; a topic without the header is a version-1 ledger, as it always was."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from clearing.cli import main
from clearing.journal import LocalJournal, Record
from clearing.kafka import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    HEADER_RULES,
    KafkaJournalReader,
    create_topics,
    encode_journal_block,
)
from clearing.ops.config import Config, load_config
from tests.integration.test_daemon import (
    REPO,
    TEST_TIMEOUT_S,
    Inputs,
    Running,
    events_in_order,
    header,
    produce,
    read_all,
    write_config,
)
from tests.integration.test_journal_audit import append_to_journal, run_cli
from tests.integration.test_standby import as_role

pytestmark = pytest.mark.kafka


def _j(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _market(name: str, **fields: Any) -> bytes:
    liq_fee = fields.pop("liq_fee", "0")
    return _j({"type": "market", "market": name, "imr": "0.1", "mmr": "0.05",
               "liq_fee": liq_fee, **fields})  # fmt: skip


def _deposit(account: str, amount: str) -> bytes:
    return _j({"type": "deposit", "account": account, "amount": amount})


_TICKS = itertools.count()
_EPOCH_NS = 1_780_000_000 * 10**9


def _oracle(name: str, price: str) -> bytes:
    # Stamped 10 s apart: clearing risk models the moves of stamped ticks.
    ts = _EPOCH_NS + next(_TICKS) * 10 * 10**9
    return _j({"type": "oracle", "market": name, "price": price, "ts": ts})


def _fill(fill_id: str, name: str, price: str, qty: str, buyer: str, seller: str) -> bytes:
    return _j({"type": "fill", "fill_id": fill_id, "market": name, "price": price,
               "qty": qty, "buyer": buyer, "seller": seller})  # fmt: skip


def v2_phases() -> list[list[bytes]]:
    """Two phases that exercise §9 (the hand scenarios of tests/engine/
    test_scenarios_v2.py, one market each): an ADL with two ranked candidates; then
    funding whose rounding residual liquidates a payer, and a partial liquidation whose
    fee is split by volatility. Under version 1 the same inputs give clawbacks, an
    ``unknown_type`` reject and a whole close-out instead."""
    adl = [
        _market("ADL-PERP", loss_policy="adl"),
        _deposit("a", "100"),
        _deposit("s1", "200"),
        _deposit("s2", "2000"),
        _oracle("ADL-PERP", "100"),
        _fill("f1", "ADL-PERP", "74", "6", "a", "s1"),
        _fill("f2", "ADL-PERP", "100", "4", "a", "s2"),
        _oracle("ADL-PERP", "72"),
    ]
    funding_and_steps = [
        _market("FUND-PERP"),
        _oracle("FUND-PERP", "1.5"),
        _deposit("fa", "0.32500001"),
        _deposit("fb", "10"),
        _deposit("fc", "10"),
        _fill("g1", "FUND-PERP", "1.75", "1.00000001", "fa", "fb"),
        _fill("g2", "FUND-PERP", "1.5", "1.00000001", "fc", "fb"),
        _j({"type": "funding", "market": "FUND-PERP", "rate": "0.00000001"}),
        _market(
            "STEP-PERP",
            liq_fee="0.01",
            liq_step="0.25",
            fund_share="0.5",
            vol_tiers=[["0.01", "0.2"]],
        ),
        _deposit("p", "1000"),
        _deposit("q", "100000"),
        _deposit("insurance-fund", "1000"),
        _oracle("STEP-PERP", "100"),
        _fill("h1", "STEP-PERP", "100", "80", "p", "q"),
        _oracle("STEP-PERP", "95"),
        _oracle("STEP-PERP", "90"),
    ]
    return [adl, funding_and_steps]


def as_admin(values: list[bytes]) -> Inputs:
    """All on one partition, so the journal keeps the order the scenario needs."""
    return [("admin", value, None) for value in values]


def with_rules(config: Config, rules_version: int | None) -> Config:
    engine = msgspec.structs.replace(config.engine, rules_version=rules_version)
    return msgspec.structs.replace(config, engine=engine)


def replay_file(tmp_path: Path, inputs: Path, rules: int) -> list[bytes]:
    events = tmp_path / f"replayed-v{rules}.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "clearing.cli", "replay", str(inputs), "--rules", str(rules),
         "--events", str(events), "--quiet"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return events.read_bytes().splitlines()


def topic_rules(config: Config) -> int:
    with KafkaJournalReader(config) as reader:
        return reader.rules_version


async def _check_audit_commands(config: Config, tmp_path: Path, events: list[bytes]) -> None:
    """``clearing journal``/``replay`` on the topic work under the version it recorded."""
    topic = f"kafka://{config.kafka.bootstrap_servers[0]}/{config.topics.journal}"
    exported = tmp_path / "exported.jsonl"
    done = await run_cli("journal", "export", topic, "-o", str(exported))
    assert done.returncode == 0, done.stderr
    # The auditor's replay of the exported inputs under rules 2 is what the daemon emitted;
    # under rules 1 the same inputs give other outputs (the version matters here).
    assert replay_file(tmp_path, exported, 2) == events
    assert replay_file(tmp_path, exported, 1) != events
    from_topic = tmp_path / "from-topic.jsonl"
    done = await run_cli("replay", topic, "--events", str(from_topic), "--quiet")
    assert done.returncode == 0, done.stderr
    assert from_topic.read_bytes().splitlines() == events
    wrong = await run_cli("replay", topic, "--rules", "1")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert "records rules version 2" in wrong.stderr
    verified = await run_cli("journal", "verify", topic)
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout
    info = await run_cli("journal", "info", topic)
    assert info.returncode == 0 and "rules version 2" in info.stdout, info.stdout


async def test_a_version_2_ledger_runs_recovers_and_replays_under_version_2(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(4 * TEST_TIMEOUT_S):
        config_path = write_config(
            tmp_path, kafka_bootstrap, "rulesv2", engine={"rules_version": 2}
        )
        config = load_config(str(config_path), environ={})
        assert not (await create_topics(config)).problems
        topic = f"kafka://{kafka_bootstrap}/{config.topics.journal}"
        info = await run_cli("journal", "info", topic)
        assert info.returncode == 0 and "rules version: none yet" in info.stdout, info.stdout
        first, second = v2_phases()
        await produce(config, as_admin(first))
        run = Running(config)
        await run.wait_seq(len(first))
        assert run.daemon.engine is not None and run.daemon.engine.rules_version == 2
        assert await run.stop() == EXIT_OK
        messages = await read_all(config, config.topics.journal)
        assert messages and all(header(m, HEADER_RULES) == b"2" for m in messages)

        # Restarted without the key, the daemon runs the version the topic recorded, from
        # its version-2 shutdown snapshot (recovery skips a snapshot of other rules).
        unset = with_rules(config, None)
        run = Running(unset)
        await run.wait_ready()
        assert run.daemon.engine is not None and run.daemon.engine.rules_version == 2
        assert run.daemon.recovery is not None and run.daemon.recovery.snapshot_seq == len(first)
        await produce(config, as_admin(second))
        total = len(first) + len(second)
        await run.wait_seq(total)
        assert await run.stop() == EXIT_OK

        # A new machine (no local snapshot): restored from the snapshot topic, still v2.
        assert config.snapshot_dir is not None
        shutil.rmtree(config.snapshot_dir)
        run = Running(unset)
        await run.wait_ready()
        assert run.daemon.engine is not None and run.daemon.engine.rules_version == 2
        assert run.daemon.recovery is not None and run.daemon.recovery.restored_seq == total
        assert await run.stop() == EXIT_OK

        events = await events_in_order(config, 1)
        kinds = {json.loads(event)["type"] for event in events}
        assert {"adl", "funding", "liquidation"} <= kinds, kinds
        await _check_audit_commands(config, tmp_path, events)

        # The ledger's rules cannot change: asking for version 1 is refused in one line,
        # before the process could fence the running active.
        active = Running(unset)
        await active.wait_ready()
        refused = Running(with_rules(config, 1))
        assert await refused.exit_code() == EXIT_CONFIG
        old_rules = config_path.read_text().replace("rules_version = 2", "rules_version = 1")
        config_path.write_text(old_rules)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "clearing.cli", "run", "--config", str(config_path)],
            capture_output=True, text=True, cwd=REPO, check=False, timeout=60,
        )  # fmt: skip
        assert done.returncode == EXIT_CONFIG, done.stderr
        said = [line for line in done.stderr.splitlines() if "refusing to start" in line]
        assert len(said) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "engine.rules_version is 1" in said[0]
        assert "records rules version 2" in said[0]
        assert not active.task.done()  # not fenced by either
        assert await active.stop() == EXIT_OK


async def test_a_topic_without_the_header_is_a_version_1_ledger(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(2 * TEST_TIMEOUT_S):
        config = load_config(str(write_config(tmp_path, kafka_bootstrap, "rulesv1")), {})
        assert not (await create_topics(config)).problems
        first, _ = v2_phases()
        await produce(config, as_admin(first))
        run = Running(config)
        await run.wait_seq(len(first))
        assert run.daemon.engine is not None and run.daemon.engine.rules_version == 1
        assert await run.stop() == EXIT_OK
        # Written as before versions existed: no rules header at all.
        messages = await read_all(config, config.topics.journal)
        assert messages and all(header(m, HEADER_RULES) is None for m in messages)
        assert await asyncio.to_thread(topic_rules, config) == 1
        topic = f"kafka://{kafka_bootstrap}/{config.topics.journal}"
        info = await run_cli("journal", "info", topic)
        assert info.returncode == 0 and "rules version 1" in info.stdout, info.stdout
        events = await events_in_order(config, 1)
        assert any(json.loads(e)["type"] == "clawback" for e in events)  # v1's answer
        refused = Running(with_rules(config, 2))
        assert await refused.exit_code() == EXIT_CONFIG
        run = Running(with_rules(config, 1))  # naming the version it has is fine
        await run.wait_ready()
        assert await run.stop() == EXIT_OK


async def append_blocks(config: Config, records: list[Record], rules_version: int) -> None:
    """Write ``records`` into the journal topic as the daemon would, one per message."""
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for record in records:
            message = encode_journal_block(config.topics.journal, [record], rules_version)
            await producer.send_and_wait(
                message.topic, message.value, partition=0, headers=message.headers
            )
    finally:
        await producer.stop()


async def test_audit_commands_on_the_topic_replay_under_its_recorded_version(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(4 * TEST_TIMEOUT_S):
        inputs = tmp_path / "inputs.jsonl"
        inputs.write_bytes(b"".join(line + b"\n" for phase in v2_phases() for line in phase))
        journal = tmp_path / "journal"
        assert main(["ingest", str(inputs), "--journal", str(journal), "--rules", "2"]) == 0
        with LocalJournal(str(journal), readonly=True) as log:
            records = list(log.read())
        configs = []
        for name in ("audit2", "headerless"):
            path = write_config(tmp_path, kafka_bootstrap, name)
            configs.append(load_config(str(path), environ={}))
            assert not (await create_topics(configs[-1])).problems
        await append_blocks(configs[0], records, 2)
        # The same records without the header: a version-1 ledger, whose recorded
        # (version-2) outputs the replay cannot re-derive.
        await append_to_journal(configs[1], records)
        topic, headerless = (
            f"kafka://{kafka_bootstrap}/{config.topics.journal}" for config in configs
        )
        seed = tmp_path / "seed"
        seed.write_bytes(b"a secret seed of thirty-two byte")
        seed.chmod(0o600)
        commands = [
            ("stress", "{}", "--shock", "STEP-PERP=-20%", "--json", "--jobs", "1"),
            ("risk", "{}", "--horizon", "4s", "--step", "1s", "--json", "--jobs", "1"),
            ("proof", "build", "{}", "-o", "{out}", "--seed-file", str(seed)),
        ]
        for n, command in enumerate(commands):
            outputs = []
            for source in (str(journal), topic):
                out = tmp_path / f"proof-{n}-{len(outputs)}"
                argv = [part.format(source, out=out) for part in command]
                done = await run_cli(*argv)
                assert done.returncode == 0, (argv, done.stderr)
                if command[0] == "proof":
                    outputs.append((out / "statement.json").read_bytes())
                else:
                    report = json.loads(done.stdout)
                    report.pop("source", None)
                    outputs.append(report)
            assert outputs[0] == outputs[1], command
        diverged = await run_cli("replay", headerless, "--quiet")
        assert diverged.returncode == 1 and "DIVERGED" in diverged.stderr, diverged.stderr
        replayed = await run_cli("replay", topic, "--quiet")
        assert replayed.returncode == 0, replayed.stderr
        # One message under other rules makes the topic two ledgers: it does not verify.
        await append_blocks(configs[0], records[:1], 1)
        mixed = await run_cli("journal", "verify", topic)
        assert mixed.returncode == 1, (mixed.stdout, mixed.stderr)
        assert "records rules version 1" in mixed.stdout + mixed.stderr


async def test_a_standby_follows_a_version_2_ledger_and_writes_version_2_after_takeover(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(4 * TEST_TIMEOUT_S):
        path = write_config(tmp_path, kafka_bootstrap, "standbyv2", engine={"rules_version": 2})
        config = load_config(str(path), environ={})
        assert not (await create_topics(config)).problems
        unset = with_rules(config, None)
        active = Running(as_role(config, "active", tmp_path / "a"))
        await active.wait_ready()
        # A standby that recovers from the still empty topic without the key starts a
        # version-1 engine; the active's first version-2 record makes it exit (1: the
        # restart takes the topic's version) instead of following under other rules.
        early = Running(as_role(unset, "standby", tmp_path / "early"))
        await early._until(lambda: early.daemon._follower is not None, 30.0, "following")
        first, second = v2_phases()
        await produce(config, as_admin(first))
        await active.wait_seq(len(first))
        assert await early.exit_code() == EXIT_FAILURE
        # Started on the non-empty topic, a standby follows it under version 2 ...
        standby = Running(as_role(unset, "standby", tmp_path / "b"))
        await standby.wait_seq(len(first))
        assert standby.daemon.engine is not None and standby.daemon.engine.rules_version == 2
        assert await active.stop() == EXIT_OK
        # ... and, promoted, goes on writing version-2 records.
        await standby.wait_ready()
        await produce(config, as_admin(second))
        await standby.wait_seq(len(first) + len(second))
        assert await standby.stop() == EXIT_OK
        messages = await read_all(config, config.topics.journal)
        assert messages and all(header(m, HEADER_RULES) == b"2" for m in messages)
        topic = f"kafka://{kafka_bootstrap}/{config.topics.journal}"
        replayed = await run_cli("replay", topic, "--quiet")
        assert replayed.returncode == 0, replayed.stderr
