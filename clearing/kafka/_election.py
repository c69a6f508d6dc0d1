"""Which process of a ledger is the active one, decided by Kafka's group coordinator.

Every process of a ledger (active or standby) joins one consumer group,
``clearing-<ledger_id>-control``, subscribed to ``topics.control`` (one partition, never
written). The group coordinator gives that partition to exactly one live member: that
member is the active daemon. Failure detection is Kafka's: a member whose heartbeats stop
for ``daemon.session_timeout_ms`` (a dead host, a paused process, a partition) is removed
and the partition goes to another member; a clean stop leaves the group at once
(LeaveGroup), so a hand-over does not wait for the timeout.

The group only chooses; it does not guard the ledger. Two processes may believe they are
active for a moment (a paused one does not know it lost the partition). The single
writer is guaranteed by the stable transactional id: the newly elected process starts the
ledger's transactional producer, which fences the old one (its next commit fails and it
exits ``EXIT_FENCED`` without writing), and only then reads the journal's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import InvalidSessionTimeoutError

from clearing.kafka._clients import client_kwargs, stop_consumer
from clearing.kafka._exits import EXIT_CONFIG, DaemonExit
from clearing.ops.config import Config

__all__ = ["Election", "assign_control", "control_group_id"]

log = logging.getLogger("clearing.kafka.election")

# aiokafka leaves the group if not polled within max_poll_interval_ms: poll this often.
_POLL_MS: Final = 500


def control_group_id(config: Config) -> str:
    return f"clearing-{config.ledger_id}-control"


# A member's claim to the control partition, sent with its JoinGroup: the group leader
# gives the partition to the highest claim. A process started as active takes it (it
# fences the previous writer anyway); otherwise the holder keeps it, so a standby
# joining or leaving never moves it. A holder's claim carries the group generation it
# was elected in: a paused old holder rejoining after its session expired claims an
# older generation than the standby elected meanwhile, and loses.
_CLAIM_TAKE_OVER: Final = b"3"
_CLAIM_HOLDS: Final = b"2"
_CLAIM_STANDBY: Final = b"0"


def _assignor(election: Election) -> type[AbstractPartitionAssignor]:
    """A partition assignor for the control group (aiokafka wants a class: one per
    election, so that its JoinGroup metadata carries this process's claim)."""

    class ControlAssignor(AbstractPartitionAssignor):
        name = "clearing-control"
        version = 0

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(cls.version, list(topics), election.claim())

        @classmethod
        def assign(
            cls,
            cluster: ClusterMetadata,
            members: Mapping[str, ConsumerProtocolMemberMetadata],
        ) -> dict[str, ConsumerProtocolMemberAssignment]:
            return assign_control(cluster, members, cls.version)

        @classmethod
        def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
            pass

    return ControlAssignor


def assign_control(
    cluster: ClusterMetadata,
    members: Mapping[str, ConsumerProtocolMemberMetadata],
    version: int = 0,
) -> dict[str, ConsumerProtocolMemberAssignment]:
    """Every control partition to one member: the highest claim, ties by member id."""
    topics = sorted({topic for m in members.values() for topic in m.subscription})
    winner = max(members, key=lambda member: (members[member].user_data or b"", member))
    owned = [(t, sorted(cluster.partitions_for_topic(t) or ())) for t in topics]
    return {
        member: ConsumerProtocolMemberAssignment(version, owned if member == winner else [], b"")
        for member in members
    }


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, election: Election) -> None:
        self._election = election

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Every rebalance revokes first (eager protocol); what counts is the assignment
        # that follows (the holder claims the partition back, see ``assign_control``).
        pass

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._election._set(bool(assigned))


class Election:
    """Membership of the control group. ``elected`` is set while this process holds the
    control partition; ``lost`` is set once it held it and then lost it."""

    def __init__(self, config: Config, on_lost: Callable[[], None] | None = None) -> None:
        self._config = config
        self._on_lost = on_lost
        self._elected_generation = 0
        self._wants_active = config.daemon.role == "active"
        self.elected = asyncio.Event()
        self.lost = asyncio.Event()
        self.failure: DaemonExit | None = None  # the group refused this member for good
        self._consumer: AIOKafkaConsumer | None = None
        self._poller: asyncio.Task[None] | None = None

    def _generation(self) -> int:
        coordinator = getattr(self._consumer, "_coordinator", None)
        generation = getattr(coordinator, "generation", 0)
        return generation if isinstance(generation, int) and generation > 0 else 0

    def _set(self, holds: bool) -> None:
        if holds and not self.elected.is_set():
            self._elected_generation = self._generation()
            log.info("this process holds the control partition: it is the active one")
            self.elected.set()
        elif not holds and self.elected.is_set():
            log.warning("this process lost the control partition")
            self.elected.clear()
            self.lost.set()
            if self._on_lost is not None:
                self._on_lost()

    def claim(self) -> bytes:
        if self.elected.is_set():
            return _CLAIM_HOLDS + f"{self._elected_generation:010d}".encode()
        return _CLAIM_TAKE_OVER if self._wants_active else _CLAIM_STANDBY

    async def join(self) -> None:
        config = self._config
        session_ms = config.daemon.session_timeout_ms
        consumer = AIOKafkaConsumer(
            **client_kwargs(config, "control"),
            group_id=control_group_id(config),
            enable_auto_commit=False,
            auto_offset_reset="latest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 5),
            rebalance_timeout_ms=max(session_ms, 10_000),
            max_poll_interval_ms=max(60_000, 4 * session_ms),
            partition_assignment_strategy=(_assignor(self),),
        )
        await consumer.start()
        consumer.subscribe([config.topics.control], listener=_Listener(self))
        self._consumer = consumer
        self._poller = asyncio.create_task(self._poll(), name="clearing-control")

    async def _poll(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                await consumer.getmany(timeout_ms=_POLL_MS)
            except asyncio.CancelledError:
                raise
            except InvalidSessionTimeoutError:
                self.failure = DaemonExit(
                    EXIT_CONFIG,
                    f"the Kafka broker refuses daemon.session_timeout_ms="
                    f"{self._config.daemon.session_timeout_ms}: it must lie within the "
                    f"broker's group.min.session.timeout.ms and group.max.session.timeout.ms",
                )
                return
            except Exception as exc:  # the coordinator's errors are retried by aiokafka
                log.warning("control group poll failed: %r", exc)
                await asyncio.sleep(_POLL_MS / 1000)

    async def leave(self) -> None:
        """Leave the group now (a graceful stop hands the partition over at once)."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(BaseException):
                await self._poller
            self._poller = None
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await stop_consumer(consumer)
