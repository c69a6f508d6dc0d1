"""The hot standby against the real broker: it follows the journal with a warm engine,
takes over when the active goes (Kafka's control group decides), and the outputs stay
exactly once. Graceful hand-over in-process; kill -9 and SIGSTOP with real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from clearing.engine import Engine
from clearing.engine.persist import dump_state
from clearing.kafka import EXIT_FENCED, EXIT_OK
from clearing.ops.config import Config, load_config
from clearing.snapshot import list_snapshots, read_snapshot
from tests.integration.test_daemon import (
    REPO,
    TEST_TIMEOUT_S,
    Running,
    check_against_replay,
    create_topics,
    flat,
    journal_until,
    produce,
    read_journal,
    scenario,
    sequenced_count,
    setup_ledger,
    write_config,
)

pytestmark = pytest.mark.kafka

SESSION_MS = 3000  # short, so that a dead active is noticed quickly


def as_role(config: Config, role: str, snapshot_dir: Path | None = None) -> Config:
    daemon = msgspec.structs.replace(config.daemon, role=role, session_timeout_ms=SESSION_MS)
    snapshot = config.snapshot
    if snapshot_dir is not None:
        snapshot = msgspec.structs.replace(snapshot, dir=str(snapshot_dir))
    return msgspec.structs.replace(config, daemon=daemon, snapshot=snapshot)


def replayed_state(config: Config) -> bytes:
    engine = Engine()
    for record in read_journal(config):
        engine.apply(record.payload)
    return dump_state(engine)


async def test_a_standby_follows_and_takes_over_on_a_graceful_stop(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(tmp_path, kafka_bootstrap, "handover")
        phases = scenario(seed=21, groups=10)
        first = flat(phases[:2])
        await produce(config, first)
        active = Running(as_role(config, "active", tmp_path / "a"))
        await active.wait_seq(sequenced_count(first))
        standby = Running(as_role(config, "standby", tmp_path / "b"))
        await standby.wait_seq(sequenced_count(first))  # followed, not consumed
        assert not standby.daemon.ready and standby.daemon.role == "standby"
        assert standby.daemon._sequencer is None  # never planned a batch
        metrics = standby.daemon.metrics
        await asyncio.sleep(1.2)  # the lag is reported once a second
        assert metrics.active._value.get() == 0 and metrics.standby_in_sync._value.get() == 1
        assert metrics.standby_lag_offsets._value.get() == 0
        assert active.daemon.metrics.active._value.get() == 1 and active.daemon.ready

        stopped_at = time.monotonic()
        assert await active.stop() == EXIT_OK
        await standby.wait_ready(timeout_s=20)
        handover_s = time.monotonic() - stopped_at
        assert standby.daemon.role == "active"
        assert metrics.failovers._value.get() == 1 and metrics.active._value.get() == 1
        recovery = standby.daemon.recovery
        assert recovery is not None and recovery.engine.seq == sequenced_count(first)

        await produce(config, flat(phases[2:]))
        total = sequenced_count(flat(phases))
        await standby.wait_seq(total)
        state = dump_state(standby.daemon.engine)  # type: ignore[arg-type]
        assert await standby.stop() == EXIT_OK
        await check_against_replay(config, tmp_path, total, cli=False)
        assert state == await asyncio.to_thread(replayed_state, config)
        print(f"\ngraceful hand-over: standby ready {handover_s:.2f} s after the stop request")


# ----------------------------------------------------------------- real processes


def spawn(config_path: Path, role: str, snapshot_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CLEARING_SNAPSHOT_DIR": str(snapshot_dir),
        "CLEARING_DAEMON_SESSION_TIMEOUT_MS": str(SESSION_MS),
        "CLEARING_LOG_JSON": "false",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "clearing.cli", "run", "--config", str(config_path),
             "--role", role],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def until_log(log: Path, text: str, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while text not in log.read_text(errors="replace"):
        if loop.time() > deadline:
            raise AssertionError(f"{text!r} not in {log}:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.1)


async def produce_slowly(config: Config, items: list, per_round: int = 20) -> None:  # type: ignore[type-arg]
    """Input arriving while the failover happens: a few records every 50 ms."""
    for begin in range(0, len(items), per_round):
        await produce(config, items[begin : begin + per_round])
        await asyncio.sleep(0.05)


async def ledger(tmp_path: Path, bootstrap: str, name: str) -> tuple[Path, Config]:
    path = write_config(
        tmp_path, bootstrap, name, snapshot={"every_inputs": 60}, batch={"max_records": 10}
    )
    config = load_config(str(path), environ={})
    assert not (await create_topics(config)).problems
    return path, config


async def test_kill_9_of_the_active_and_its_disk_the_standby_takes_over_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S * 2):
        path, config = await ledger(tmp_path, kafka_bootstrap, "kill9")
        items = flat(scenario(seed=31, groups=14))
        total = sequenced_count(items)
        logs = tmp_path / "a.log", tmp_path / "b.log"
        a = spawn(path, "active", tmp_path / "a", logs[0])
        b: subprocess.Popen[bytes] | None = None
        try:
            # The standby joins once A holds the partition (a process started as active
            # would take it over from a standby that was elected first).
            await until_log(logs[0], "ready: ledger")
            b = spawn(path, "standby", tmp_path / "b", logs[1])
            await until_log(logs[1], "standby: recovered")
            feeding = asyncio.create_task(produce_slowly(config, items))
            await journal_until(config, total // 3, timeout_s=30)
            a.send_signal(signal.SIGKILL)  # under load, a batch may be open
            killed_at = time.monotonic()
            a.wait(10)
            shutil.rmtree(tmp_path / "a", ignore_errors=True)  # the machine is gone
            await until_log(logs[1], "promoted to active", timeout_s=30)
            failover_s = time.monotonic() - killed_at
            await feeding
            await journal_until(config, total, timeout_s=60)
            b.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(b.wait, 30) == EXIT_OK
        finally:
            for proc in (a, b):
                if proc is not None and proc.poll() is None:
                    proc.kill()
        # No duplicate, no gap, by seq; outputs exactly what a replay gives.
        await check_against_replay(config, tmp_path, total, cli=False)
        await assert_final_snapshot_is_the_replay(config, tmp_path / "b", total)
        assert a.returncode == -signal.SIGKILL
        assert "restored from the snapshot topic" not in logs[1].read_text()
        print(f"\nkill -9: promoted {failover_s:.2f} s after the kill (session {SESSION_MS} ms)")


async def test_a_paused_active_is_fenced_when_it_resumes_and_writes_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S * 2):
        path, config = await ledger(tmp_path, kafka_bootstrap, "pause")
        phases = scenario(seed=41, groups=10)
        first = flat(phases[:2])
        logs = tmp_path / "a.log", tmp_path / "b.log"
        a = spawn(path, "active", tmp_path / "a", logs[0])
        b: subprocess.Popen[bytes] | None = None
        try:
            # The standby joins once A holds the partition (a process started as active
            # would take it over from a standby that was elected first).
            await until_log(logs[0], "ready: ledger")
            b = spawn(path, "standby", tmp_path / "b", logs[1])
            await until_log(logs[1], "standby: recovered")
            await produce(config, first)
            await journal_until(config, sequenced_count(first))
            a.send_signal(signal.SIGSTOP)
            await until_log(logs[1], "promoted to active", timeout_s=30)
            await produce(config, flat(phases[2:]))
            total = sequenced_count(flat(phases))
            await journal_until(config, total, timeout_s=30)
            paused_log_bytes = logs[0].stat().st_size
            a.send_signal(signal.SIGCONT)
            assert await asyncio.to_thread(a.wait, 30) == EXIT_FENCED
            b.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(b.wait, 30) == EXIT_OK
        finally:
            for proc in (a, b):
                if proc is not None and proc.poll() is None:
                    proc.kill()
        # The resumed process committed nothing (its log says so, and the journal and
        # the outputs are exactly once).
        resumed = logs[0].read_bytes()[paused_log_bytes:].decode(errors="replace")
        assert "committed: seq" not in resumed
        assert "FENCED" in resumed or "lost the control partition" in resumed
        await check_against_replay(config, tmp_path, total, cli=False)
        await assert_final_snapshot_is_the_replay(config, tmp_path / "b", total)


async def assert_final_snapshot_is_the_replay(config: Config, directory: Path, seq: int) -> None:
    """The promoted standby's state at its clean stop equals a replay of the journal."""
    snapshot = read_snapshot(list_snapshots(str(directory))[-1].path)
    assert snapshot.journal_seq == seq
    assert snapshot.state == await asyncio.to_thread(replayed_state, config)


async def test_a_new_standby_with_an_empty_disk_starts_from_the_snapshot_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(tmp_path, kafka_bootstrap, "newdisk")
        phases = scenario(seed=51, groups=10)
        first = flat(phases[:2])
        await produce(config, first)
        # A clean stop and restart of the active: its shutdown snapshot is published.
        once = Running(as_role(config, "active", tmp_path / "a"))
        await once.wait_seq(sequenced_count(first))
        assert await once.stop() == EXIT_OK
        active = Running(as_role(config, "active", tmp_path / "a"))
        await active.wait_ready()
        await produce(config, flat(phases[2:]))
        total = sequenced_count(flat(phases))

        standby = Running(as_role(config, "standby", tmp_path / "new"))  # empty disk
        await standby.wait_seq(total)
        recovery = standby.daemon._follower.base  # type: ignore[union-attr]
        assert recovery.restored_seq == sequenced_count(first) > 0
        assert list_snapshots(str(tmp_path / "new"))  # the cache is filled
        state = dump_state(standby.daemon.engine)  # type: ignore[arg-type]
        assert state == await asyncio.to_thread(replayed_state, config)
        assert await standby.stop() == EXIT_OK
        assert await active.stop() == EXIT_OK
