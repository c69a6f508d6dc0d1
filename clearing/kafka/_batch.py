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
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple

import msgspec

from clearing.engine import Engine, OutputEvent
from clearing.engine.events import OracleHeld, Reject, decode_output
from clearing.engine.native import NativeEngine
from clearing.journal import GENESIS_HASH, Record, chain_hash
from clearing.sequencer import join_outputs

__all__ = [
    "HEADER_BLOCK",
    "HEADER_INDEX",
    "HEADER_SEQ",
    "JOURNAL_BLOCK_BYTES",
    "OVERSIZED",
    "BatchPlan",
    "InputRecord",
    "JournalChain",
    "OutMessage",
    "decode_journal_message",
    "decode_journal_value",
    "encode_journal_block",
    "encode_journal_value",
    "order_records",
    "parse_source",
    "plan_batch",
    "source_of",
]

HEADER_SEQ: Final = "clearing.seq"
HEADER_BLOCK: Final = "clearing.block"
HEADER_INDEX: Final = "clearing.index"
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
# one per input (the per-message cost of the producer, not the bytes, set the pace).
# Well under the journal topic's max.message.bytes and near the producer's batch size.
JOURNAL_BLOCK_BYTES: Final = 256 * 1024
# Per-record MessagePack framing and the 32-byte chain hash, for the block size estimate.
_RECORD_OVERHEAD_BYTES: Final = 64

_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)
_block_decoder = msgspec.msgpack.Decoder(list[Record])


def encode_journal_value(record: Record) -> bytes:
    """A single-record journal value (the format before blocks; see ``encode_journal_block``)."""
    return _record_encoder.encode(record)


def decode_journal_value(value: bytes) -> Record:
    """Raises ``msgspec.DecodeError``/``ValidationError`` on bytes that are not a Record."""
    return _record_decoder.decode(value)


def encode_journal_block(topic: str, records: Sequence[Record]) -> OutMessage:
    """The journal message of ``records`` (consecutive seqs, at least one)."""
    return OutMessage(
        topic,
        0,
        str(records[0].seq).encode(),
        _record_encoder.encode(records),
        [(HEADER_BLOCK, str(len(records)).encode())],
    )


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
    """A consumed input record, reduced to what sequencing needs."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


class OutMessage(NamedTuple):
    topic: str
    partition: int | None  # None: the default (murmur2-of-key) partitioner decides
    key: bytes | None
    value: bytes | None  # None only for a DLQ copy of an input that had no value
    headers: list[tuple[str, bytes]]


def source_of(topic: str, partition: int, offset: int) -> str:
    return f"kafka:{topic}:{partition}:{offset}"


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


class JournalChain:
    """Seq and hash chain of the journal as this writer has extended it."""

    __slots__ = ("head_hash", "last_seq")

    def __init__(self, last_seq: int = 0, head_hash: bytes = GENESIS_HASH) -> None:
        self.last_seq = last_seq
        self.head_hash = head_hash

    def append(self, seq: int, source: str, payload: bytes, outputs: bytes) -> Record:
        if seq != self.last_seq + 1:
            raise ValueError(f"journal seq {seq} does not follow {self.last_seq}")
        digest = chain_hash(self.head_hash, seq, source.encode(), payload, outputs)
        self.last_seq = seq
        self.head_hash = digest
        return Record(seq, source, payload, outputs, digest)


def order_records(
    batch: Mapping[tuple[str, int], Sequence[InputRecord]], topic_rank: Mapping[str, int]
) -> list[InputRecord]:
    """The batch's records in sequencing order.

    Each partition keeps its offset order; partitions are merged by (timestamp, topic
    rank, partition), so inputs produced close together on different topics interleave
    roughly as they were produced and ties break the same way every time.
    """
    ordered_parts = [batch[tp] for tp in sorted(batch, key=lambda tp: (topic_rank[tp[0]], tp))]
    return list(
        heapq.merge(
            *ordered_parts,
            key=lambda r: (r.timestamp_ms, topic_rank[r.topic], r.partition),
        )
    )


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


def _position_headers(rec: InputRecord) -> list[tuple[str, bytes]]:
    """Where a dead-lettered input came from (built only for DLQ records)."""
    return [
        (HEADER_SOURCE_TOPIC, rec.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(rec.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(rec.offset).encode()),
    ]


def plan_batch(
    engine: Engine | NativeEngine,
    chain: JournalChain,
    records: Iterable[InputRecord],
    *,
    journal_topic: str,
    events_topic: str,
    dlq_topic: str,
    ledger_id: str,
    max_message_bytes: int,
) -> BatchPlan:
    """Apply ``records`` in order to ``engine`` and extend ``chain``: returns the messages.

    The engine and chain move ahead here, before anything is written: the caller must
    commit the plan's transaction or abandon both (the daemon exits and recovers).
    """
    first_seq = engine.seq + 1
    journal: list[OutMessage] = []
    events: list[OutMessage] = []
    dlq: list[OutMessage] = []
    offsets: dict[tuple[str, int], int] = {}
    applied: list[tuple[str, bytes]] = []
    sources: list[str] = []
    outputs_all: list[OutputEvent] = []
    oversized = rejects = 0
    last_ts_ms = 0
    ledger = ledger_id.encode()
    block: list[Record] = []
    block_bytes = 0
    apply_encoded = engine.apply_encoded
    append_record = chain.append
    for rec in records:
        offsets[rec.topic, rec.partition] = rec.offset + 1
        if rec.timestamp_ms > last_ts_ms:
            last_ts_ms = rec.timestamp_ms
        raw = rec.value if rec.value is not None else b""
        if len(raw) > max_message_bytes:
            # Never decoded, never sequenced: it does not exist for the engine.
            oversized += 1
            detail = f"{len(raw)} bytes exceeds max_message_bytes {max_message_bytes}"
            dlq.append(
                OutMessage(
                    dlq_topic,
                    None,
                    rec.key,
                    rec.value,
                    [
                        *_position_headers(rec),
                        (HEADER_REASON, OVERSIZED.encode()),
                        (HEADER_DETAIL, detail.encode()),
                        (HEADER_LEDGER, ledger),
                    ],
                )
            )
            continue
        encoded = apply_encoded(raw)
        seq = engine.seq
        source = source_of(rec.topic, rec.partition, rec.offset)
        joined = join_outputs(encoded)
        record = append_record(seq, source, raw, joined)
        size = len(raw) + len(joined) + len(source) + _RECORD_OVERHEAD_BYTES
        if block and block_bytes + size > JOURNAL_BLOCK_BYTES:
            journal.append(encode_journal_block(journal_topic, block))
            block = []
            block_bytes = 0
        block.append(record)
        block_bytes += size
        applied.append((rec.topic, raw))
        sources.append(source)
        if not encoded:
            continue
        # Outputs are the exception (liquidations, withdrawals, rejects): decode them here
        # for their keys, the DLQ and the metrics.
        outputs = [decode_output(event) for event in encoded]
        seq_header = str(seq).encode()
        fallback_key = f"{rec.topic}:{rec.partition}".encode()
        for index, (event, value) in enumerate(zip(outputs, encoded, strict=True)):
            events.append(
                OutMessage(
                    events_topic,
                    None,
                    _event_key(event, fallback_key),
                    value,
                    [(HEADER_SEQ, seq_header), (HEADER_INDEX, str(index).encode())],
                )
            )
        if type(outputs[0]) is Reject:
            # A rejected input produces exactly one output, its reject (SPEC §6).
            rejects += 1
            reject = outputs[0]
            dlq.append(
                OutMessage(
                    dlq_topic,
                    None,
                    rec.key,
                    rec.value,
                    [
                        *_position_headers(rec),
                        (HEADER_REASON, reject.reason.encode()),
                        (HEADER_DETAIL, reject.detail[:_DETAIL_MAX_CHARS].encode()),
                        (HEADER_SEQ, seq_header),
                        (HEADER_LEDGER, ledger),
                    ],
                )
            )
        outputs_all.extend(outputs)
    if block:
        journal.append(encode_journal_block(journal_topic, block))
    return BatchPlan(
        journal=journal,
        events=events,
        dlq=dlq,
        offsets=offsets,
        first_seq=first_seq,
        last_seq=engine.seq,
        head_hash=chain.head_hash,
        applied=applied,
        sources=sources,
        outputs=outputs_all,
        oversized=oversized,
        rejects=rejects,
        last_timestamp_ms=last_ts_ms,
    )
