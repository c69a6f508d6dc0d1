"""Which input types an input topic takes: all of them (docs/operations.md, "Topics")."""

from __future__ import annotations

from clearing.engine import Engine
from clearing.kafka import InputRecord, JournalChain, plan_batch

MARKET = b'{"type":"market","market":"M","imr":"0.5","mmr":"0.1","liq_fee":"0"}'
DEPOSIT = b'{"type":"deposit","account":"a","amount":"10"}'
FILL = (
    b'{"type":"fill","fill_id":"f1","market":"M","price":"10","qty":"1","buyer":"a","seller":"b"}'
)
ORACLE = b'{"type":"oracle","market":"M","price":"11"}'


def test_any_input_topic_accepts_any_input_type() -> None:
    """Topic names are a convention for producers and ACLs: the engine decides by the
    input's ``type`` alone. Every type on every topic is applied, none dead-lettered,
    with the same outputs as the same inputs on their conventional topics."""
    stream = [MARKET, DEPOSIT, DEPOSIT.replace(b'"a"', b'"b"'), FILL, ORACLE]
    outputs = set()
    for topic in ("clearing.fills", "clearing.oracle", "clearing.book", "clearing.admin"):
        records = [InputRecord(topic, 0, i, 1_000 + i, None, v) for i, v in enumerate(stream)]
        plan = plan_batch(
            Engine(), JournalChain(), records, journal_topic="j", events_topic="e",
            dlq_topic="dlq", ledger_id="L", max_message_bytes=4096,
        )  # fmt: skip
        assert plan.dlq == [] and plan.rejects == 0
        assert len(plan.applied) == len(stream)
        outputs.add(tuple(m.value for m in plan.events))
    assert len(outputs) == 1  # the topic changed nothing
