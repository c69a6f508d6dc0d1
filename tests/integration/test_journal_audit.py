"""Issue 17: the journal topic is auditable with the same commands as a journal directory.

A real daemon run writes the journal topic; ``clearing journal verify|info|export`` and
``clearing replay`` read it directly (``kafka://HOST:PORT/TOPIC`` or ``--config``), and
their outputs and state equal a replay of the same inputs from a .jsonl file; the
daemon's ``/state-hash`` equals the hash of that replay. Then records forged into the
topic by a test producer are caught, with exit code 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from clearing.engine import Engine
from clearing.journal import Record
from clearing.kafka import JournalChain, create_topics, encode_journal_value
from clearing.ops.config import Config, load_config
from clearing.sequencer import encode_outputs
from tests.integration.conftest import feed_slowly, serve
from tests.integration.test_daemon import (
    TEST_TIMEOUT_S,
    flat,
    produce,
    scenario,
    sequenced_count,
    write_config,
)
from tests.integration.test_sasl import PASSWORD, daemon_env, sasl_broker, sasl_config
from tests.ops.http_client import request

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
__all__ = ["sasl_broker"]  # the SASL broker fixture, shared with test_sasl.py


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """``clearing ...`` as a person runs it (standard output is a pipe, not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "clearing.cli", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )


async def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *argv)


async def append_to_journal(config: Config, records: list[Record]) -> None:
    """A producer that is not the daemon writes into the journal topic (a forger)."""
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for record in records:
            value = encode_journal_value(record)
            await producer.send_and_wait(config.topics.journal, value, partition=0)
    finally:
        await producer.stop()


async def test_journal_topic_verify_info_export_replay_and_forgery(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(4 * TEST_TIMEOUT_S):
        daemon = await serve(tmp_path, kafka_bootstrap, "audit")
        config_path, config = daemon.config_path, daemon.config
        items = flat(scenario(groups=6, trades=80))
        await produce(config, items)
        last_seq = sequenced_count(items)
        await daemon.run.wait_seq(last_seq)
        response = await request(daemon.port, "/state-hash", timeout_s=30.0)
        assert response.status == 200, response.body
        served = json.loads(response.body)
        assert served["seq"] == served["committed_seq"] == last_seq
        journal = await daemon.stop_at(last_seq)
        assert len(journal) == last_seq

        topic = f"kafka://{kafka_bootstrap}/{config.topics.journal}"
        # verify: by URL, and by the daemon's own configuration file.
        for source in ([topic], ["kafka://", "--config", str(config_path)]):
            verified = await run_cli("journal", "verify", *source)
            assert verified.returncode == 0, verified.stderr
            assert f"{last_seq} records (seq 1..{last_seq})" in verified.stdout
            assert "OK: every seq and the whole hash chain verify" in verified.stdout
        info = await run_cli("journal", "info", topic)
        assert info.returncode == 0 and f"last seq {last_seq}," in info.stdout
        assert journal[-1].chain_hash.hex() in info.stdout

        # export gives the journal's inputs; replaying them from the .jsonl file is the
        # reference for the replay straight from the topic.
        exported = tmp_path / "exported.jsonl"
        export = await run_cli("journal", "export", topic, "-o", str(exported))
        assert export.returncode == 0, export.stderr
        assert exported.read_bytes() == b"".join(r.payload + b"\n" for r in journal)
        from_file = await run_cli(
            "replay",
            str(exported),
            "--rules",
            "1",
            "--events",
            str(tmp_path / "f.events"),
            "--state",
            str(tmp_path / "f.state"),
        )  # fmt: skip  (the topic's ledger runs rules version 1; a file replays under 2 by default)
        assert from_file.returncode == 0, from_file.stderr
        from_topic = await run_cli(
            "replay", topic, "--events", str(tmp_path / "t.events"),
            "--state", str(tmp_path / "t.state"),
        )  # fmt: skip
        assert from_topic.returncode == 0, from_topic.stderr
        assert (tmp_path / "t.events").read_bytes() == (tmp_path / "f.events").read_bytes()
        assert (tmp_path / "t.state").read_bytes() == (tmp_path / "f.state").read_bytes()
        replay_hash = hashlib.sha256((tmp_path / "t.state").read_bytes()).hexdigest()
        assert served["state_sha256"] == replay_hash
        assert f"state sha256 {replay_hash}" in from_topic.stderr
        assert b"".join(r.outputs for r in journal) == (tmp_path / "t.events").read_bytes()

        # --until on the topic equals the file cut at the same seq.
        cut = last_seq // 2
        (tmp_path / "cut.jsonl").write_bytes(b"".join(r.payload + b"\n" for r in journal[:cut]))
        until = await run_cli(
            "replay", topic, "--until", str(cut), "--state", str(tmp_path / "u.state"), "-q"
        )
        cut_file = await run_cli(
            "replay", str(tmp_path / "cut.jsonl"), "--rules", "1", "--state",
            str(tmp_path / "c.state"), "-q",
        )  # fmt: skip
        assert until.returncode == cut_file.returncode == 0, until.stderr
        assert (tmp_path / "u.state").read_bytes() == (tmp_path / "c.state").read_bytes()

        # A forger appends a correctly chained record whose recorded outputs the engine
        # never made: the chain verifies, the replay's divergence report catches it.
        engine = Engine()
        for record in journal:
            engine.apply_encoded(record.payload)
        chain = JournalChain(last_seq, journal[-1].chain_hash)
        payload = b'{"type":"deposit","account":"forger","amount":"1000000"}'
        outputs = encode_outputs(engine.apply(payload)) + b'{"type":"note"}\n'
        await append_to_journal(
            config, [chain.append(last_seq + 1, "test:forged", payload, outputs)]
        )
        verified = await run_cli("journal", "verify", topic)
        assert verified.returncode == 0, verified.stderr
        diverged = await run_cli("replay", topic, "--events", str(tmp_path / "d.events"))
        assert diverged.returncode == 1
        assert "DIVERGED: 1 record(s)" in diverged.stderr
        assert f"first divergence at seq {last_seq + 1} (test:forged)" in diverged.stderr

        # A record that does not belong to the chain: verify and replay exit 1.
        await append_to_journal(
            config, [Record(last_seq + 2, "test:broken", payload, b"", b"\x07" * 32)]
        )
        broken = await run_cli("journal", "verify", topic)
        assert broken.returncode == 1
        assert f"hash chain break at seq {last_seq + 2}" in broken.stderr
        assert f"{last_seq + 1} records verified before the problem" in broken.stdout
        replayed = await run_cli("replay", topic, "--events", str(tmp_path / "b.events"))
        assert replayed.returncode == 1 and "CORRUPT" in replayed.stderr
        exported_broken = await run_cli("journal", "export", topic, "-o", str(exported))
        assert exported_broken.returncode == 1 and "CORRUPT" in exported_broken.stderr


async def test_what_is_not_a_journal_topic_is_exit_2_in_one_line(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = load_config(str(write_config(tmp_path, kafka_bootstrap, "none")), environ={})
        assert not (await create_topics(config)).problems
        missing = f"kafka://{kafka_bootstrap}/no-such-journal-topic"
        empty = f"kafka://{kafka_bootstrap}/{config.topics.journal}"
        events = f"kafka://{kafka_bootstrap}/{config.topics.events}"  # 3 partitions
        cases = {
            missing: (2, "does not exist"),
            events: (2, "exactly one"),
            "kafka://127.0.0.1:1/j": (2, "cannot read the journal topic at kafka://127.0.0.1:1/j"),
            "kafka://no:port:x/j": (2, "is not HOST:PORT"),
        }
        for source, (code, said) in cases.items():
            for command in (["journal", "verify"], ["journal", "info"], ["replay"]):
                done = await run_cli(*command, source)
                assert done.returncode == code, (command, source, done.stderr)
                assert said in done.stderr and done.stderr.count("\n") == 1, done.stderr
                assert "Traceback" not in done.stderr
        # An existing journal topic without records is an empty ledger: says so, exit 0.
        verified = await run_cli("journal", "verify", empty)
        assert verified.returncode == 0 and "EMPTY" in verified.stdout
        assert "OK" not in verified.stdout
        repair = await run_cli("journal", "verify", "--repair-truncate", empty)
        assert repair.returncode == 2 and "append-only" in repair.stderr


async def test_state_hash_under_load_is_always_a_committed_seqs(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While inputs stream in, every /state-hash answer is the hash of a replay of the
    journal up to exactly the seq it names: never a state half-way through a batch."""
    from clearing.engine import state_sha256
    from clearing.ops import state_hash

    monkeypatch.setattr(state_hash, "_MIN_INTERVAL_S", 0.0)  # recompute on every request
    async with asyncio.timeout(4 * TEST_TIMEOUT_S):
        daemon = await serve(tmp_path, kafka_bootstrap, "load")
        items = flat(scenario(groups=8, trades=200))
        feeding = asyncio.create_task(feed_slowly(daemon.config, items))
        answers: dict[int, str] = {}
        while not feeding.done() or len(answers) < 3:
            response = await request(daemon.port, "/state-hash", timeout_s=30.0)
            assert response.status == 200, response.body
            served = json.loads(response.body)
            assert served["seq"] <= served["committed_seq"]
            answers[served["seq"]] = served["state_sha256"]
        await feeding
        last_seq = sequenced_count(items)
        journal = await daemon.stop_at(last_seq)
        print(f"\nstate-hash answers at seqs {sorted(answers)} of {last_seq}")
        assert len(answers) >= 3, answers
        engine = Engine()
        replayed: dict[int, str] = {}
        for record in journal:
            engine.apply_encoded(record.payload)
            if record.seq in answers:
                replayed[record.seq] = state_sha256(engine)
        if 0 in answers:
            replayed[0] = state_sha256(Engine())
        assert replayed == answers


async def test_journal_topic_audit_uses_runs_security_settings(
    sasl_broker: Any, tmp_path: Path
) -> None:
    """``--config`` and the CLEARING_* variables give the audit the daemon's SASL login;
    a wrong password is a one-line error naming the settings, exit 2, never the secret."""
    path = sasl_config(tmp_path, sasl_broker.sasl_bootstrap)

    def audit(*argv: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clearing.cli", *argv, "--config", str(path)],
            capture_output=True, text=True, cwd=REPO, env=daemon_env(password),
            check=False, timeout=120,
        )  # fmt: skip

    async with asyncio.timeout(2 * TEST_TIMEOUT_S):
        created = await asyncio.to_thread(audit, "topics", "create", password=PASSWORD)
        assert created.returncode == 0, created.stderr
        verified = await asyncio.to_thread(
            audit, "journal", "verify", "kafka://", password=PASSWORD
        )
        assert verified.returncode == 0, verified.stderr
        assert "EMPTY: the journal topic holds no records" in verified.stdout
        wrong = "wrong-Pa55-also-secret"
        refused = await asyncio.to_thread(audit, "journal", "verify", "kafka://", password=wrong)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert "authentication with the Kafka cluster" in refused.stderr
        assert "sasl_password" in refused.stderr and wrong not in refused.stderr
