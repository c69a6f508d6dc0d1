"""Prove that aiokafka's transactions work against the real local Kafka broker.

These are the guarantees the clearing daemon's exactly-once pipeline relies on:
read_committed visibility, abort invisibility, atomic consumer-offset commits via
send_offsets_to_transaction, zombie fencing, and recovery across broker restarts.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.protocol.api import Request

pytestmark = pytest.mark.kafka

kafka_local = sys.modules["kafka_local"]  # loaded by conftest.py

TEST_TIMEOUT = 45.0  # per test; a healthy run takes a few seconds each


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(name, partitions, 1)])
        # create_topics returns the raw response; it does not raise on per-topic errors.
        for topic_error in resp.topic_errors:
            assert topic_error[1] == 0, f"create_topics({name}) failed: {topic_error}"
    finally:
        await admin.close()


@asynccontextmanager
async def txn_producer(
    bootstrap: str, txn_id: str | None = None
) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=txn_id or uniq("txn"),
        # enable_idempotence is implied by transactional_id; acks=all is required.
        acks="all",
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@asynccontextmanager
async def consumer(bootstrap: str, *topics: str, **kwargs: Any) -> AsyncIterator[AIOKafkaConsumer]:
    kwargs.setdefault("isolation_level", "read_committed")
    kwargs.setdefault("auto_offset_reset", "earliest")
    kwargs.setdefault("enable_auto_commit", False)
    c = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **kwargs)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def read_until(
    c: AIOKafkaConsumer, done: Callable[[list[bytes]], bool], timeout: float = 15.0
) -> list[bytes]:
    """Collect values until done(values) or timeout; returns what was read."""
    values: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done(values) and loop.time() < deadline:
        batches = await c.getmany(timeout_ms=200)
        for records in batches.values():
            values.extend(r.value for r in records if r.value is not None)
    return values


async def committed_offset(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return None if meta is None or meta.offset < 0 else int(meta.offset)


async def wait_committed(
    bootstrap: str, group: str, tp: TopicPartition, expected: int, timeout: float = 10.0
) -> int | None:
    # Transactional offsets become visible only once the commit marker reaches
    # __consumer_offsets, which happens asynchronously after EndTxn returns.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got = await committed_offset(bootstrap, group, tp)
    while got != expected and loop.time() < deadline:
        await asyncio.sleep(0.1)
        got = await committed_offset(bootstrap, group, tp)
    return got


# ---------------------------------------------------------------------------- tests


async def test_aiokafka_protocol_versions_overlap_broker(kafka_bootstrap: str) -> None:
    """Every request aiokafka can send has a version the broker still accepts.

    Kafka 4.0 removed pre-2.1 protocol versions (KIP-896); aiokafka 0.14 hardcodes
    e.g. only v0 of all five transaction APIs. If a Kafka bump breaks this, this test
    names the API instead of a transaction hanging somewhere.
    """
    host, port = kafka_bootstrap.split(":")
    broker = kafka_local.api_versions(host, int(port))
    missing = []
    for modname in ("admin", "commit", "coordination", "fetch", "group", "metadata",
                    "offset", "produce", "transaction"):  # fmt: skip
        mod = importlib.import_module(f"aiokafka.protocol.{modname}")
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if not issubclass(cls, Request) or cls is Request or cls.__module__ != mod.__name__:
                continue
            ours = [k.API_VERSION for k in cls._CLASSES]
            lo, hi = broker.get(cls.API_KEY, (0, -1))
            if not any(lo <= v <= hi for v in ours):
                missing.append(f"{name}: aiokafka {ours}, broker {lo}..{hi}")
    assert not missing, missing


async def test_committed_transaction_visible_to_read_committed(kafka_bootstrap: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        topic = uniq("commit")
        await create_topic(kafka_bootstrap, topic)
        async with txn_producer(kafka_bootstrap) as p, p.transaction():
            for i in range(3):
                await p.send(topic, f"v{i}".encode(), key=b"k")
        async with consumer(kafka_bootstrap, topic) as c:
            got = await read_until(c, lambda v: len(v) >= 3)
        assert got == [b"v0", b"v1", b"v2"]


async def test_aborted_transaction_invisible_to_read_committed(kafka_bootstrap: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        topic = uniq("abort")
        await create_topic(kafka_bootstrap, topic)
        async with txn_producer(kafka_bootstrap) as p:
            await p.begin_transaction()
            await p.send_and_wait(topic, b"aborted-1")
            await p.send_and_wait(topic, b"aborted-2")
            await p.abort_transaction()
            async with p.transaction():
                await p.send(topic, b"committed")
        async with consumer(kafka_bootstrap, topic) as c:
            got = await read_until(c, lambda v: b"committed" in v)
        assert got == [b"committed"]
        # The aborted records really are in the log (read_uncommitted sees them):
        # so read_committed filtered them, rather than them never being written.
        async with consumer(kafka_bootstrap, topic, isolation_level="read_uncommitted") as c:
            raw = await read_until(c, lambda v: b"committed" in v)
        assert raw == [b"aborted-1", b"aborted-2", b"committed"]


async def test_send_offsets_to_transaction_is_atomic(kafka_bootstrap: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        src, dst, group = uniq("src"), uniq("dst"), uniq("group")
        await create_topic(kafka_bootstrap, src, partitions=2)
        await create_topic(kafka_bootstrap, dst)
        tp0, tp1 = TopicPartition(src, 0), TopicPartition(src, 1)
        async with txn_producer(kafka_bootstrap) as seed, seed.transaction():
            for i in range(6):
                await seed.send(src, f"in{i}".encode(), partition=0)
            await seed.send(src, b"p1", partition=1)

        # Consume-transform-produce with a real consumer group (JoinGroup/SyncGroup).
        async with (
            consumer(kafka_bootstrap, src, group_id=group) as c,
            txn_producer(kafka_bootstrap) as p,
        ):
            got = await read_until(c, lambda v: len(v) >= 7)
            assert sorted(got) == sorted([f"in{i}".encode() for i in range(6)] + [b"p1"])

            # Committed txn: outputs + offset 3 of partition 0, atomically.
            async with p.transaction():
                for i in range(3):
                    await p.send(dst, f"out{i}".encode())
                await p.send_offsets_to_transaction({tp0: 3}, group)
            assert await wait_committed(kafka_bootstrap, group, tp0, 3) == 3

            # Aborted txn: must move neither outputs nor offsets.
            await p.begin_transaction()
            await p.send(dst, b"out-aborted")
            await p.send_offsets_to_transaction({tp0: 6}, group)
            await p.abort_transaction()

            # The coordinator serialises transactions per transactional id, so once a
            # later committed one is visible the abort has completed everywhere.
            async with p.transaction():
                await p.send_offsets_to_transaction({tp1: 1}, group)
            assert await wait_committed(kafka_bootstrap, group, tp1, 1) == 1
            assert await committed_offset(kafka_bootstrap, group, tp0) == 3

        async with consumer(kafka_bootstrap, dst) as out:
            outputs = await read_until(out, lambda v: len(v) >= 3, timeout=5)
            # Give an (incorrectly) visible aborted record a chance to show up.
            outputs += await read_until(out, lambda v: False, timeout=1)
        assert outputs == [b"out0", b"out1", b"out2"]

        # A new member of the group resumes exactly at the transactionally committed offset.
        async with consumer(kafka_bootstrap, src, group_id=group) as c2:
            resumed = await read_until(c2, lambda v: len(v) >= 3, timeout=10)
        assert resumed == [b"in3", b"in4", b"in5"]


@pytest.mark.parametrize("zombie_action", ["commit", "send"])
async def test_zombie_producer_is_fenced(kafka_bootstrap: str, zombie_action: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        topic = uniq("fence")
        txn_id = uniq("txn-fence")
        await create_topic(kafka_bootstrap, topic)
        async with txn_producer(kafka_bootstrap, txn_id) as zombie:
            await zombie.begin_transaction()
            # NB: the zombie must have written something: aiokafka commits an *empty*
            # transaction locally without asking the broker, so it would not notice.
            await zombie.send_and_wait(topic, b"zombie")
            async with txn_producer(kafka_bootstrap, txn_id) as fresh:
                # fresh's InitProducerId bumped the epoch and aborted zombie's open txn.
                # The broker answers INVALID_PRODUCER_EPOCH (47); aiokafka raises
                # aiokafka.errors.ProducerFenced (a KafkaError, not a BrokerResponseError).
                with pytest.raises(ProducerFenced):
                    if zombie_action == "commit":
                        await zombie.commit_transaction()
                    else:
                        await zombie.send_and_wait(topic, b"zombie-2")
                async with fresh.transaction():
                    await fresh.send(topic, b"fresh")
                # The zombie is now in aiokafka's FATAL_ERROR state and must be stopped
                # and discarded. Quirk: begin_transaction() then fails with a bare
                # AssertionError from aiokafka's state machine, not a KafkaError.
                with pytest.raises((KafkaError, AssertionError)):
                    await zombie.begin_transaction()
        async with consumer(kafka_bootstrap, topic) as c:
            got = await read_until(c, lambda v: b"fresh" in v)
        assert got == [b"fresh"]


async def test_clients_resume_after_broker_restart_and_crash(
    kafka_broker: Any, kafka_bootstrap: str
) -> None:
    try:
        await _restart_and_crash(kafka_broker, kafka_bootstrap)
    finally:
        # Later tests share the session broker: never leave it down.
        if not kafka_broker.is_running():
            kafka_broker.start()


async def _restart_and_crash(kafka_broker: Any, kafka_bootstrap: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT + 30):
        topic, group = uniq("restart"), uniq("group-restart")
        await create_topic(kafka_bootstrap, topic)
        tp = TopicPartition(topic, 0)
        async with (
            txn_producer(kafka_bootstrap) as p,
            consumer(kafka_bootstrap, topic, group_id=group) as c,
        ):
            async with p.transaction():
                await p.send(topic, b"before")
            assert await read_until(c, lambda v: len(v) >= 1) == [b"before"]
            await c.commit()

            # Graceful restart on the same port + data dir. Blocking the loop is fine here:
            # no client can make progress while the broker is down anyway.
            kafka_broker.restart()
            async with p.transaction():
                await p.send(topic, b"after-restart")
            assert await read_until(c, lambda v: len(v) >= 1, timeout=30) == [b"after-restart"]
            await c.commit()

            # Crash (SIGKILL) + start: log recovery, same clients reconnect.
            kafka_broker.kill()
            kafka_broker.start()
            async with p.transaction():
                await p.send(topic, b"after-crash")
            assert await read_until(c, lambda v: len(v) >= 1, timeout=30) == [b"after-crash"]
            await c.commit()
            position = await c.position(tp)
        # 3 records + 3 commit markers: transaction control records take offsets too.
        assert position == 6
        assert await wait_committed(kafka_bootstrap, group, tp, position) == position
