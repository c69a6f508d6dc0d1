"""Snapshots in Kafka: every local snapshot file, published to a compacted topic so that
a machine with an empty disk recovers from the newest one plus the journal's tail.

Layout of ``topics.snapshots`` (two partitions, ``cleanup.policy=compact``):

* partition 1, the chunks: the snapshot file's bytes (``clearing.snapshot`` format, which
  carries its own journal seq, chain hash and state SHA-256) cut into
  ``snapshot.chunk_bytes`` pieces. Key ``snap/<seq, 20 digits>/<index, 6 digits>``; value
  ``CLSCHK`` + seq + index + CRC32C of the piece (``_CHUNK_HEAD``) + the piece.
* partition 0, the manifests: written only after every chunk was acknowledged, so a
  snapshot without a manifest (the writer died half-way) is never complete. Key
  ``snap/<seq>/manifest``; value JSON: ledger, journal topic, seq, chain hash, total
  bytes, SHA-256 of the whole file, chunk count and the offset of each chunk.

Reading the manifests is cheap (small records, one partition); the chunks of the one
snapshot that is wanted are then fetched by offset. A snapshot is loaded only if every
chunk is at its recorded offset with its key, its CRC matches, and the whole file's size
and SHA-256 match the manifest; otherwise it is skipped with a log line and the previous
one is tried.

Compaction keeps the newest value of each key and deletes a key only after a tombstone
(``delete.retention.ms`` later). Keys are unique per snapshot, so compaction alone never
removes a complete snapshot; the publisher tombstones the snapshots older than the
``snapshot.topic_keep`` newest complete ones (the manifest first, so an old snapshot
stops being complete before its chunks go). The newest complete snapshot is therefore
never deleted, whatever compaction does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections.abc import Iterator
from typing import Any, Final

import crc32c
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from clearing.kafka._clients import client_kwargs
from clearing.kafka._sync_reader import SyncReader
from clearing.kafka._topics import topic_partitions
from clearing.ops.config import Config
from clearing.snapshot import parse_snapshot_header

__all__ = [
    "CHUNK_PARTITION",
    "MANIFEST_PARTITION",
    "Manifest",
    "SnapshotPublisher",
    "SnapshotTopicReader",
    "chunk_key",
    "encode_chunk",
    "manifest_key",
    "read_manifests",
    "snapshot_chunks",
]

log = logging.getLogger("clearing.kafka.snapshots")

MANIFEST_PARTITION: Final = 0
CHUNK_PARTITION: Final = 1
_CHUNK_MAGIC: Final = b"CLSCHK"
_CHUNK_HEAD: Final = struct.Struct(">6sQII")  # magic, seq, index, crc32c of the piece
_FORMAT: Final = 1
_FETCH_TIMEOUT_MS: Final = 500
# Record framing on top of a chunk (the topic's max.message.bytes is chunk_bytes + this).
CHUNK_FRAMING_BYTES: Final = 64 * 1024


class Manifest(msgspec.Struct, frozen=True):
    """What a complete snapshot in the topic is: written last, after all its chunks."""

    format: int
    ledger_id: str
    journal_topic: str
    journal_seq: int
    journal_hash: str  # hex
    journal_offset: int  # offset of the journal message holding journal_seq (-1: none)
    size_bytes: int
    sha256: str  # hex, of the whole snapshot file
    chunk_offsets: list[int]  # offset of chunk i in the chunk partition


def chunk_key(seq: int, index: int) -> bytes:
    return f"snap/{seq:020d}/{index:06d}".encode()


def manifest_key(seq: int) -> bytes:
    return f"snap/{seq:020d}/manifest".encode()


def encode_chunk(seq: int, index: int, piece: bytes) -> bytes:
    return _CHUNK_HEAD.pack(_CHUNK_MAGIC, seq, index, crc32c.crc32c(piece)) + piece


def snapshot_chunks(data: bytes, chunk_bytes: int) -> list[bytes]:
    """The file cut into pieces of at most ``chunk_bytes`` (at least one piece)."""
    return [data[i : i + chunk_bytes] for i in range(0, max(1, len(data)), chunk_bytes)]


def _decode_chunk(value: bytes | None, seq: int, index: int) -> bytes:
    """The piece, or ValueError saying what is wrong with it."""
    if value is None or len(value) < _CHUNK_HEAD.size:
        raise ValueError(f"chunk {index} is missing or truncated")
    magic, got_seq, got_index, crc = _CHUNK_HEAD.unpack_from(value, 0)
    if magic != _CHUNK_MAGIC or got_seq != seq or got_index != index:
        raise ValueError(f"chunk {index} is not chunk {index} of seq {seq}")
    piece = value[_CHUNK_HEAD.size :]
    if crc32c.crc32c(piece) != crc:
        raise ValueError(f"chunk {index} fails its CRC32C")
    return piece


class SnapshotPublisher:
    """Publishes snapshot files to the topic (on the daemon's loop) and tombstones the
    snapshots beyond ``snapshot.topic_keep``. Failures are logged, never fatal: the
    journal is the ledger, snapshots only shorten recovery."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._producer: AIOKafkaProducer | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **client_kwargs(self._config, "snapshots"),
                acks="all",
                enable_idempotence=True,
                max_request_size=self._config.snapshot.chunk_bytes + CHUNK_FRAMING_BYTES,
                linger_ms=5,
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def publish(self, path: str) -> Manifest | None:
        """Publish the snapshot file at ``path``; returns its manifest (None: failed)."""
        try:
            data = await asyncio.to_thread(_read_file, path)
            return await self._publish(data)
        except Exception as exc:
            log.error("publishing snapshot %s to the snapshot topic failed: %r", path, exc)
            return None

    async def _publish(self, data: bytes) -> Manifest:
        config = self._config
        topic = config.topics.snapshots
        seq, journal_hash, meta = parse_snapshot_header(data)
        journal_offset = meta.get("journal_offset")
        producer = await self._started()
        pieces = snapshot_chunks(data, config.snapshot.chunk_bytes)
        futures = []
        for index, piece in enumerate(pieces):
            futures.append(
                await producer.send(
                    topic,
                    encode_chunk(seq, index, piece),
                    key=chunk_key(seq, index),
                    partition=CHUNK_PARTITION,
                )
            )
        sent = await asyncio.gather(*futures)
        manifest = Manifest(
            format=_FORMAT,
            ledger_id=config.ledger_id,
            journal_topic=config.topics.journal,
            journal_seq=seq,
            journal_hash=journal_hash.hex(),
            journal_offset=journal_offset if isinstance(journal_offset, int) else -1,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            chunk_offsets=[int(m.offset) for m in sent],
        )
        await (
            await producer.send(
                topic,
                msgspec.json.encode(manifest),
                key=manifest_key(seq),
                partition=MANIFEST_PARTITION,
            )
        )
        log.info(
            "snapshot at seq %d published to %s: %d bytes in %d chunks",
            seq,
            topic,
            len(data),
            len(pieces),
            extra={"seq": seq},
        )
        await self._prune()
        return manifest

    async def _prune(self) -> None:
        """Tombstone the complete snapshots beyond topic_keep, manifest first, then its
        chunks. The list is read from the topic each time (cheap: the manifests'
        partition), so snapshots another process published are pruned as well."""
        keep = self._config.snapshot.topic_keep
        old = (await asyncio.to_thread(read_manifests, self._config))[keep:]
        if not old:
            return
        producer = await self._started()
        topic = self._config.topics.snapshots
        for manifest in old:
            seq = manifest.journal_seq
            await (await producer.send(topic, None, key=manifest_key(seq), partition=0))
            futures = [
                await producer.send(topic, None, key=chunk_key(seq, i), partition=CHUNK_PARTITION)
                for i in range(len(manifest.chunk_offsets))
            ]
            await asyncio.gather(*futures)

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


def read_manifests(config: Config) -> list[Manifest]:
    """The topic's complete snapshots of this ledger, newest first. Blocking."""
    with SnapshotTopicReader(config) as reader:
        return reader.manifests()


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class SnapshotTopicReader(SyncReader):
    """Synchronous reading of the snapshot topic over a private event loop (recovery
    runs in a worker thread, like ``KafkaJournalReader``). ``open()`` first."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.topic = config.topics.snapshots

    @property
    def available(self) -> bool:
        """Whether the topic exists with both partitions (and so is being read)."""
        return self._consumer is not None

    async def _connect(self) -> AIOKafkaConsumer | None:
        partitions = await topic_partitions(self._config, self.topic)
        if partitions is None or partitions < 2:
            log.warning(
                "snapshot topic %r %s: recovery uses local snapshots only (create it with "
                "`clearing topics create --config FILE`)",
                self.topic,
                "does not exist" if partitions is None else "has fewer than 2 partitions",
            )
            return None
        per_partition = self._config.snapshot.chunk_bytes + CHUNK_FRAMING_BYTES
        consumer = AIOKafkaConsumer(
            **client_kwargs(self._config, "snapshot-reader"),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=per_partition,
            fetch_max_bytes=max(per_partition, 4 * 1024 * 1024),
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        return consumer

    def _scan(self, partition: int, start: int, end: int) -> Iterator[tuple[int, Any]]:
        """(offset, message) of partition's records in [start, end)."""
        consumer = self._consumer
        assert consumer is not None
        tp = TopicPartition(self.topic, partition)
        self._run(self._assign(tp))
        begin = self._run(consumer.beginning_offsets([tp]))[tp]
        start = max(start, int(begin))
        if start >= end:
            return
        consumer.seek(tp, start)
        while True:
            batches = self._run(consumer.getmany(tp, timeout_ms=_FETCH_TIMEOUT_MS))
            for message in batches.get(tp, ()):
                if message.offset >= end:
                    return
                yield message.offset, message
            if self._run(consumer.position(tp)) >= end:
                return

    async def _assign(self, tp: TopicPartition) -> None:
        # aiokafka creates futures on assignment: it must run inside the loop.
        assert self._consumer is not None
        self._consumer.assign([tp])

    def _end(self, partition: int) -> int:
        consumer = self._consumer
        assert consumer is not None
        tp = TopicPartition(self.topic, partition)
        # read_committed: the last stable offset
        return int(self._run(consumer.end_offsets([tp]))[tp])

    def manifests(self) -> list[Manifest]:
        """The complete snapshots of this ledger's journal, newest first (latest value
        per key: a tombstone removes one)."""
        if not self.available:
            return []
        latest: dict[bytes, bytes | None] = {}
        end = self._end(MANIFEST_PARTITION)
        for _offset, message in self._scan(MANIFEST_PARTITION, 0, end):
            latest[bytes(message.key or b"")] = message.value
        found: list[Manifest] = []
        for key, value in latest.items():
            if value is None:
                continue
            try:
                manifest = msgspec.json.decode(value, type=Manifest)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("%s: unreadable manifest %r skipped (%s)", self.topic, key, exc)
                continue
            if (
                manifest.ledger_id != self._config.ledger_id
                or manifest.journal_topic != self._config.topics.journal
            ):
                continue
            found.append(manifest)
        return sorted(found, key=lambda m: m.journal_seq, reverse=True)

    def fetch(self, manifest: Manifest) -> bytes:
        """The snapshot file the manifest describes, checked; ValueError if it is not
        whole (a chunk missing, moved, damaged, or the whole file's hash differs)."""
        seq = manifest.journal_seq
        offsets = manifest.chunk_offsets
        if not offsets:
            raise ValueError("the manifest lists no chunks")
        wanted = {offset: index for index, offset in enumerate(offsets)}
        pieces: dict[int, bytes] = {}
        end = min(self._end(CHUNK_PARTITION), max(offsets) + 1)
        for offset, message in self._scan(CHUNK_PARTITION, min(offsets), end):
            index = wanted.get(offset)
            if index is None:
                continue
            if bytes(message.key or b"") != chunk_key(seq, index):
                raise ValueError(f"chunk {index}: offset {offset} holds another key")
            pieces[index] = _decode_chunk(message.value, seq, index)
        missing = [i for i in range(len(offsets)) if i not in pieces]
        if missing:
            raise ValueError(f"chunk(s) {missing[:5]} missing (deleted or never written)")
        data = b"".join(pieces[i] for i in range(len(offsets)))
        if len(data) != manifest.size_bytes or hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise ValueError("the joined chunks do not match the manifest's size and SHA-256")
        return data
