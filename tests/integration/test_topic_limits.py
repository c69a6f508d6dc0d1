"""Input topics carry what ``limits.max_message_bytes`` promises, and dead letters are
logged one by one (reason, source, size, seq), against the real broker.

``clearing topics create`` sets the input topics' ``max.message.bytes`` from the
configuration (the broker's default is ~1 MiB); the daemon warns at start about an input
topic that cannot carry ``limits.max_message_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from msgspec.structs import replace

from clearing.kafka import create_topics
from clearing.kafka._topics import input_limit_warnings
from clearing.ops.config import Config, load_config

pytestmark = pytest.mark.kafka

chaos = sys.modules.get("kafka_chaos")
if chaos is None:  # test_chaos.py loads it by path; do the same when run alone
    from tests.integration.test_chaos import chaos
from tests.integration.test_daemon import Running  # noqa: E402

MiB = 1024 * 1024
FRAMING = 64 * 1024


def _config(tmp_path: Path, bootstrap: str, max_message_bytes: int) -> Config:
    path = chaos.write_config(tmp_path, bootstrap, "limits", input_partitions=1,
                              limits={"max_message_bytes": max_message_bytes})  # fmt: skip
    return load_config(str(path), environ={})


async def _max_message_bytes(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = {e[0]: e[1] for r in found for res in r.resources for e in res[4]}
    return str(entries["max.message.bytes"])


async def test_input_topics_take_inputs_up_to_the_configured_limit_and_dead_letters_are_logged(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path, kafka_bootstrap, 2 * MiB)
    report = await create_topics(config)
    assert not report.problems and not report.warnings, report
    for topic in config.topics.inputs:
        assert await _max_message_bytes(kafka_bootstrap, topic) == str(2 * MiB + FRAMING)
    # 1.5 MiB is past the broker's default limit: refused there, accepted here.
    big_malformed = b"{" + b"x" * (3 * MiB // 2 - 1)
    oversized = b"y" * (2 * MiB + 100)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4 * MiB)
    await producer.start()
    try:
        for value in (big_malformed, oversized):
            await producer.send_and_wait(config.topics.fills, value)
    finally:
        await producer.stop()
    caplog.set_level(logging.INFO, "clearing.kafka")
    running = Running(config)
    await running.wait_seq(1, timeout_s=60)
    for _ in range(100):  # the oversized input is never sequenced: wait for its commit
        if await chaos.group_caught_up(config):
            break
        await asyncio.sleep(0.2)
    assert await running.stop() == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "clearing.kafka"]
    fills = config.topics.fills
    dead = [line for line in lines if line.startswith("dead letter")]
    assert len(dead) == 2, lines
    assert dead[0].startswith(f"dead letter kafka:{fills}:0:0 (1572864 bytes): malformed '")
    assert dead[0].endswith(f"(seq 1), sent to {config.topics.dlq}")
    assert dead[1].startswith(
        f"dead letter kafka:{fills}:0:1 (2097252 bytes): oversized '2097252 bytes exceeds"
    )
    assert not [line for line in lines if "max.message.bytes" in line], lines


async def test_start_warns_about_input_topics_below_the_configured_limit(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, kafka_bootstrap, 2 * MiB)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        # Created by someone else, with the broker's default limit (~1 MiB).
        await admin.create_topics([NewTopic(t, 1, 1) for t in config.topics.inputs])
        warnings = await input_limit_warnings(admin, config)
        assert len(warnings) == 4, warnings
        for topic, warning in zip(config.topics.inputs, warnings, strict=True):
            assert warning.startswith(f"input topic {topic!r} has max.message.bytes=")
            assert f"--entity-name {topic} --add-config max.message.bytes={2 * MiB + FRAMING}" in (
                warning
            )
        # The same topics carry a 4096-byte limit: nothing to say.
        small = replace(config, limits=replace(config.limits, max_message_bytes=4096))
        assert await input_limit_warnings(admin, small) == []
    finally:
        await admin.close()
