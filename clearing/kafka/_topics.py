"""The ledger's topics: their settings, ``clearing topics create``, and existence checks.

Why these settings:

* journal: one partition (one total order), kept forever (``retention.ms`` and
  ``retention.bytes`` -1, ``cleanup.policy=delete`` so nothing is ever compacted away),
  ``min.insync.replicas`` = replication - 1, no unclean leader election (an out-of-sync
  replica becoming leader would silently drop committed journal records), and room for
  the largest record (an input plus all its outputs).
* events: partitioned by key (account, or market for ``oracle_held``) so consumers scale
  out and each account's events stay ordered; ordinary retention.
* dlq: raw rejected inputs for people to look at; long retention.
* snapshots: the published snapshots (``_snapshot_topic``): compacted (keys are unique
  per snapshot and old ones are tombstoned by the writer, so compaction never removes
  the newest complete one), two partitions (manifests, chunks), messages up to
  ``snapshot.chunk_bytes`` plus framing. A delete policy would let retention remove the
  only complete snapshot: reported as a problem.
* control: one partition, never written; the consumer group on it elects the active
  daemon (the member assigned the partition), see ``_election``.
* inputs: created only if missing, for local runs; in production they belong to their
  producers (matching engine, oracle, ...). Their ``max.message.bytes`` is
  ``limits.max_message_bytes`` plus framing, so the broker accepts every input the
  daemon would; an existing input topic with a smaller limit is reported at start
  (``input_limit_warnings``): the broker refuses the inputs in between to their
  producers, so they reach neither the ledger nor its DLQ.

Creating is idempotent: existing topics are left as they are and checked; a journal
topic that could lose records (finite retention, compaction, more than one partition) is
reported as a problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Final, NamedTuple

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAuthorizationFailedError

from clearing.kafka._clients import admin_client
from clearing.kafka._connect import start_admin
from clearing.ops.config import Config

__all__ = [
    "TopicSpec",
    "TopicsReport",
    "create_topics",
    "describe_partitions",
    "input_limit_warnings",
    "topic_specs",
]

_TOPIC_ALREADY_EXISTS: Final = 36
_UNKNOWN_TOPIC: Final = 3
_METADATA_RETRIES: Final = 50  # x 0.1 s
# Record-batch framing on top of the largest record the producer may send.
_FRAMING_BYTES: Final = 64 * 1024
# The least framing one record needs on top of its value: the record batch header (61
# bytes), the record's own (~20) and a key and headers of modest size.
_MIN_INPUT_FRAMING_BYTES: Final = 1024
_MAX_MESSAGE_BYTES: Final = "max.message.bytes"


_WHY_REQUIRED: Final = {
    "journal": "the journal must never lose records",
    "snapshots": "retention could delete the only complete snapshot",
}


class TopicSpec(NamedTuple):
    role: str
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    # Settings an existing topic must have, or the ledger is at risk.
    required: frozenset[str]


class TopicsReport(NamedTuple):
    created: list[str]
    existing: list[str]
    warnings: list[str]
    problems: list[str]


def topic_specs(config: Config) -> list[TopicSpec]:
    topics = config.topics
    rf = topics.replication_factor
    safe = {
        "min.insync.replicas": str(topics.min_isr),
        "unclean.leader.election.enable": "false",
    }
    big = str(config.limits.max_journal_record_bytes + _FRAMING_BYTES)
    input_bytes = config.limits.max_message_bytes + _FRAMING_BYTES
    journal = {
        **safe,
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
        _MAX_MESSAGE_BYTES: big,
    }
    events = {**safe, "cleanup.policy": "delete", "retention.ms": str(topics.events_retention_ms)}
    dlq = {
        **safe,
        "cleanup.policy": "delete",
        "retention.ms": str(topics.dlq_retention_ms),
        _MAX_MESSAGE_BYTES: big,
    }
    specs = [
        TopicSpec(
            "journal",
            topics.journal,
            1,
            rf,
            journal,
            frozenset(("cleanup.policy", "retention.ms", "retention.bytes")),
        ),
        TopicSpec("events", topics.events, topics.events_partitions, rf, events, frozenset()),
        TopicSpec("dlq", topics.dlq, topics.dlq_partitions, rf, dlq, frozenset()),
        TopicSpec(
            "snapshots",
            topics.snapshots,
            2,
            rf,
            {
                **safe,
                "cleanup.policy": "compact",
                _MAX_MESSAGE_BYTES: str(config.snapshot.chunk_bytes + _FRAMING_BYTES),
            },
            frozenset(("cleanup.policy",)),
        ),
        TopicSpec("control", topics.control, 1, rf, dict(safe), frozenset()),
    ]
    for role, name in (
        ("admin", topics.admin),
        ("oracle", topics.oracle),
        ("book", topics.book),
        ("fills", topics.fills),
    ):
        inputs = {**safe, _MAX_MESSAGE_BYTES: str(input_bytes)}
        specs.append(TopicSpec(role, name, topics.input_partitions, rf, inputs, frozenset()))
    return specs


async def describe_partitions(
    admin: AIOKafkaAdminClient, names: Iterable[str]
) -> dict[str, int | None]:
    """Partition count of each topic; None for a topic that does not exist."""
    out: dict[str, int | None] = {}
    for topic in await admin.describe_topics(list(names)):
        if topic["error_code"] == _UNKNOWN_TOPIC:
            out[topic["topic"]] = None
        elif topic["error_code"] == TopicAuthorizationFailedError.errno:
            # An ACL problem, not a broken cluster: the daemon exits 2 on it.
            raise TopicAuthorizationFailedError(topic["topic"])
        elif topic["error_code"] != 0:
            raise RuntimeError(
                f"describing topic {topic['topic']!r} failed with Kafka error code "
                f"{topic['error_code']}"
            )
        else:
            out[topic["topic"]] = len(topic["partitions"])
    return out


async def topic_partitions(config: Config, topic: str) -> int | None:
    """``topic``'s partition count (None: it does not exist), by a short-lived admin
    client: what a reader checks before it subscribes."""
    admin = admin_client(config)
    await admin.start()
    try:
        return (await describe_partitions(admin, [topic])).get(topic)
    finally:
        await admin.close()


async def _current_configs(admin: AIOKafkaAdminClient, name: str) -> dict[str, str]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    configs: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            for entry in resource[4]:
                configs[entry[0]] = entry[1]
    return configs


async def create_topics(config: Config) -> TopicsReport:
    """Create the missing topics; check the existing ones. Idempotent."""
    specs = topic_specs(config)
    report = TopicsReport([], [], [], [])
    admin = await start_admin(config)
    try:
        new_topics = [
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs)
            for s in specs
        ]
        response = await admin.create_topics(new_topics)
        # create_topics does not raise on per-topic errors: read every one.
        errors = {name: (code, message) for name, code, message in response.topic_errors}
        for spec in specs:
            code, message = errors.get(spec.name, (0, None))
            if code == 0:
                report.created.append(spec.name)
            elif code == _TOPIC_ALREADY_EXISTS:
                report.existing.append(spec.name)
                await _check_existing(admin, spec, report)
            else:
                report.problems.append(
                    f"{spec.role} topic {spec.name!r}: creation failed (Kafka error {code}: "
                    f"{message})"
                )
    finally:
        await admin.close()
    return report


async def _check_existing(
    admin: AIOKafkaAdminClient, spec: TopicSpec, report: TopicsReport
) -> None:
    partitions: int | None = None
    for _ in range(_METADATA_RETRIES):
        # A topic created moments ago may not be in the broker's metadata yet.
        partitions = (await describe_partitions(admin, [spec.name])).get(spec.name)
        if partitions is not None:
            break
        await asyncio.sleep(0.1)
    if spec.role in ("journal", "control", "snapshots") and partitions != spec.partitions:
        report.problems.append(
            f"{spec.role} topic {spec.name!r} exists with {partitions} partitions; it must "
            f"have exactly {spec.partitions}"
        )
    elif partitions is not None and partitions != spec.partitions:
        report.warnings.append(
            f"{spec.role} topic {spec.name!r} exists with {partitions} partitions "
            f"(the config says {spec.partitions}); left as it is"
        )
    current = await _current_configs(admin, spec.name)
    for key, wanted in sorted(spec.configs.items()):
        have = current.get(key)
        if have == wanted:
            continue
        text = f"{spec.role} topic {spec.name!r}: {key}={have} (wanted {wanted})"
        if key in spec.required:
            report.problems.append(
                f"{text}: {_WHY_REQUIRED[spec.role]}. Fix it with kafka-configs "
                f"--alter --entity-type topics --entity-name {spec.name} "
                f"--add-config {key}={wanted}"
            )
        else:
            report.warnings.append(f"{text}; left as it is")


async def input_limit_warnings(admin: AIOKafkaAdminClient, config: Config) -> list[str]:
    """One line per input topic whose ``max.message.bytes`` cannot carry an input of
    ``limits.max_message_bytes``. A warning, not a refusal: the ledger stays correct (the
    broker refuses such inputs to their producers, who see the error); only the
    configured limit is not what it says."""
    wanted = config.limits.max_message_bytes
    warnings: list[str] = []
    for name in config.topics.inputs:
        try:
            have = (await _current_configs(admin, name)).get(_MAX_MESSAGE_BYTES)
        except Exception as exc:  # e.g. no DescribeConfigs ACL: only a check, never fatal
            warnings.append(f"input topic {name!r}: {_MAX_MESSAGE_BYTES} not readable ({exc!r})")
            continue
        if have is None or not have.isdigit() or int(have) >= wanted + _MIN_INPUT_FRAMING_BYTES:
            continue
        warnings.append(
            f"input topic {name!r} has {_MAX_MESSAGE_BYTES}={have}, below "
            f"limits.max_message_bytes ({wanted}) plus framing: the broker refuses inputs "
            f"between the two to their producers, so they reach neither the ledger nor "
            f"{config.topics.dlq!r}. Raise it (kafka-configs --alter --entity-type topics "
            f"--entity-name {name} --add-config {_MAX_MESSAGE_BYTES}="
            f"{wanted + _FRAMING_BYTES}) or lower limits.max_message_bytes"
        )
    return warnings
