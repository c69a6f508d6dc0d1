"""The hot standby's half: follow the journal topic with a warm engine.

A standby starts like a restart (``recover_from_kafka``: local snapshot, else the newest
complete one in the snapshot topic, then the journal), then keeps reading the journal
topic (read_committed, so only committed batches) and applies every record to its own
engine, checking what the active recorded: the seq follows, the chain hash recomputes,
and the re-derived outputs equal the recorded ones byte for byte. It never writes. When
it is elected it is at most the records committed since its last fetch behind, so taking
over costs a catch-up of a few batches instead of a recovery.

``JournalFollower.apply`` is the one place records are applied here (the replay loop's
job; kept small so that it can move onto ``clearing.sequencer``'s one replay loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Final

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from clearing.engine import EngineCore
from clearing.errors import KafkaJournalError, OutputDivergence
from clearing.journal import Record, chain_hash
from clearing.kafka._batch import decode_journal_message, journal_rules_version, parse_source
from clearing.kafka._clients import journal_reader_consumer, stop_consumer
from clearing.kafka._exits import EXIT_FAILURE, DaemonExit
from clearing.kafka._recovery import KafkaRecovery, Positions
from clearing.ops.config import Config
from clearing.sequencer import JournalChain, join_outputs

__all__ = ["JournalFollower"]

log = logging.getLogger("clearing.kafka.standby")

_FETCH_MS: Final = 100
# Records applied between two yields to the event loop (heartbeats, /metrics).
_YIELD_RECORDS: Final = 500


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
        for message in batches.get(self._tp, ()):
            records = self._decode(message.offset, message.value, message.headers)
            fresh = [r for r in records if r.seq > self.chain.last_seq]
            if fresh:
                self.apply(fresh)
                self.journal_offset = message.offset
                self.last_record_ts_ms = message.timestamp
                applied += len(fresh)
                if applied % _YIELD_RECORDS < len(fresh):
                    await asyncio.sleep(0)
        return applied

    async def catch_up(self) -> None:
        """Apply everything committed up to the journal's current end."""
        end = await self.end_offset()
        while await self.position() < end:
            await self.poll()

    def _decode(
        self, offset: int, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> list[Record]:
        try:
            records = decode_journal_message(value, headers)
            rules = journal_rules_version(headers)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise KafkaJournalError(
                f"journal topic {self._tp.topic!r} offset {offset}: not a journal record ({exc})"
            ) from None
        if rules != self.engine.rules_version:
            # Only when this standby recovered from an empty topic under another
            # engine.rules_version than the active's: a restart takes the topic's version.
            raise DaemonExit(
                EXIT_FAILURE,
                f"standby: journal topic {self._tp.topic!r} offset {offset} records rules "
                f"version {rules}, this standby started a version {self.engine.rules_version} "
                f"ledger on the empty topic: exiting so that a restart follows the topic's",
            )
        return records

    def apply(self, records: list[Record]) -> None:
        """Apply consecutive records, checking seq, chain hash and recorded outputs."""
        engine, chain = self.engine, self.chain
        for record in records:
            if record.seq != chain.last_seq + 1:
                raise KafkaJournalError(
                    f"journal seq {record.seq} where {chain.last_seq + 1} was expected"
                )
            digest = chain_hash(
                chain.head_hash, record.seq, record.source.encode(), record.payload, record.outputs
            )
            if digest != record.chain_hash:
                raise KafkaJournalError(f"hash chain break at journal seq {record.seq}")
            derived = join_outputs(engine.apply_encoded(record.payload))
            if derived != record.outputs:
                raise OutputDivergence(record.seq, record.outputs, derived)
            chain.last_seq, chain.head_hash = record.seq, digest
            where = parse_source(record.source)
            if where is not None:
                self.positions[where[0], where[1]] = where[2] + 1
        self.applied += len(records)

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
