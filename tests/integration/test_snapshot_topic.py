"""Snapshots in Kafka, against the real broker: a machine with an empty snapshot
directory recovers from the snapshot topic plus the journal's tail (on the native core in
frame windows, to the Python core's state), and a damaged newest snapshot in the topic is
skipped for the previous one (never loaded)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from clearing.engine import Engine, native_available
from clearing.engine.native import NativeEngine
from clearing.engine.persist import dump_state
from clearing.kafka import EXIT_OK, KafkaRecovery, recover_from_kafka
from clearing.kafka._snapshot_topic import (
    CHUNK_PARTITION,
    MANIFEST_PARTITION,
    SnapshotTopicReader,
    chunk_key,
    encode_chunk,
    manifest_key,
)
from clearing.ops.config import Config
from tests.integration.test_daemon import (
    TEST_TIMEOUT_S,
    Running,
    check_against_replay,
    flat,
    produce,
    read_journal,
    scenario,
    sequenced_count,
    setup_ledger,
)

pytestmark = pytest.mark.kafka


def manifests(config: Config) -> list:  # type: ignore[type-arg]
    with SnapshotTopicReader(config) as reader:
        return reader.manifests()


def replayed_state(config: Config) -> bytes:
    """The state a replay of the committed journal's payloads gives (the reference)."""
    engine = Engine()
    for record in read_journal(config):
        engine.apply(record.payload)
    return dump_state(engine)


async def run_to_end(config: Config, total: int) -> None:
    run = Running(config)
    await run.wait_seq(total)
    assert await run.stop() == EXIT_OK


async def test_an_empty_snapshot_directory_recovers_from_the_snapshot_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        # One snapshot, at the first clean stop; the second run adds a journal tail
        # after it (no snapshot at its stop), so recovery restores and then replays.
        config = await setup_ledger(
            tmp_path, kafka_bootstrap, "snaptopic", snapshot={"chunk_bytes": 1024}
        )
        phases = scenario(seed=3, groups=10)
        first = flat(phases[:2])
        await produce(config, first)
        await run_to_end(config, sequenced_count(first))
        no_stop_snapshot = msgspec.structs.replace(config.snapshot, on_shutdown=False)
        await produce(config, flat(phases[2:]))
        total = sequenced_count(flat(phases))
        await run_to_end(msgspec.structs.replace(config, snapshot=no_stop_snapshot), total)
        found = await asyncio.to_thread(manifests, config)
        assert found, "no snapshot was published"
        assert all(len(m.chunk_offsets) > 1 for m in found)  # chunked at 1 KiB
        assert len(found) <= config.snapshot.topic_keep  # older ones tombstoned

        shutil.rmtree(tmp_path / "snapshots")  # the machine's disk is gone
        rerun = Running(config)
        await rerun.wait_ready()
        recovery = rerun.daemon.recovery
        assert recovery is not None
        assert recovery.restored_seq == found[0].journal_seq == recovery.snapshot_seq
        assert recovery.snapshot_seq == sequenced_count(first)
        assert recovery.replayed == total - recovery.snapshot_seq > 0
        assert (tmp_path / "snapshots").is_dir()  # the cache is filled again
        state = dump_state(rerun.daemon.engine)  # type: ignore[arg-type]
        assert state == await asyncio.to_thread(replayed_state, config)
        assert await rerun.stop() == EXIT_OK
        await check_against_replay(config, tmp_path, total, cli=False)


async def test_a_damaged_newest_snapshot_in_the_topic_falls_back_to_the_previous(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(
            tmp_path,
            kafka_bootstrap,
            "snapdamage",
            snapshot={"every_inputs": 30, "on_shutdown": True, "chunk_bytes": 1024},
        )
        items = flat(scenario(seed=4, groups=10))
        total = sequenced_count(items)
        await produce(config, items)
        await run_to_end(config, total)
        found = await asyncio.to_thread(manifests, config)
        assert len(found) >= 2
        newest, previous = found[0], found[1]
        assert newest.journal_seq == total  # the shutdown snapshot

        # Damage the newest: a chunk whose CRC fails at a new offset, and its manifest
        # re-pointed there (the latest value of a key wins). Plus a partial snapshot
        # further ahead: chunks without a manifest.
        producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers)
        await producer.start()
        try:
            topic = config.topics.snapshots
            good = encode_chunk(newest.journal_seq, 0, b"x" * 100)
            bad = good[:-1] + bytes([good[-1] ^ 1])
            sent = await producer.send_and_wait(
                topic, bad, key=chunk_key(newest.journal_seq, 0), partition=CHUNK_PARTITION
            )
            damaged = msgspec.structs.replace(
                newest, chunk_offsets=[sent.offset, *newest.chunk_offsets[1:]]
            )
            await producer.send_and_wait(
                topic,
                msgspec.json.encode(damaged),
                key=manifest_key(newest.journal_seq),
                partition=MANIFEST_PARTITION,
            )
            await producer.send_and_wait(
                topic,
                encode_chunk(total + 50, 0, b"partial"),
                key=chunk_key(total + 50, 0),
                partition=CHUNK_PARTITION,
            )
        finally:
            await producer.stop()

        shutil.rmtree(tmp_path / "snapshots")
        caplog.set_level(logging.WARNING, logger="clearing.kafka.recovery")
        rerun = Running(config)
        await rerun.wait_ready()
        recovery = rerun.daemon.recovery
        assert recovery is not None
        assert recovery.restored_seq == previous.journal_seq
        assert recovery.replayed == total - previous.journal_seq
        assert f"snapshot at seq {newest.journal_seq}" in caplog.text
        assert "fails its CRC32C" in caplog.text
        state = dump_state(rerun.daemon.engine)  # type: ignore[arg-type]
        assert state == await asyncio.to_thread(replayed_state, config)
        assert await rerun.stop() == EXIT_OK


def _recover_on(config: Config, core: str, snapshot_dir: Path) -> tuple[KafkaRecovery, int]:
    """``recover_from_kafka`` on ``core`` from an empty ``snapshot_dir``, and how many
    frame-window calls the native core took."""
    engine = msgspec.structs.replace(config.engine, core=core)
    snapshot = msgspec.structs.replace(config.snapshot, dir=str(snapshot_dir))
    calls: list[int] = []
    original = NativeEngine.replay_window

    def counted(self: NativeEngine, *args: Any) -> Any:
        calls.append(1)
        return original(self, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NativeEngine, "replay_window", counted)
        recovery = recover_from_kafka(
            msgspec.structs.replace(config, engine=engine, snapshot=snapshot)
        )
    return recovery, len(calls)


@pytest.mark.skipif(not native_available(), reason="needs the native core")
async def test_the_journal_tail_is_recovered_as_frame_windows_on_the_native_core(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Cold start from the snapshot topic: the native core applies the journal topic's
    tail in frame windows (no record-by-record replay), with the state, chain and input
    positions the Python core's record-by-record recovery gives."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(tmp_path, kafka_bootstrap, "snapwindows")
        phases = scenario(seed=5, groups=6)
        first = flat(phases[:2])
        await produce(config, first)
        await run_to_end(config, sequenced_count(first))  # its stop publishes a snapshot
        no_stop_snapshot = msgspec.structs.replace(config.snapshot, on_shutdown=False)
        await produce(config, flat(phases[2:]))
        total = sequenced_count(flat(phases))
        await run_to_end(msgspec.structs.replace(config, snapshot=no_stop_snapshot), total)

        native, windows = await asyncio.to_thread(_recover_on, config, "native", tmp_path / "n")
        python, none = await asyncio.to_thread(_recover_on, config, "python", tmp_path / "p")
        assert native.restored_seq == python.restored_seq == sequenced_count(first)
        assert native.replayed == python.replayed == total - native.snapshot_seq > 0
        engine = cast(NativeEngine, native.engine)
        assert windows > 0 if engine.replays_all_outputs_recorded else windows == 0
        assert none == 0
        assert native.engine.state_json() == python.engine.state_json()
        assert dump_state(python.engine) == await asyncio.to_thread(replayed_state, config)
        assert native.chain.last_seq == python.chain.last_seq == total
        assert native.chain.head_hash == python.chain.head_hash
        assert native.positions == python.positions and native.positions
        assert native.journal_offset == python.journal_offset
