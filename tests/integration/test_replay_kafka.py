"""The one replay loop (``clearing.sequencer.replay``) reads the Kafka journal topic a real
daemon run wrote, through the ``JournalReader`` protocol, on both cores."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clearing.audit.replay import encode_state
from clearing.engine import Engine, make_engine, native_available
from clearing.journal import JournalReader
from clearing.kafka import EXIT_OK, KafkaJournalReader
from clearing.ops.config import Config
from clearing.sequencer import ReplayResult, replay
from tests.integration.test_daemon import (
    TEST_TIMEOUT_S,
    Running,
    produce,
    read_journal,
    scenario,
    sequenced_count,
    setup_ledger,
)

CORES = ("python", "native") if native_available() else ("python",)


def _replay_topic(config: Config, core: str) -> tuple[ReplayResult, bytes, bytes, int]:
    with KafkaJournalReader(config) as reader:
        assert isinstance(reader, JournalReader)
        engine = make_engine(core)
        chunks: list[bytes] = []
        done = replay(reader, engine, on_events=chunks.append)
        return done, b"".join(chunks), encode_state(engine), reader.last_seq


async def test_the_replay_loop_replays_a_kafka_journal_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        config = await setup_ledger(tmp_path, kafka_bootstrap, "replayloop")
        run = Running(config)
        await run.wait_ready()
        expected_seq = 0
        for phase in scenario(groups=3, trades=40):
            await produce(config, phase)
            expected_seq += sequenced_count(phase)
            await run.wait_seq(expected_seq)
        assert await run.stop() == EXIT_OK

        journal = await asyncio.to_thread(read_journal, config)
        reference = Engine()
        for record in journal:
            reference.apply(record.payload)
        for core in CORES:
            done, events, state, last_seq = await asyncio.to_thread(_replay_topic, config, core)
            # Every record's recorded outputs were re-derived and matched (a divergence
            # would have raised), and the state is the one applying the inputs gives.
            assert last_seq == expected_seq == done.inputs, core
            assert events == b"".join(r.outputs for r in journal), core
            assert state == encode_state(reference), core
