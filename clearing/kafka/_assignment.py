"""Which input partitions the daemon reads, and from where.

Manual assignment, not group membership: there are no rebalances, so a batch can never
lose its partitions halfway; exclusivity comes from transactional-id fencing. Each
partition starts at max(committed group offset, the journal's position), and input
positions are never reset silently: records deleted before they were journaled stop the
daemon with ``EXIT_RECOVERY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import OffsetOutOfRangeError

from clearing.kafka._batch import InputBuffer
from clearing.kafka._exits import EXIT_FAILURE, EXIT_RECOVERY, DaemonExit
from clearing.kafka._recovery import Positions
from clearing.kafka._topics import describe_partitions
from clearing.ops.config import Config

__all__ = ["Assignment"]

log = logging.getLogger("clearing.kafka")


class Assignment:
    """The consumer's input partitions. ``positions`` is the daemon's own map of the next
    offset to consume per partition (the journal's view): updated here on (re)assignment,
    by the daemon after each commit."""

    def __init__(
        self,
        config: Config,
        consumer: AIOKafkaConsumer,
        admin: AIOKafkaAdminClient,
        positions: Positions,
        buffer: InputBuffer,
    ) -> None:
        self._config = config
        self._consumer = consumer
        self._admin = admin
        self._positions = positions
        self._buffer = buffer
        self.assigned: list[TopicPartition] = []

    async def input_partitions(self) -> list[TopicPartition]:
        found = await describe_partitions(self._admin, self._config.topics.inputs)
        tps: list[TopicPartition] = []
        for topic in self._config.topics.inputs:
            count = found.get(topic)
            if count is None:
                raise DaemonExit(EXIT_FAILURE, f"input topic {topic!r} disappeared")
            tps.extend(TopicPartition(topic, p) for p in range(count))
        return tps

    async def assign(self, first: bool = False, journal_empty: bool = False) -> None:
        """Assign every input partition and seek each to where the journal says.

        The start offset is max(committed group offset, journal position): they are
        equal unless the group's offsets were reset (never re-apply a journaled input) or
        the last records of a partition were oversized (never journaled).
        """
        consumer = self._consumer
        config = self._config
        tps = await self.input_partitions()
        # consumer.committed() waits for the group coordinator (the admin client's lookup
        # fails instead while __consumer_offsets is still being created).
        committed: dict[tuple[str, int], int] = {}
        for tp in tps:
            offset = await consumer.committed(tp)
            if offset is not None and offset >= 0:
                committed[tp.topic, tp.partition] = offset
        if first and journal_empty and committed:
            raise DaemonExit(
                EXIT_RECOVERY,
                f"refusing to start: the journal topic {config.topics.journal!r} is "
                f"empty but consumer group {config.group_id!r} has committed offsets "
                f"({len(committed)} partitions): the journal was deleted or recreated. "
                f"Restore it; for a genuinely new ledger use a new ledger_id. (If every "
                f"input so far was oversized, and so only went to the DLQ, delete the "
                f"group's offsets to start over.)",
            )
        starts: dict[TopicPartition, int] = {}
        new: list[TopicPartition] = []
        for tp in tps:
            key = (tp.topic, tp.partition)
            journal_pos, group_pos = self._positions.get(key), committed.get(key)
            if journal_pos is not None and (group_pos is None or group_pos < journal_pos):
                if group_pos != journal_pos:
                    log.warning(
                        "%s:%d: group offset %s is behind the journal (%d): resuming from "
                        "the journal's position",
                        tp.topic,
                        tp.partition,
                        group_pos,
                        journal_pos,
                    )
                starts[tp] = journal_pos
            elif group_pos is not None:
                starts[tp] = group_pos
            else:
                # Never read and never committed: a new partition starts at its log
                # start, whatever that is (nothing of it was ever ours to lose).
                new.append(tp)
        if starts:
            # The consumer never resets a position by itself (auto_offset_reset="none"):
            # a start below the log start offset means inputs were deleted unread.
            log_start = await consumer.beginning_offsets(list(starts))
            lost: dict[TopicPartition, tuple[int, int | None]] = {
                tp: (start, log_start[tp])
                for tp, start in starts.items()
                if tp in log_start and start < log_start[tp]
            }
            if lost:
                raise self.truncated_inputs(lost)
        consumer.assign(tps)
        self.assigned = tps
        self._buffer.clear()  # every partition is re-read from its committed position
        # No await between assign() and the seeks: every partition gets its position
        # before the fetcher can look for one.
        for tp, start in starts.items():
            consumer.seek(tp, start)
            self._positions[tp.topic, tp.partition] = start
        if new:
            await consumer.seek_to_beginning(*new)

    async def refresh(self) -> None:
        """Reassign when the input topics' partitions changed (only between batches)."""
        tps = await self.input_partitions()
        if set(tps) != set(self.assigned):
            log.info("input partitions changed: reassigning (%d partitions)", len(tps))
            await self.assign()

    def truncated_inputs(self, lost: Mapping[TopicPartition, tuple[int, int | None]]) -> DaemonExit:
        """Exit 4: input records this ledger never applied were deleted from Kafka."""
        parts = "; ".join(
            f"{tp.topic}:{tp.partition} expected offset {expected}, log start offset "
            f"{'unknown' if start is None else start}"
            for tp, (expected, start) in sorted(lost.items())
        )
        return DaemonExit(
            EXIT_RECOVERY,
            f"refusing to consume: input partition(s) truncated past the position this "
            f"ledger has applied ({parts}). The records in between were deleted (retention, "
            f"delete-records, or the topic was recreated) before they were journaled: "
            f"they are lost to this ledger. Restore them, or, to skip them deliberately, "
            f"move the offsets of consumer group {self._config.group_id!r} to the log start.",
        )

    async def out_of_range(self, exc: OffsetOutOfRangeError) -> DaemonExit:
        """The fetch position left the log while running (truncated, or topic recreated)."""
        positions = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        if not positions:
            return DaemonExit(
                EXIT_RECOVERY,
                f"refusing to consume: an input fetch offset is out of range ({exc!r}): "
                f"an input partition was truncated or recreated",
            )
        log_start: dict[TopicPartition, int] = {}
        # Best effort: only for the message.
        with contextlib.suppress(Exception):
            log_start = await asyncio.wait_for(
                self._consumer.beginning_offsets(list(positions)),
                self._config.kafka.request_timeout_ms / 1000,
            )
        lost = {tp: (offset, log_start.get(tp)) for tp, offset in positions.items()}
        return self.truncated_inputs(lost)
