"""Who gets the control partition: the claims carried in each member's JoinGroup."""

from __future__ import annotations

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from clearing.kafka._election import assign_control


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}


def winner(claims: dict[str, bytes]) -> str:
    members = {m: ConsumerProtocolMemberMetadata(0, ["ctl"], c) for m, c in claims.items()}
    assignment = assign_control(_Cluster(), members)  # type: ignore[arg-type]
    owners = [m for m, a in assignment.items() if a.assignment]
    assert len(owners) == 1 and assignment[owners[0]].assignment == [("ctl", [0])]
    return owners[0]


def test_the_holder_keeps_the_partition_when_a_standby_joins() -> None:
    assert winner({"a": b"20000000003", "b": b"0", "c": b"0"}) == "a"


def test_a_paused_old_holder_loses_to_the_one_elected_after_it() -> None:
    # Both claim to hold; the later election (higher generation) wins, whatever the ids.
    assert winner({"z-old": b"20000000003", "a-new": b"20000000005"}) == "a-new"


def test_a_process_started_as_active_takes_over() -> None:
    assert winner({"a": b"20000000009", "b": b"3"}) == "b"


def test_among_standbys_one_is_chosen() -> None:
    assert winner({"a": b"0", "b": b"0"}) == "b"
