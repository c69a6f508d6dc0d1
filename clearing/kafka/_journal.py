"""The journal as a Kafka topic: reading it back, verified, for recovery and audit.

The topic has one partition; each committed message is a block of consecutive
``Record`` s (or, written before blocks, a single one; see ``_batch``), written by the
daemon inside the same transaction as the records' outputs and input offsets. Offsets are
not seqs: a message holds many seqs, and transaction markers and aborted batches take
offsets too, so seq -> offset (of the message holding it) is learnt from snapshots (their
metadata stores the offset of their seq) and from reading.

``KafkaJournalReader`` is the read half of ``clearing.journal.Journal`` (``last_seq``,
``head_hash``, ``read``, ``last_record``, ``close``) plus ``hash_at``: everything
``clearing.sequencer.recover`` needs. The write half is the daemon's transaction
(``JournalChain`` computes the chain; Kafka commits it), so ``append``/``sync`` are not
offered. The reader is synchronous, over a private event loop, so that ``recover`` (plain
synchronous code) can drive it from a worker thread while the daemon's own loop keeps
serving health checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from clearing.errors import KafkaJournalError
from clearing.journal import GENESIS_HASH, Record, chain_hash
from clearing.kafka._batch import decode_journal_message, journal_rules_version
from clearing.kafka._clients import admin_client, journal_reader_consumer
from clearing.kafka._sync_reader import SyncReader
from clearing.kafka._topics import describe_partitions
from clearing.ops.config import Config

__all__ = ["JournalTail", "KafkaJournalError", "KafkaJournalReader"]

# Journal records are small and the topic is read sequentially; a fetch returns quickly
# once data is there, so this only bounds the wait at the very end of the log.
_FETCH_TIMEOUT_MS: Final = 500
# Tail search: read this many offsets back from the end first, then 8x more each round
# (aborted transactions and markers can leave long stretches without a committed record).
_TAIL_WINDOW_OFFSETS: Final = 256


class JournalTail(NamedTuple):
    begin_offset: int  # log start offset (above 0 once records were deleted)
    end_offset: int  # last stable offset: read_committed reads stop here
    last: Record | None  # newest committed record (chain hash as stored)
    last_offset: int  # its offset; -1 when the journal is empty
    # The rules version the topic's records carry (header clearing.rules, absent = 1);
    # None when the journal is empty (a new ledger: its first writer decides).
    rules_version: int | None = None


class KafkaJournalReader(SyncReader):
    """Verified, read_committed reading of the journal topic (partition 0).

    Use from a thread without a running event loop; ``open()`` first, ``close()`` after.
    ``anchor(seq, offset)`` registers a known position (from a snapshot's metadata) so
    ``hash_at`` and ``read`` can start there instead of at the beginning.
    """

    def __init__(self, config: Config, *, topic: str | None = None) -> None:
        super().__init__(config)
        self.topic = topic or config.topics.journal
        self._tp = TopicPartition(self.topic, 0)
        self._tail: JournalTail | None = None
        self._anchors: dict[int, int] = {}  # seq -> offset
        self._rules: int | None = None  # of the first message read: every other agrees

    async def _connect(self) -> AIOKafkaConsumer:
        admin = admin_client(self._config)
        await admin.start()
        try:
            partitions = (await describe_partitions(admin, [self.topic])).get(self.topic)
        finally:
            await admin.close()
        if partitions is None:
            raise KafkaJournalError(
                f"journal topic {self.topic!r} does not exist. Create the topics with "
                f"`clearing topics create --config FILE`; if it existed before, it was "
                f"deleted and the ledger cannot be recovered from it."
            )
        if partitions != 1:
            raise KafkaJournalError(
                f"journal topic {self.topic!r} has {partitions} partitions; it must have "
                f"exactly one (the journal is a single ordered log)"
            )
        consumer = journal_reader_consumer(self._config)
        await consumer.start()
        consumer.assign([self._tp])
        return consumer

    # -- positions -----------------------------------------------------------------------

    def anchor(self, seq: int, offset: int) -> None:
        """Remember that record ``seq`` is at ``offset`` (checked when used)."""
        self._anchors[seq] = offset

    def offset_of(self, seq: int) -> int | None:
        return self._anchors.get(seq)

    def _bounds(self) -> tuple[int, int]:
        consumer = self._consumer
        assert consumer is not None
        begin = self._run(consumer.beginning_offsets([self._tp]))[self._tp]
        # With isolation_level=read_committed this is the last stable offset.
        end = self._run(consumer.end_offsets([self._tp]))[self._tp]
        return int(begin), int(end)

    def _scan(self, start_offset: int, end_offset: int) -> Iterator[tuple[int, Record]]:
        """(offset, record) of every committed record in [start_offset, end_offset)."""
        consumer = self._consumer
        assert consumer is not None
        if start_offset >= end_offset:
            return
        consumer.seek(self._tp, start_offset)
        while True:
            batches = self._run(consumer.getmany(self._tp, timeout_ms=_FETCH_TIMEOUT_MS))
            for message in batches.get(self._tp, ()):
                if message.offset >= end_offset:
                    return
                for record in self._decode(message.offset, message.value, message.headers):
                    yield message.offset, record
            if self._run(consumer.position(self._tp)) >= end_offset:
                return

    def _decode(
        self, offset: int, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> list[Record]:
        try:
            records = decode_journal_message(value, headers)
            rules = journal_rules_version(headers)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise KafkaJournalError(
                f"journal topic {self.topic!r} offset {offset}: not a journal record ({exc})"
            ) from None
        if self._rules is None:
            self._rules = rules
        elif rules != self._rules:
            raise KafkaJournalError(
                f"journal topic {self.topic!r} offset {offset}: records rules version "
                f"{rules}, other records of the topic {self._rules}: one ledger runs one "
                f"version, so this topic holds records of another ledger"
            )
        anchors = self._anchors
        for record in records:
            if len(record.chain_hash) != len(GENESIS_HASH):
                raise KafkaJournalError(
                    f"journal topic {self.topic!r} offset {offset}: malformed chain hash "
                    f"(seq {record.seq})"
                )
            anchors[record.seq] = offset
        return records

    def tail(self, refresh: bool = False) -> JournalTail:
        """Where the journal ends: its newest committed record (searched back from the end)."""
        if self._tail is not None and not refresh:
            return self._tail
        begin, end = self._bounds()
        window = _TAIL_WINDOW_OFFSETS
        last: tuple[int, Record] | None = None
        while True:
            start = max(begin, end - window)
            for item in self._scan(start, end):
                last = item
            if last is not None or start == begin:
                break
            window *= 8
        if last is None:
            self._tail = JournalTail(begin, end, None, -1)
        else:
            self._tail = JournalTail(begin, end, last[1], last[0], self._rules)
        return self._tail

    # -- the read half of clearing.journal.Journal ----------------------------------------

    @property
    def last_seq(self) -> int:
        last = self.tail().last
        return 0 if last is None else last.seq

    @property
    def rules_version(self) -> int:
        """The rules version the topic's records carry (1 for an empty topic; a new
        ledger's version comes from the daemon's configuration, not from here)."""
        recorded = self.tail().rules_version
        return 1 if recorded is None else recorded

    @property
    def head_hash(self) -> bytes:
        last = self.tail().last
        return GENESIS_HASH if last is None else last.chain_hash

    def last_record(self) -> Record | None:
        return self.tail().last

    def record_at(self, seq: int) -> Record:
        """Record ``seq`` via its anchor; raises ValueError if its offset is unknown."""
        tail = self.tail()
        if tail.last is not None and seq == tail.last.seq:
            return tail.last
        offset = self._anchors.get(seq)
        if offset is None:
            raise ValueError(f"offset of journal seq {seq} is not known")
        seen: list[int] = []
        for found_offset, record in self._scan(offset, tail.end_offset):
            if found_offset != offset:
                break
            if record.seq == seq:
                return record
            seen.append(record.seq)
        else:
            if not seen:
                raise ValueError(f"journal offset {offset} (seq {seq}) is past the journal's end")
        held = f"seqs {seen[0]}..{seen[-1]}" if seen else "no record"
        raise ValueError(f"journal offset {offset} holds {held}, not seq {seq}")

    def hash_at(self, seq: int) -> bytes:
        """Chain hash of record ``seq`` as stored (``GENESIS_HASH`` for 0)."""
        if seq == 0:
            return GENESIS_HASH
        return self.record_at(seq).chain_hash

    def read(self, from_seq: int = 1, until_seq: int | None = None) -> Iterator[Record]:
        """Verified records ``from_seq..until_seq``: seqs consecutive, chain recomputed.

        Starts at the beginning of the topic for ``from_seq == 1``, else at the message
        holding the anchored record ``from_seq - 1`` (whose stored hash starts the chain;
        the records before ``from_seq`` in that message are skipped).
        """
        tail = self.tail()
        stop = self.last_seq if until_seq is None else min(until_seq, self.last_seq)
        if from_seq > stop:
            return
        if from_seq == 1:
            start_offset, prev = tail.begin_offset, GENESIS_HASH
        else:
            prev_record = self.record_at(from_seq - 1)
            start_offset, prev = self._anchors[from_seq - 1], prev_record.chain_hash
        expected = from_seq
        for offset, record in self._scan(start_offset, tail.end_offset):
            if from_seq > 1 and offset == start_offset and record.seq < from_seq:
                continue  # the anchor's own message: already verified, not asked for
            if record.seq != expected:
                raise KafkaJournalError(self._sequence_problem(expected, record.seq, offset))
            digest = chain_hash(
                prev, record.seq, record.source.encode(), record.payload, record.outputs
            )
            if digest != record.chain_hash:
                raise KafkaJournalError(
                    f"journal topic {self.topic!r} offset {offset}: hash chain break at seq "
                    f"{record.seq} (the record was altered or does not belong to this log)"
                )
            yield record
            prev = digest
            if expected == stop:
                return
            expected += 1
        raise KafkaJournalError(
            f"journal topic {self.topic!r} ended at seq {expected - 1}, before seq {stop}"
        )

    def _sequence_problem(self, expected: int, found: int, offset: int) -> str:
        where = f"journal topic {self.topic!r} offset {offset}"
        if expected == 1:
            return (
                f"{where}: the first record has seq {found}, not 1: the topic is truncated "
                f"(retention or deleted records). Restore it, or provide a snapshot at or "
                f"after seq {found - 1} in the snapshot directory."
            )
        if found > expected:
            return f"{where}: seq {found} where {expected} was expected: records are missing"
        return f"{where}: seq {found} where {expected} was expected: records are duplicated"
