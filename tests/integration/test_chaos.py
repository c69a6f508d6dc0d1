"""Faults against the real local broker (quick subset of ``tools/kafka_chaos.py``).

* kill -9 / SIGTERM of the daemon (a subprocess under a supervisor loop) while a
  producer feeds inputs: nothing lost, duplicated or reordered;
* a broker restart and a ~12 s broker outage mid-run: the same;
* the journal topic deleted (before a start, and while running), an input topic
  deleted, and an input partition truncated past the committed offset
  (``delete-records``): the daemon must stop and say so.

Outcomes are always checked against ``clearing replay`` of the journal's payloads
(``kafka_chaos.verify``). Every test leaves the session broker running.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import KafkaError

from clearing.kafka import EXIT_FAILURE, EXIT_OK, EXIT_RECOVERY, Daemon, create_topics
from clearing.ops.config import Config, load_config

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def _load_chaos() -> ModuleType:
    if "kafka_chaos" in sys.modules:
        return sys.modules["kafka_chaos"]
    spec = importlib.util.spec_from_file_location("kafka_chaos", REPO / "tools" / "kafka_chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_chaos"] = module
    spec.loader.exec_module(module)
    return module


chaos = _load_chaos()


# ----------------------------------------------------------------------------- helpers


class DaemonProcess:
    """``clearing run --config F`` as a subprocess, JSON logs to a file."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in wait())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clearing.cli", "run", "--config", str(config_path)],
            cwd=REPO, stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL,
            env={**os.environ, "CLEARING_LOG_JSON": "true"},
        )  # fmt: skip

    async def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout_s``."""
        try:
            return await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            return None

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await self.wait(30)
        if code is None:
            self.proc.kill()
            code = await asyncio.to_thread(self.proc.wait)
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def setup(tmp_path: Path, bootstrap: str, **sections: dict[str, Any]) -> tuple[Path, Config]:
    path = chaos.write_config(tmp_path, bootstrap, "fault", **sections)
    config = load_config(str(path), environ={})
    report = await create_topics(config)
    assert not report.problems, report.problems
    return path, config


async def wait_caught_up(config: Config, daemon: DaemonProcess, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if await chaos.group_caught_up(config):
                return
        except KafkaError:  # e.g. the group coordinator is still loading
            pass
        assert daemon.proc.poll() is None, (
            f"daemon exited {daemon.proc.returncode}:\n{daemon.log()}"
        )
        assert time.monotonic() < deadline, f"daemon did not catch up:\n{daemon.log()[-3000:]}"
        await asyncio.sleep(0.3)


async def admin_do(bootstrap: str, action: str, *args: Any) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await getattr(admin, action)(*args)
    finally:
        await admin.close()


# ------------------------------------------------------------------------------ chaos


async def test_kill9_and_sigterm_mid_stream_lose_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = await chaos.run_trial(
        kafka_bootstrap, events=6000, seed=11, rate=1500.0, faults=("kill", "kill", "term"),
        max_gap_s=1.2, work_root=tmp_path, catch_up_timeout_s=60,
    )  # fmt: skip
    print(f"\n{result.as_json()}")
    assert result.ok, result.as_json()
    assert result.faults.get("kill", 0) >= 2 and result.daemon_starts >= 3
    assert result.counts["journal"] == result.counts["inputs"] == 6000


async def test_broker_restart_and_outage_mid_run_lose_nothing(
    kafka_broker: Any, tmp_path: Path
) -> None:
    """Restart, then a ~12 s outage (stop, wait, start), while inputs keep coming: the
    daemon either rides it out or exits 1 and the supervisor loop restarts it."""
    try:
        result = await chaos.run_trial(
            kafka_broker.bootstrap, events=3000, seed=12, rate=250.0,
            schedule=("broker-restart", "broker-outage"), outage_s=10.0, max_gap_s=3.0,
            broker=kafka_broker, work_root=tmp_path, catch_up_timeout_s=90,
        )  # fmt: skip
    finally:
        if not kafka_broker.is_running():
            await asyncio.to_thread(kafka_broker.start)
    print(f"\n{result.as_json()}")
    assert result.ok, result.as_json()
    assert result.faults == {"broker-restart": 1, "broker-outage": 1}


# ------------------------------------------------------------------- refusals: topics


async def test_deleted_journal_topic_is_refused_at_start(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path, config = await setup(tmp_path, kafka_bootstrap)
    await chaos.produce(config, chaos.input_stream(200, seed=3))
    daemon = DaemonProcess(path, tmp_path / "d1.log")
    await wait_caught_up(config, daemon)
    assert await daemon.stop() == EXIT_OK
    await admin_do(kafka_bootstrap, "delete_topics", [config.topics.journal])
    await asyncio.sleep(1.0)
    # Restarted by a supervisor: it refuses to start and says why.
    again = DaemonProcess(path, tmp_path / "d2.log")
    assert await again.wait(60) == EXIT_RECOVERY
    await again.stop()
    assert f"{config.topics.journal} do not exist" in again.log(), again.log()[-2000:]
    # Recreating the topic does not make it look like a new ledger.
    assert not (await create_topics(config)).problems
    third = DaemonProcess(path, tmp_path / "d3.log")
    assert await third.wait(60) == EXIT_RECOVERY
    await third.stop()
    # (Its shutdown snapshot is now ahead of the empty journal: either refusal will do.)
    assert any(
        text in third.log()
        for text in ("the journal was deleted or recreated", "journal records were lost")
    ), third.log()[-2000:]


async def test_journal_topic_deleted_while_running_stops_the_daemon(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The next batch's sends cannot complete: the batch is bounded by 2 x
    kafka.request_timeout_ms (here 2 x 4 s), then aborted, and the daemon exits 1 naming
    the missing journal topic (a restart then refuses with exit 4, see above)."""
    path, config = await setup(
        tmp_path,
        kafka_bootstrap,
        daemon={"shutdown_timeout_s": 3.0},
        kafka={"request_timeout_ms": 4000},
    )
    values = chaos.input_stream(300, seed=3)
    await chaos.produce(config, values[:200])
    daemon = DaemonProcess(path, tmp_path / "d1.log")
    try:
        await wait_caught_up(config, daemon)
        await admin_do(kafka_bootstrap, "delete_topics", [config.topics.journal])
        await asyncio.sleep(1.0)
        await chaos.produce(config, values[200:])
        started = time.monotonic()
        code = await daemon.wait(30)
        took = time.monotonic() - started
    finally:
        final = await daemon.stop()
    print(f"\njournal deleted while running: exit {code} after {took:.1f} s (then {final})")
    log = daemon.log()
    assert code == EXIT_FAILURE, f"daemon kept running without its journal topic:\n{log[-2000:]}"
    assert "timed out" in log and "did not complete within 8.0 s" in log, log[-2000:]
    assert f"journal topic {config.topics.journal!r} does not exist" in log, log[-2000:]


async def test_deleted_input_topic_stops_the_daemon_and_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path, config = await setup(
        tmp_path, kafka_bootstrap, daemon={"partition_refresh_interval_s": 1.0}
    )
    await chaos.produce(config, chaos.input_stream(200, seed=4))
    daemon = DaemonProcess(path, tmp_path / "d1.log")
    try:
        await wait_caught_up(config, daemon)
        await admin_do(kafka_bootstrap, "delete_topics", [config.topics.book])
        code = await daemon.wait(45)
    finally:
        final = await daemon.stop()
    assert code is not None, "daemon kept running after an input topic was deleted"
    assert final == EXIT_FAILURE and f"input topic '{config.topics.book}' disappeared" in (
        daemon.log()
    ), daemon.log()[-3000:]
    again = DaemonProcess(path, tmp_path / "d2.log")
    assert await again.wait(60) == EXIT_RECOVERY
    await again.stop()
    assert f"{config.topics.book} do not exist" in again.log(), again.log()[-2000:]


async def test_input_truncated_past_the_committed_offset_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path, config = await setup(tmp_path, kafka_bootstrap, topics={"input_partitions": 1})
    values = chaos.input_stream(400, seed=5, accounts=20)
    await chaos.produce(config, values[:200])
    daemon = DaemonProcess(path, tmp_path / "d1.log")
    await wait_caught_up(config, daemon)
    assert await daemon.stop() == EXIT_OK
    # 200 more inputs arrive while it is down; then retention (here: delete-records)
    # removes them before the daemon read them.
    await chaos.produce(config, values[200:])
    tps = await chaos.partitions_of(config, config.topics.inputs)
    consumer_ends = await _end_offsets(config, tps)
    committed = await admin_do(kafka_bootstrap, "list_consumer_group_offsets", config.group_id)
    truncated = {
        tp: end
        for tp, end in consumer_ends.items()
        if tp in committed and end > committed[tp].offset
    }
    assert config.topics.fills in {tp.topic for tp in truncated}
    await admin_do(
        kafka_bootstrap,
        "delete_records",
        {tp: RecordsToDelete(before_offset=end) for tp, end in truncated.items()},
    )
    again = DaemonProcess(path, tmp_path / "d2.log")
    code = await again.wait(20)
    final = await again.stop()
    log = again.log()
    print(f"\nafter truncation: exit {code} (then {final}); log tail:\n{log[-1500:]}")
    assert code == EXIT_RECOVERY, "the daemon kept running over a gap in its inputs"
    tp = next(iter(truncated))
    assert f"{tp.topic}:{tp.partition}" in log and "truncated" in log
    # Every truncated partition is named, with the offset it expected and the log start.
    for tp, end in truncated.items():
        assert f"{tp.topic}:{tp.partition} expected offset " in log, log[-2000:]
        assert f"log start offset {end}" in log, log[-2000:]


async def test_input_truncated_while_running_stops_the_daemon(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The fetch position falls below the log start while the daemon runs: the fetch
    raises OffsetOutOfRangeError (never a silent reset) and the daemon exits 4."""
    _, config = await setup(tmp_path, kafka_bootstrap, topics={"input_partitions": 1})
    fills = TopicPartition(config.topics.fills, 0)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    # Records the daemon cannot read before they are deleted: an open transaction holds
    # its read_committed fetches at the last stable offset (the daemon fetches one batch
    # ahead, so records merely produced could be read before the deletion).
    held = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"held-{time.time_ns()}"
    )
    await producer.start()
    await held.start()
    try:
        # Any bytes will do (they are rejected, i.e. journaled + DLQ).
        for i in range(300):
            await producer.send(fills.topic, b'{"n": %d}' % i)
        await producer.flush()
        daemon = Daemon(config)
        with caplog.at_level(logging.ERROR, logger="clearing.kafka"):
            running = asyncio.create_task(daemon.run())
            async with asyncio.timeout(60):
                while daemon.committed_seq < 300:
                    assert not running.done(), running
                    await asyncio.sleep(0.05)
            await held.begin_transaction()
            for i in range(300):
                await held.send(fills.topic, b'{"m": %d}' % i)
            await held.flush()
            end = (await _end_offsets(config, [fills]))[fills]
            assert end >= 600
            await admin_do(
                kafka_bootstrap, "delete_records", {fills: RecordsToDelete(before_offset=end)}
            )
            await held.abort_transaction()
            code = await asyncio.wait_for(running, 60)
    finally:
        await held.stop()
        await producer.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "clearing.kafka"]
    print(f"\ntruncated while running: exit {code}; {messages[-1:]}")
    assert code == EXIT_RECOVERY, messages
    assert daemon.committed_seq == 300  # the 300 records it had read, and not one more
    assert any(
        f"{fills.topic}:0 expected offset 300" in m and "truncated" in m for m in messages
    ), messages


async def _end_offsets(config: Config, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()
