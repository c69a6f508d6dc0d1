"""The batch step every writer shares: number a batch of inputs, apply them to the core
and build each one's journal record on the hash chain. Pure: no I/O, no clock.

What the step returns (``Step``) is committed by a sink: the local journal appends the
records as segment frames (``Sequencer.submit``); the Kafka daemon puts them in journal
blocks of one transaction with the outputs, dead letters and input offsets
(``clearing.kafka._batch``). Both get the same record bytes.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from clearing.engine import EngineCore
from clearing.engine.native import NativeEngine
from clearing.journal import GENESIS_HASH, Record, chain_hash
from clearing.sequencer._replay import join_outputs

__all__ = ["JournalChain", "Step", "decode_record", "encode_record", "sequence"]

_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)


def encode_record(record: Record) -> bytes:
    """A record as the step writes it: MessagePack, the body of a journal frame."""
    return _record_encoder.encode(record)


def decode_record(encoded: bytes) -> Record:
    return _record_decoder.decode(encoded)


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


class Step(NamedTuple):
    """One batch after the step: nothing of it is durable until a sink commits it."""

    first_seq: int  # the seq the batch's first input got
    records: list[bytes]  # each input's journal record (``encode_record``), in seq order
    outputs: list[tuple[int, list[bytes]]]  # (index in the batch, output event bytes)
    kinds: bytes  # each input's type as a byte (``INPUT_KINDS``), 0 if not known
    head_hash: bytes  # the chain hash after the batch's last record


def _journal_one(
    engine: EngineCore,
    chain: JournalChain,
    raw: bytes,
    source: str,
    encoded: list[bytes] | None,
    records: list[bytes],
    outputs: list[tuple[int, list[bytes]]],
    index: int,
) -> None:
    """Journal one input on the per-input path (applied here unless ``encoded`` is given:
    the outputs of an input the engine already applied)."""
    if encoded is None:
        encoded = engine.apply_encoded(raw)
    record = chain.append(engine.seq, source, raw, join_outputs(encoded))
    records.append(_record_encoder.encode(record))
    if encoded:
        outputs.append((index, encoded))


def sequence(
    engine: EngineCore, chain: JournalChain, payloads: list[bytes], sources: list[str]
) -> Step:
    """Apply ``payloads`` in order (each gets the next seq) and extend ``chain``.

    On the native core the inputs run in native batches (``NativeEngine.journal_run``:
    applied and journalled without a Python object per input); an input it does not
    finish alone takes the per-input path, as does every input on the Python core. Both
    write the same bytes. (The one place outside the engine that asks which core it
    holds: ``journal_run`` is the native core's alone, so far.) The engine and chain move
    ahead here: a caller whose sink then fails must abandon both (restart and recover
    from the journal).
    """
    if chain.last_seq != engine.seq:
        raise ValueError(f"journal chain at seq {chain.last_seq}, engine at {engine.seq}")
    first_seq = engine.seq + 1
    records: list[bytes] = []
    outputs: list[tuple[int, list[bytes]]] = []
    if not isinstance(engine, NativeEngine):
        for index, (raw, source) in enumerate(zip(payloads, sources, strict=True)):
            _journal_one(engine, chain, raw, source, None, records, outputs, index)
        return Step(first_seq, records, outputs, bytes(len(payloads)), chain.head_hash)
    kinds = bytearray()
    start, n = 0, len(payloads)
    while start < n:
        run = engine.journal_run(payloads, sources, start, chain.head_hash)
        kinds += run.kinds
        records.extend(run.records)
        outputs.extend(run.outputs)
        chain.last_seq += len(run.records)
        chain.head_hash = run.head_hash
        index = run.next_index
        if index == n:
            break
        raw = payloads[index]
        code = run.code
        encoded = None if code is None else engine.finish_refusal(raw, code)
        _journal_one(engine, chain, raw, sources[index], encoded, records, outputs, index)
        kinds.append(0)
        start = index + 1
    return Step(first_seq, records, outputs, bytes(kinds), chain.head_hash)
