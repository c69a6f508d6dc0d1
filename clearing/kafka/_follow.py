"""The hot standby's half: follow the journal topic with a warm engine.

A standby starts like a restart (``recover_from_kafka``: local snapshot, else the newest
complete one in the snapshot topic, then the journal), then keeps reading the journal
topic (read_committed, so only committed batches) and applies every record to its own
engine, checking what the active recorded: the seq follows, the chain hash recomputes,
and the re-derived outputs equal the recorded ones byte for byte. It never writes. When
it is elected it is at most the records committed since its last fetch behind, so taking
over costs a catch-up of a few batches instead of a recovery.

The records are applied by the one replay loop (``clearing.sequencer.replay``, as in
recovery and the audit) over the fetched records (``FetchedJournal``): on the native core
as frame windows, checked and applied in one call per batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Final, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from clearing.engine import EngineCore
from clearing.errors import RulesVersionMismatch
from clearing.journal import Record
from clearing.kafka._batch import HEADER_BLOCK, decode_topic_message
from clearing.kafka._clients import journal_reader_consumer, stop_consumer
from clearing.kafka._fetched import FetchedJournal
from clearing.kafka._recovery import KafkaRecovery, Positions, input_positions
from clearing.ops.config import Config
from clearing.sequencer import JournalChain, replay

__all__ = ["JournalFollower"]

log = logging.getLogger("clearing.kafka.standby")

_FETCH_MS: Final = 100
# Records applied between two yields to the event loop (heartbeats, /metrics); also the
# records one replay call takes at least (fewer when the fetch holds fewer), so that
# the call's own cost is spread over many records when the active writes small blocks.
_YIELD_RECORDS: Final = 500


class JournalMessage(Protocol):
    """What the follower reads of a fetched journal message (aiokafka's
    ``ConsumerRecord`` has these fields, and more)."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class JournalFollower:
    """Applies the journal topic's committed records to ``recovery``'s engine."""

    def __init__(self, config: Config, recovery: KafkaRecovery) -> None:
        self._config = config
        self._tp = TopicPartition(config.topics.journal, 0)
        self.engine: EngineCore = recovery.engine
        self.chain = JournalChain(recovery.chain.last_seq, recovery.chain.head_hash)
        self.journal_offset = recovery.journal_offset  # message holding the last record
        self.positions: Positions = dict(recovery.positions)
        self.base = recovery
        self.applied = 0
        self.last_record_ts_ms = 0  # Kafka timestamp of the newest applied message
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = journal_reader_consumer(self._config)
        await consumer.start()
        consumer.assign([self._tp])
        # The message holding the last applied record may hold later ones (a block):
        # start there and skip what is applied already.
        consumer.seek(self._tp, max(0, self.journal_offset))
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await stop_consumer(consumer)

    async def end_offset(self) -> int:
        """The journal's last stable offset (read_committed reads stop there)."""
        assert self._consumer is not None
        return int((await self._consumer.end_offsets([self._tp]))[self._tp])

    async def position(self) -> int:
        assert self._consumer is not None
        return int(await self._consumer.position(self._tp))

    async def poll(self, wait_ms: int = _FETCH_MS) -> int:
        """Fetch and apply what is committed; returns the number of records applied."""
        assert self._consumer is not None
        batches = await self._consumer.getmany(self._tp, timeout_ms=wait_ms)
        applied = 0
        group: list[JournalMessage] = []
        size = 0
        for message in batches.get(self._tp, ()):
            group.append(message)
            size += _records_in(message)
            if size >= _YIELD_RECORDS:
                applied += self.apply_messages(group)
                group, size = [], 0
                await asyncio.sleep(0)
        if group:
            applied += self.apply_messages(group)
        return applied

    async def catch_up(self) -> None:
        """Apply everything committed up to the journal's current end."""
        end = await self.end_offset()
        while await self.position() < end:
            await self.poll()

    def _decode(
        self, offset: int, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> list[Record]:
        records, rules = decode_topic_message(self._tp.topic, offset, value, headers)
        if rules != self.engine.rules_version:
            # Only when this standby recovered from an empty topic under another
            # engine.rules_version than the active's: a restart takes the topic's version.
            raise RulesVersionMismatch(
                f"standby: journal topic {self._tp.topic!r} offset {offset} records rules "
                f"version {rules}, this standby started a version {self.engine.rules_version} "
                f"ledger on the empty topic: exiting so that a restart follows the topic's",
            )
        return records

    def apply_messages(self, messages: Sequence[JournalMessage]) -> int:
        """Apply the records of consecutive journal messages after the last applied one
        (a message may repeat records already applied: the first one after a restart);
        returns how many were applied. A record that does not follow or does not chain
        raises before it is applied, one that re-derives other outputs than it recorded
        once it is (the standby stops either way: exit 4, the record's seq named)."""
        fresh: list[Record] = []
        newest: JournalMessage | None = None
        last_seq = self.chain.last_seq
        for message in messages:
            records = self._decode(message.offset, message.value, message.headers)
            new = [r for r in records if r.seq > last_seq]
            if new:
                fresh += new
                newest, last_seq = message, new[-1].seq
        if newest is None:
            return 0
        chain, engine = self.chain, self.engine
        journal = FetchedJournal(fresh, chain.last_seq, chain.head_hash, engine.rules_version)
        replay(journal, engine)
        chain.last_seq, chain.head_hash = journal.last_seq, journal.head_hash
        self.positions.update(input_positions(fresh))
        self.journal_offset, self.last_record_ts_ms = newest.offset, newest.timestamp
        self.applied += len(fresh)
        return len(fresh)

    def lag_seconds(self, now_ms: int | None = None) -> float:
        """Age of the newest applied journal message (0 before the first one)."""
        if not self.last_record_ts_ms:
            return 0.0
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0.0, (now_ms - self.last_record_ts_ms) / 1000)

    def as_recovery(self, started: float) -> KafkaRecovery:
        """The followed state, in the form the active path adopts after a recovery."""
        base = self.base
        return KafkaRecovery(
            engine=self.engine,
            chain=JournalChain(self.chain.last_seq, self.chain.head_hash),
            journal_offset=self.journal_offset,
            positions=dict(self.positions),
            snapshot_path=base.snapshot_path,
            snapshot_seq=base.snapshot_seq,
            replayed=base.replayed + self.applied,
            seconds=time.perf_counter() - started,
            topic_manifests=base.topic_manifests,
            restored_seq=base.restored_seq,
        )


def _records_in(message: JournalMessage) -> int:
    """The records a journal message says it holds (a block's header; else one)."""
    for name, value in message.headers:
        if name == HEADER_BLOCK:
            return int(value) if value.isdigit() else 1
    return 1
