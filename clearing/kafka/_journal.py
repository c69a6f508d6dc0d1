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

from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from operator import attrgetter
from typing import Final, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition

from clearing.errors import KafkaJournalError
from clearing.journal import GENESIS_HASH, FrameWindow, Record, chain_hash
from clearing.kafka._batch import decode_topic_message
from clearing.kafka._clients import journal_reader_consumer
from clearing.kafka._frames import RecordsWindow
from clearing.kafka._sync_reader import SyncReader
from clearing.kafka._topics import topic_partitions
from clearing.ops.config import Config

__all__ = ["JournalTail", "KafkaJournalError", "KafkaJournalReader"]

# Journal records are small and the topic is read sequentially; a fetch returns quickly
# once data is there, so this only bounds the wait at the very end of the log.
_FETCH_TIMEOUT_MS: Final = 500
# Tail search: read this many offsets back from the end first, then 8x more each round
# (aborted transactions and markers can leave long stretches without a committed record).
_TAIL_WINDOW_OFFSETS: Final = 256
# Records (whole messages) gathered into one frame window: enough that a window's setup
# is spread thin, few enough that the frames of one window stay a few MiB.
_WINDOW_RECORDS: Final = 4096
_HASH_BYTES: Final = len(GENESIS_HASH)
_seq_of = attrgetter("seq")
_chain_hash_of = attrgetter("chain_hash")


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
    ``hash_at`` and ``read`` can start there instead of at the beginning. ``on_records``
    is given the records of each message that ``read`` or ``frame_windows`` hands out,
    in order, before they are checked (recovery takes the input positions and the
    oracle ticks of the tail it replays from them).
    """

    # The daemon writes every input's outputs into its record (an empty one: none).
    all_outputs_recorded: Final = True

    def __init__(
        self,
        config: Config,
        *,
        topic: str | None = None,
        on_records: Callable[[list[Record]], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._on_records = on_records
        self.topic = topic or config.topics.journal
        self._tp = TopicPartition(self.topic, 0)
        self._tail: JournalTail | None = None
        self._anchors: dict[int, int] = {}  # seq -> offset
        self._rules: int | None = None  # of the first message read: every other agrees

    async def _connect(self) -> AIOKafkaConsumer:
        partitions = await topic_partitions(self._config, self.topic)
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
        for offset, records in self._scan_messages(start_offset, end_offset):
            for record in records:
                yield offset, record

    def _scan_messages(
        self, start_offset: int, end_offset: int
    ) -> Iterator[tuple[int, list[Record]]]:
        """(offset, records) of every committed message in [start_offset, end_offset)."""
        for offset, value, headers in self._fetch(start_offset, end_offset):
            yield offset, self._decode(offset, value, headers)

    def _fetch(
        self, start_offset: int, end_offset: int
    ) -> Iterator[tuple[int, bytes | None, Sequence[tuple[str, bytes]]]]:
        """(offset, value, headers) of every committed message in [start_offset, end_offset)."""
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
                yield message.offset, message.value, message.headers
            if self._run(consumer.position(self._tp)) >= end_offset:
                return

    def _decode(
        self, offset: int, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> list[Record]:
        records, rules = decode_topic_message(self.topic, offset, value, headers)
        if self._rules is None:
            self._rules = rules
        elif rules != self._rules:
            raise KafkaJournalError(
                f"journal topic {self.topic!r} offset {offset}: records rules version "
                f"{rules}, other records of the topic {self._rules}: one ledger runs one "
                f"version, so this topic holds records of another ledger"
            )
        # C-level passes over the message's records (a Python loop per record cost a
        # tenth of a cold start): every chain hash well formed, every seq anchored here.
        if not all(map(_HASH_BYTES.__eq__, map(len, map(_chain_hash_of, records)))):
            bad = next(i for i, r in enumerate(records) if len(r.chain_hash) != _HASH_BYTES)
            self._anchors.update(zip(map(_seq_of, records[:bad]), repeat(offset)))
            raise KafkaJournalError(
                f"journal topic {self.topic!r} offset {offset}: malformed chain hash "
                f"(seq {records[bad].seq})"
            )
        self._anchors.update(zip(map(_seq_of, records), repeat(offset)))
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
        start = self._start(from_seq, until_seq)
        if start is None:
            return
        stop, start_offset, prev = start
        seq = from_seq
        for offset, records in self._messages(from_seq, stop, start_offset):
            for record in records:
                prev = self._checked(offset, record, seq, prev)
                yield record
                seq += 1

    def frame_windows(
        self, from_seq: int = 1, until_seq: int | None = None
    ) -> Iterator[FrameWindow]:
        """The records ``read`` yields, as windows of journal frames (whole messages, at
        least ``_WINDOW_RECORDS`` records a window but the last) for an engine that
        verifies frames itself; a frame it refuses is checked as ``read`` checks it,
        with the same error. A problem after a window's records (a message that is not
        a journal record, the topic's end) is raised once that window is handed out."""
        start = self._start(from_seq, until_seq)
        if start is None:
            return
        stop, start_offset, prev = start
        window = _Window(self, from_seq, prev, stop)
        try:
            for offset, records in self._messages(from_seq, stop, start_offset):
                window.add(offset, records)
                if len(window.records) >= _WINDOW_RECORDS:
                    framed = window.framed()
                    yield framed
                    window = _Window(self, framed.seq, framed.prev_hash, stop)
        except Exception:
            if window.records:
                yield window.framed()  # the records before the problem are applied first
            raise
        if window.records:
            yield window.framed()

    def _start(self, from_seq: int, until_seq: int | None) -> tuple[int, int, bytes] | None:
        """(last seq to read, offset to start at, chain hash before ``from_seq``); None
        when there is nothing to read."""
        tail = self.tail()
        stop = self.last_seq if until_seq is None else min(until_seq, self.last_seq)
        if from_seq > stop:
            return None
        if from_seq == 1:
            return stop, tail.begin_offset, GENESIS_HASH
        prev_record = self.record_at(from_seq - 1)
        return stop, self._anchors[from_seq - 1], prev_record.chain_hash

    def _messages(
        self, from_seq: int, stop: int, start_offset: int
    ) -> Iterator[tuple[int, list[Record]]]:
        """(offset, records) of the messages from ``start_offset`` on, as many records as
        ``from_seq..stop`` counts (not checked here: the callers check each one's seq
        and chain), less the records before ``from_seq`` in the anchor's own message;
        KafkaJournalError when the topic ends before that many."""
        wanted = stop - from_seq + 1
        on_records = self._on_records
        for offset, records in self._scan_messages(start_offset, self.tail().end_offset):
            if from_seq > 1 and offset == start_offset:
                # The anchor's own message: already verified, not asked for.
                records = [record for record in records if record.seq >= from_seq]
            last = len(records) >= wanted
            if last:
                records = records[:wanted]
            if on_records is not None:
                on_records(records)
            yield offset, records
            if last:
                return
            wanted -= len(records)
        raise KafkaJournalError(
            f"journal topic {self.topic!r} ended at seq {stop - wanted}, before seq {stop}"
        )

    def _checked(self, offset: int, record: Record, seq: int, prev_hash: bytes) -> bytes:
        """``record``'s chain hash once it is checked to be record ``seq`` chained to
        ``prev_hash`` (read from the message at ``offset``); KafkaJournalError if not."""
        if record.seq != seq:
            raise KafkaJournalError(self._sequence_problem(seq, record.seq, offset))
        digest = chain_hash(
            prev_hash, record.seq, record.source.encode(), record.payload, record.outputs
        )
        if digest != record.chain_hash:
            raise KafkaJournalError(
                f"journal topic {self.topic!r} offset {offset}: hash chain break at seq "
                f"{record.seq} (the record was altered or does not belong to this log)"
            )
        return digest

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


class _Window:
    """The records of consecutive journal messages gathered for one frame window, with
    where each message's records start (to name a refused record's message)."""

    __slots__ = ("first_seq", "offsets", "prev_hash", "reader", "records", "starts", "stop")

    def __init__(
        self, reader: KafkaJournalReader, first_seq: int, prev_hash: bytes, stop: int
    ) -> None:
        self.reader = reader
        self.first_seq, self.prev_hash, self.stop = first_seq, prev_hash, stop
        self.records: list[Record] = []
        self.starts: list[int] = []  # index of each message's first record
        self.offsets: list[int] = []  # each message's offset

    def add(self, offset: int, records: list[Record]) -> None:
        self.starts.append(len(self.records))
        self.offsets.append(offset)
        self.records += records

    def framed(self) -> RecordsWindow:
        last = self.first_seq + len(self.records) - 1
        where = f"journal topic {self.reader.topic!r} seqs {self.first_seq}..{last}"
        return RecordsWindow(
            where, self.records, self.first_seq, self.prev_hash, self.stop, self._check
        )

    def _check(self, index: int, record: Record, seq: int, prev_hash: bytes) -> bytes:
        offset = self.offsets[bisect_right(self.starts, index) - 1]
        return self.reader._checked(offset, record, seq, prev_hash)
