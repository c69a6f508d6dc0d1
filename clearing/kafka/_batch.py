"""Deciding one batch: order the consumed records, run them through the engine and build
every message of the batch's Kafka transaction. Pure: no I/O, no clock.

Message layout (the contract with downstream consumers):

* journal topic, partition 0: one message per block of consecutive records. Key = the
  block's first seq (ASCII decimal); header ``clearing.block`` = the number of records
  (ASCII decimal); value = a MessagePack array of ``Record`` s, each
  ``[seq, source, payload, outputs, chain_hash]`` exactly as in a local journal frame body
  (``clearing.journal._format``); ``source`` = ``kafka:<topic>:<partition>:<offset>``,
  ``outputs`` = the input's output events as JSON lines. A block holds records up to
  ``JOURNAL_BLOCK_BYTES`` of payload and outputs (a larger record is a block of its own).
  Messages without the header are single records, the format before blocks (read still).
  Header ``clearing.rules`` = the ledger's clearing rules version (ASCII decimal, SPEC §9)
  on every message of a ledger under version 2 or later; a message without it is under
  version 1, so version-1 ledgers write exactly the messages they wrote before versions
  existed. Every message of one journal topic carries the same version.
* events topic: value = the exact ``encode_output`` bytes of one output event; key = its
  ``account`` (``market`` for ``oracle_held``; a reject that names neither is keyed by its
  source ``<topic>:<partition>``), so one account's events stay in one partition, in order;
  headers ``clearing.seq`` and ``clearing.index`` (0-based position among the seq's
  outputs) restore the global order across partitions: sort by (seq, index).
* DLQ topic: value = the rejected input's raw bytes, unchanged (an input without a value
  stays without one); key = its original key;
  headers ``clearing.source.topic|partition|offset``, ``clearing.reason`` (a SPEC reject
  code, or ``oversized``), ``clearing.detail``, ``clearing.seq`` (absent for oversized
  inputs, which are never sequenced) and ``clearing.ledger``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, NamedTuple, Protocol

import msgspec

from clearing.engine import EngineCore, OutputEvent
from clearing.engine.events import OracleHeld, Reject, decode_output
from clearing.engine.rules_v2 import RULES_VERSIONS
from clearing.errors import KafkaJournalError
from clearing.journal import Record
from clearing.sequencer import JournalChain, Sequencer, encode_record

__all__ = [
    "HEADER_BLOCK",
    "HEADER_INDEX",
    "HEADER_RULES",
    "HEADER_SEQ",
    "JOURNAL_BLOCK_BYTES",
    "OVERSIZED",
    "BatchPlan",
    "BatchPlanner",
    "Consumed",
    "InputBuffer",
    "InputRecord",
    "JournalChain",
    "OutMessage",
    "decode_journal_message",
    "decode_journal_value",
    "decode_topic_message",
    "encode_journal_block",
    "encode_journal_value",
    "journal_rules_version",
    "order_records",
    "parse_source",
    "plan_batch",
    "source_of",
]

HEADER_SEQ: Final = "clearing.seq"
HEADER_BLOCK: Final = "clearing.block"
HEADER_INDEX: Final = "clearing.index"
HEADER_RULES: Final = "clearing.rules"
HEADER_LEDGER: Final = "clearing.ledger"
HEADER_SOURCE_TOPIC: Final = "clearing.source.topic"
HEADER_SOURCE_PARTITION: Final = "clearing.source.partition"
HEADER_SOURCE_OFFSET: Final = "clearing.source.offset"
HEADER_REASON: Final = "clearing.reason"
HEADER_DETAIL: Final = "clearing.detail"
OVERSIZED: Final = "oversized"
# Header values are for people and routing; the raw input is the record's value.
_DETAIL_MAX_CHARS: Final = 500

# One journal message per this many bytes of records: one send() per block instead of
# one per input (the per-message cost of the producer, not the bytes, set the pace), and
# usually one per batch: aiokafka has one produce request in flight per broker, so each
# further block of a batch cost a round trip more. Capped by the daemon at
# limits.max_journal_record_bytes, which sizes the journal topic's max.message.bytes.
JOURNAL_BLOCK_BYTES: Final = 4 * 1024 * 1024

_record_decoder = msgspec.msgpack.Decoder(Record)
_block_decoder = msgspec.msgpack.Decoder(list[Record])


def encode_journal_value(record: Record) -> bytes:
    """A single-record journal value (the format before blocks; see ``encode_journal_block``)."""
    return encode_record(record)


def decode_journal_value(value: bytes) -> Record:
    """Raises ``msgspec.DecodeError``/``ValidationError`` on bytes that are not a Record."""
    return _record_decoder.decode(value)


def encode_journal_block(
    topic: str, records: Sequence[Record], rules_version: int = 1
) -> OutMessage:
    """The journal message of ``records`` (consecutive seqs, at least one)."""
    return _block_message(topic, records[0].seq, [encode_record(r) for r in records], rules_version)


def journal_rules_version(headers: Sequence[tuple[str, bytes]] | None) -> int:
    """The rules version a journal message records (1 without the header); ValueError
    on a header that is not a version number."""
    for name, value in headers or ():
        if name == HEADER_RULES:
            if not (value and value.isdigit() and len(value) <= 3 and int(value) >= 1):
                raise ValueError(f"header {HEADER_RULES} is {value!r}, not a rules version")
            if int(value) not in RULES_VERSIONS:
                raise ValueError(
                    f"rules version {int(value)} (header {HEADER_RULES}) is not one this "
                    f"build implements ({', '.join(map(str, RULES_VERSIONS))}): upgrade"
                )
            return int(value)
    return 1


def _block_message(
    topic: str, first_seq: int, encoded: Sequence[bytes], rules_version: int = 1
) -> OutMessage:
    """A block from records already encoded: a MessagePack array is its header followed by
    its items, so this is byte for byte ``msgspec.msgpack.encode(list_of_records)``."""
    n = len(encoded)
    if n < 16:
        header = bytes((0x90 | n,))
    elif n <= 0xFFFF:
        header = b"\xdc" + n.to_bytes(2, "big")
    else:
        header = b"\xdd" + n.to_bytes(4, "big")
    return OutMessage(
        topic,
        0,
        str(first_seq).encode(),
        header + b"".join(encoded),
        _journal_headers(n, rules_version),
    )


def _journal_headers(records: int, rules_version: int) -> list[tuple[str, bytes]]:
    headers = [(HEADER_BLOCK, str(records).encode())]
    if rules_version != 1:  # version 1 writes no header: its messages stay as they were
        headers.append((HEADER_RULES, str(rules_version).encode()))
    return headers


def _blocks(
    topic: str,
    first_seq: int,
    encoded: Sequence[bytes],
    max_bytes: int | None = None,
    rules_version: int = 1,
) -> list[OutMessage]:
    """Consecutive encoded records (seqs from ``first_seq``) cut into blocks of at most
    ``max_bytes`` (``JOURNAL_BLOCK_BYTES`` if None or larger; a larger record is a block
    of its own)."""
    limit = JOURNAL_BLOCK_BYTES if max_bytes is None else min(max_bytes, JOURNAL_BLOCK_BYTES)
    messages: list[OutMessage] = []
    begin = size = 0
    for i, record in enumerate(encoded):
        n = len(record)
        if i > begin and size + n > limit:
            messages.append(
                _block_message(topic, first_seq + begin, encoded[begin:i], rules_version)
            )
            begin, size = i, 0
        size += n
    if encoded:
        messages.append(_block_message(topic, first_seq + begin, encoded[begin:], rules_version))
    return messages


def decode_topic_message(
    topic: str, offset: int, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None
) -> tuple[list[Record], int]:
    """The records of the journal message at ``offset`` of ``topic`` and the rules
    version it records; KafkaJournalError naming the place if it is not one."""
    try:
        return decode_journal_message(value, headers), journal_rules_version(headers)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise KafkaJournalError(
            f"journal topic {topic!r} offset {offset}: not a journal record ({exc})"
        ) from None


def decode_journal_message(
    value: bytes | None, headers: Sequence[tuple[str, bytes]] | None
) -> list[Record]:
    """The records of one journal message, block or single record.

    Raises ``msgspec.DecodeError``/``ValidationError`` on bytes that are not journal
    records, ``ValueError`` when a block's record count differs from its header.
    """
    count: bytes | None = None
    for name, header_value in headers or ():
        if name == HEADER_BLOCK:
            count = header_value
    if count is None:
        return [_record_decoder.decode(value or b"")]
    records = _block_decoder.decode(value or b"")
    if not count.isdigit() or int(count) != len(records) or not records:
        raise ValueError(f"block header says {count!r} records, the value holds {len(records)}")
    return records


class InputRecord(NamedTuple):
    """A consumed input record, reduced to what sequencing needs. aiokafka's
    ``ConsumerRecord`` has the same fields (and more), so the daemon passes those as
    they come instead of copying each."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch (Kafka's record timestamp)
    key: bytes | None
    value: bytes | None


class Consumed(Protocol):
    """What sequencing reads of a consumed record: ``InputRecord`` or aiokafka's
    ``ConsumerRecord``."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class OutMessage(NamedTuple):
    topic: str
    partition: int | None  # None: the default (murmur2-of-key) partitioner decides
    key: bytes | None
    value: bytes | None  # None only for a DLQ copy of an input that had no value
    headers: list[tuple[str, bytes]]


def source_of(topic: str, partition: int, offset: int) -> str:
    return f"{_source_prefix(topic, partition)}{offset}"


def _source_prefix(topic: str, partition: int) -> str:
    """What every journal source of one input partition starts with."""
    return f"kafka:{topic}:{partition}:"


def parse_source(source: str) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of a ``kafka:`` journal source; None for other sources."""
    if not source.startswith("kafka:"):
        return None
    # Topic names cannot contain ':', so the split is unambiguous.
    parts = source[len("kafka:") :].split(":")
    if len(parts) != 3:
        return None
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        return None


def order_records(
    batch: Mapping[tuple[str, int], Sequence[Consumed]], topic_rank: Mapping[str, int]
) -> list[Consumed]:
    """The batch's records in sequencing order.

    Each partition keeps its offset order; partitions are merged by (timestamp, topic
    rank, partition), so inputs produced close together on different topics interleave
    roughly as they were produced and ties break the same way every time.
    """
    return list(_merged(batch, topic_rank))


def _merged(
    batch: Mapping[tuple[str, int], Sequence[Consumed]], topic_rank: Mapping[str, int]
) -> Iterator[Consumed]:
    """``order_records``, lazily: sort keys are made only as far as the merge is read."""
    parts = [(tp, records) for tp, records in batch.items() if records]
    if len(parts) == 1:
        return iter(parts[0][1])
    streams = [_keyed(records, topic_rank[tp[0]]) for tp, records in parts]
    return (key[4] for key in heapq.merge(*streams))


def _keyed(records: Sequence[Consumed], rank: int) -> Iterator[tuple[int, int, int, int, Consumed]]:
    # Keys as plain tuples (compared in C) rather than a key function called per step;
    # the offset makes every key unique, so records themselves are never compared.
    for r in records:
        yield (r.timestamp, rank, r.partition, r.offset, r)


class InputBuffer:
    """Consumed input records not planned yet, per partition, in offset order.

    The daemon drains everything aiokafka has fetched into this buffer and plans batches
    from it. The point is read-ahead: aiokafka sends the next fetch to a broker only when
    none of that broker's partitions has unconsumed records left, so taking a batch
    straight from aiokafka (``getmany(max_records=...)``) left the rest of the fetch
    there, and every fetch round trip became a stall of the whole pipeline. Drained, the
    next fetch is in flight while the current records are planned. The buffer is bounded
    by its caller: it asks for more only while it holds fewer than a batch.
    """

    __slots__ = ("_parts", "_rank", "count")

    def __init__(self, topic_rank: Mapping[str, int]) -> None:
        self._rank = topic_rank
        # (topic, partition) -> (records, index of the first one not taken yet)
        self._parts: dict[tuple[str, int], tuple[Sequence[Consumed], int]] = {}
        self.count = 0

    def add(self, fetched: Mapping[tuple[str, int], Sequence[Consumed]]) -> None:
        """Append records fetched after those held (each partition's, in offset order)."""
        parts = self._parts
        for tp, records in fetched.items():
            if not records:
                continue
            self.count += len(records)
            held = parts.get(tp)
            if held is not None:
                left, start = held
                records = [*left[start:], *records]
            parts[tp] = (records, 0)

    def take(self, max_records: int, max_bytes: int) -> list[Consumed]:
        """The next batch in sequencing order (``order_records``): at most
        ``max_records`` records and ``max_bytes`` bytes of values, but at least one record
        when any is held. What is not taken stays, in order, for the next batch."""
        parts = self._parts
        if not parts:
            return []
        # No partition can give more than a batch, so the merge looks at no more.
        window = {tp: rs[start : start + max_records] for tp, (rs, start) in parts.items()}
        batch: list[Consumed] = []
        size_bytes = 0
        for record in _merged(window, self._rank):
            value = record.value
            n = len(value) if value is not None else 0
            if batch and (len(batch) == max_records or size_bytes + n > max_bytes):
                break
            batch.append(record)
            size_bytes += n
        if len(window) == 1:
            per_tp = dict.fromkeys(window, len(batch))
        else:
            per_tp = {}
            for record in batch:
                tp = (record.topic, record.partition)
                per_tp[tp] = per_tp.get(tp, 0) + 1
        for tp, n in per_tp.items():
            records, start = parts[tp]
            if start + n == len(records):
                del parts[tp]
            else:
                parts[tp] = (records, start + n)
        self.count -= len(batch)
        return batch

    def clear(self) -> None:
        """Forget every held record (the consumer was repositioned: they are re-fetched)."""
        self._parts.clear()
        self.count = 0


class BatchPlan(msgspec.Struct, gc=False):
    """Everything one transaction writes, plus what the daemon reports afterwards."""

    journal: list[OutMessage]
    events: list[OutMessage]
    dlq: list[OutMessage]
    # Next offset to consume per input partition: committed with the transaction.
    offsets: dict[tuple[str, int], int]
    first_seq: int  # seq the batch's first sequenced input got (last_seq + 1 if none)
    last_seq: int
    head_hash: bytes
    applied: list[tuple[str, bytes]]  # (topic, raw) in seq order, for metrics
    kinds: bytes  # each applied input's type (INPUT_KINDS), 0 if not known: for metrics
    sources: list[str]  # journal source of each applied input, in seq order, for logs
    outputs: list[OutputEvent]
    oversized: int
    rejects: int
    last_timestamp_ms: int


def _event_key(event: OutputEvent, fallback: bytes) -> bytes:
    account = getattr(event, "account", None)
    if type(account) is str:
        return account.encode()
    market = getattr(event, "market", None)
    if type(event) is OracleHeld or type(market) is str:
        return str(market).encode()
    return fallback


def _position_headers(rec: Consumed) -> list[tuple[str, bytes]]:
    """Where a dead-lettered input came from (built only for DLQ records)."""
    return [
        (HEADER_SOURCE_TOPIC, rec.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(rec.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(rec.offset).encode()),
    ]


class BatchPlanner:
    """Plans one batch from consecutive chunks of records (``add``), then ``finish``.

    The Kafka sink around the sequencer: each chunk's inputs go through
    ``Sequencer.step`` (numbered, applied, journal records built), and the step becomes
    this transaction's journal blocks, output events and dead letters. The same messages
    as one ``plan_batch`` call over all the records, except that the journal blocks are
    cut over the whole batch either way. The daemon plans in chunks so that the event
    loop can drive the previous batch's transaction in between.
    """

    def __init__(
        self,
        sequencer: Sequencer,
        *,
        journal_topic: str,
        events_topic: str,
        dlq_topic: str,
        ledger_id: str,
        max_message_bytes: int,
        journal_block_bytes: int | None = None,
    ) -> None:
        self._sequencer = sequencer
        self._journal_topic = journal_topic
        self._events_topic = events_topic
        self._dlq_topic = dlq_topic
        self._ledger = ledger_id.encode()
        self._max_message_bytes = max_message_bytes
        self._block_bytes = journal_block_bytes
        # The ledger's rules, recorded on every journal message (HEADER_RULES).
        self._rules_version = sequencer.engine.rules_version
        self._first_seq = sequencer.chain.last_seq + 1
        self._records: list[bytes] = []
        self._events: list[OutMessage] = []
        # Dead letters: the oversized inputs first, then the rejected ones, whatever the
        # chunks (the layout of a single call).
        self._oversized_dlq: list[OutMessage] = []
        self._dlq: list[OutMessage] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self._applied: list[tuple[str, bytes]] = []
        self._kinds = bytearray()
        self._sources: list[str] = []
        self._outputs: list[OutputEvent] = []
        self._oversized = self._rejects = self._last_ts_ms = 0
        # (topic, partition) -> its journal sources' prefix: one concatenation per input
        # instead of a source_of call, ~100 ns less each.
        self._source_prefixes: dict[tuple[str, int], str] = {}

    def add(self, records: Iterable[Consumed]) -> None:
        """Apply ``records`` (the next in sequencing order) to the engine and the chain."""
        max_message_bytes = self._max_message_bytes
        offsets = self._offsets
        dlq = self._oversized_dlq
        applied = self._applied
        sequenced: list[Consumed] = []
        payloads: list[bytes] = []
        sources: list[str] = []
        last_ts_ms = self._last_ts_ms
        prefixes = self._source_prefixes
        # One pass per record: this loop runs for every input the daemon consumes.
        for rec in records:
            topic, partition, offset, value = rec.topic, rec.partition, rec.offset, rec.value
            tp = (topic, partition)
            offsets[tp] = offset + 1
            if rec.timestamp > last_ts_ms:
                last_ts_ms = rec.timestamp
            if value is None:
                value = b""
            elif len(value) > max_message_bytes:
                # Never decoded, never sequenced: it does not exist for the engine.
                self._oversized += 1
                detail = f"{len(value)} bytes exceeds max_message_bytes {max_message_bytes}"
                dlq.append(
                    OutMessage(
                        self._dlq_topic,
                        None,
                        rec.key,
                        value,
                        [
                            *_position_headers(rec),
                            (HEADER_REASON, OVERSIZED.encode()),
                            (HEADER_DETAIL, detail.encode()),
                            (HEADER_LEDGER, self._ledger),
                        ],
                    )
                )
                continue
            sequenced.append(rec)
            payloads.append(value)
            prefix = prefixes.get(tp)
            if prefix is None:
                prefix = prefixes[tp] = _source_prefix(topic, partition)
            sources.append(prefix + str(offset))
            applied.append((topic, value))
        self._last_ts_ms = last_ts_ms
        step = self._sequencer.step(payloads, sources)
        self._records.extend(step.records)
        self._kinds += step.kinds
        self._sources.extend(sources)
        # Outputs are the exception (liquidations, withdrawals, rejects): decoded here for
        # their keys, the DLQ and the metrics.
        first_seq = step.first_seq
        for index, encoded in step.outputs:
            self._add_outputs(sequenced[index], first_seq + index, encoded)

    def _add_outputs(self, rec: Consumed, seq: int, encoded: list[bytes]) -> None:
        outputs = [decode_output(event) for event in encoded]
        seq_header = str(seq).encode()
        fallback_key = f"{rec.topic}:{rec.partition}".encode()
        for position, (event, value) in enumerate(zip(outputs, encoded, strict=True)):
            self._events.append(
                OutMessage(
                    self._events_topic,
                    None,
                    _event_key(event, fallback_key),
                    value,
                    [(HEADER_SEQ, seq_header), (HEADER_INDEX, str(position).encode())],
                )
            )
        if type(outputs[0]) is Reject:
            # A rejected input produces exactly one output, its reject (SPEC §6).
            self._rejects += 1
            reject = outputs[0]
            self._dlq.append(
                OutMessage(
                    self._dlq_topic,
                    None,
                    rec.key,
                    rec.value,
                    [
                        *_position_headers(rec),
                        (HEADER_REASON, reject.reason.encode()),
                        (HEADER_DETAIL, reject.detail[:_DETAIL_MAX_CHARS].encode()),
                        (HEADER_SEQ, seq_header),
                        (HEADER_LEDGER, self._ledger),
                    ],
                )
            )
        self._outputs.extend(outputs)

    def finish(self) -> BatchPlan:
        return BatchPlan(
            journal=_blocks(
                self._journal_topic,
                self._first_seq,
                self._records,
                self._block_bytes,
                self._rules_version,
            ),
            events=self._events,
            dlq=self._oversized_dlq + self._dlq,
            offsets=self._offsets,
            first_seq=self._first_seq,
            last_seq=self._sequencer.chain.last_seq,
            head_hash=self._sequencer.chain.head_hash,
            applied=self._applied,
            kinds=bytes(self._kinds),
            sources=self._sources,
            outputs=self._outputs,
            oversized=self._oversized,
            rejects=self._rejects,
            last_timestamp_ms=self._last_ts_ms,
        )


def plan_batch(
    engine: EngineCore,
    chain: JournalChain,
    records: Iterable[Consumed],
    *,
    journal_topic: str,
    events_topic: str,
    dlq_topic: str,
    ledger_id: str,
    max_message_bytes: int,
    journal_block_bytes: int | None = None,
) -> BatchPlan:
    """Apply ``records`` in order to ``engine`` and extend ``chain``: returns the messages
    (one ``BatchPlanner`` over a sequencer for that engine and chain).

    The engine and chain move ahead here, before anything is written: the caller must
    commit the plan's transaction or abandon both (the daemon exits and recovers).
    ``journal_block_bytes`` caps a journal block below ``JOURNAL_BLOCK_BYTES`` (the
    daemon passes ``limits.max_journal_record_bytes``, the journal topic's message size).
    """
    planner = BatchPlanner(
        Sequencer(engine, chain=chain, snapshot_every_inputs=None),
        journal_topic=journal_topic,
        events_topic=events_topic,
        dlq_topic=dlq_topic,
        ledger_id=ledger_id,
        max_message_bytes=max_message_bytes,
        journal_block_bytes=journal_block_bytes,
    )
    planner.add(records)
    return planner.finish()
