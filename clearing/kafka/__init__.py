"""The Kafka adapter: the daemon (consume -> journal -> apply -> emit, exactly once per
input, one transaction per batch), the journal topic reader, recovery and topic setup.

``Daemon`` is the loop; ``run_command``/``topics_command`` are the ``clearing run`` and
``clearing topics create`` commands; ``KafkaJournalReader`` reads the journal topic back,
verified (for recovery and audits); ``plan_batch`` is the pure part of a batch and
documents the message layout of the journal, events and DLQ topics.
"""

from clearing.kafka._batch import (
    HEADER_INDEX,
    HEADER_RULES,
    HEADER_SEQ,
    OVERSIZED,
    BatchPlan,
    Consumed,
    InputBuffer,
    InputRecord,
    JournalChain,
    OutMessage,
    decode_journal_message,
    decode_journal_value,
    encode_journal_block,
    encode_journal_value,
    journal_rules_version,
    order_records,
    parse_source,
    plan_batch,
    source_of,
)
from clearing.kafka._commands import run_command, run_daemon, topics_command
from clearing.kafka._connect import EXIT_UNREACHABLE
from clearing.kafka._daemon import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_FENCED,
    EXIT_OK,
    EXIT_RECOVERY,
    EXIT_SHUTDOWN_TIMEOUT,
    BeforeCommit,
    Daemon,
    DaemonExit,
)
from clearing.kafka._journal import JournalTail, KafkaJournalError, KafkaJournalReader
from clearing.kafka._recovery import KafkaRecovery, recover_from_kafka
from clearing.kafka._topics import TopicSpec, TopicsReport, create_topics, topic_specs

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_FENCED",
    "EXIT_OK",
    "EXIT_RECOVERY",
    "EXIT_SHUTDOWN_TIMEOUT",
    "EXIT_UNREACHABLE",
    "HEADER_INDEX",
    "HEADER_RULES",
    "HEADER_SEQ",
    "OVERSIZED",
    "BatchPlan",
    "BeforeCommit",
    "Consumed",
    "Daemon",
    "DaemonExit",
    "InputBuffer",
    "InputRecord",
    "JournalChain",
    "JournalTail",
    "KafkaJournalError",
    "KafkaJournalReader",
    "KafkaRecovery",
    "OutMessage",
    "TopicSpec",
    "TopicsReport",
    "create_topics",
    "decode_journal_message",
    "decode_journal_value",
    "encode_journal_block",
    "encode_journal_value",
    "journal_rules_version",
    "order_records",
    "parse_source",
    "plan_batch",
    "recover_from_kafka",
    "run_command",
    "run_daemon",
    "source_of",
    "topic_specs",
    "topics_command",
]
