"""The rules version of a Kafka ledger (SPEC §9 head) without a broker: the journal
messages a plan writes carry it (version 1 writes no header, as before versions
existed), the header reads back strictly, and the configured version is checked against
the one a journal topic recorded."""

from __future__ import annotations

import json

import msgspec
import pytest

from clearing.engine import Engine
from clearing.kafka import (
    HEADER_RULES,
    InputRecord,
    JournalChain,
    decode_journal_message,
    journal_rules_version,
    plan_batch,
)
from clearing.kafka._batch import HEADER_BLOCK
from clearing.kafka._recovery import ledger_rules_version
from clearing.ops.config import Config, ConfigError, load_config


def _inputs(count: int) -> list[InputRecord]:
    lines = [{"type": "deposit", "account": f"a{i}", "amount": "1"} for i in range(count)]
    return [
        InputRecord("adm", 0, i, i, None, json.dumps(line).encode()) for i, line in enumerate(lines)
    ]


def _journal_headers(rules_version: int, block_bytes: int | None = None) -> list[list]:
    plan = plan_batch(
        Engine(rules_version=rules_version),
        JournalChain(),
        _inputs(40),
        journal_topic="j",
        events_topic="e",
        dlq_topic="d",
        ledger_id="L",
        max_message_bytes=4096,
        journal_block_bytes=block_bytes,
    )
    for message in plan.journal:  # the records read back whatever the headers say
        assert decode_journal_message(message.value, message.headers)
    return [message.headers for message in plan.journal]


def test_a_version_2_plan_marks_every_journal_message() -> None:
    headers = _journal_headers(2, block_bytes=1000)
    assert len(headers) > 1  # several blocks: each one carries the version
    for message_headers in headers:
        assert (HEADER_RULES, b"2") in message_headers
        assert journal_rules_version(message_headers) == 2


def test_a_version_1_plan_writes_the_messages_it_wrote_before_versions() -> None:
    for message_headers in _journal_headers(1, block_bytes=1000):
        assert [name for name, _ in message_headers] == [HEADER_BLOCK]
        assert journal_rules_version(message_headers) == 1


@pytest.mark.parametrize(
    ("headers", "version"),
    [(None, 1), ([], 1), ([("clearing.block", b"3")], 1), ([(HEADER_RULES, b"2")], 2)],
)
def test_the_rules_header_reads_back(headers: list | None, version: int) -> None:
    assert journal_rules_version(headers) == version


@pytest.mark.parametrize("value", [b"", b"0", b"two", b"-2", b"2.0", b"12345", b"3", None])
def test_a_rules_header_that_is_not_a_version_is_refused(value: bytes | None) -> None:
    with pytest.raises(ValueError, match=HEADER_RULES):
        journal_rules_version([(HEADER_RULES, value)])  # type: ignore[list-item]


def _config(rules_version: int | None) -> Config:
    config = load_config(None, {"CLEARING_LEDGER_ID": "x"})
    engine = msgspec.structs.replace(config.engine, rules_version=rules_version)
    return msgspec.structs.replace(config, engine=engine)


def test_a_new_ledger_takes_the_configured_version_an_existing_one_its_own() -> None:
    assert ledger_rules_version(_config(None), "j", None) == 1
    assert ledger_rules_version(_config(2), "j", None) == 2
    assert ledger_rules_version(_config(None), "j", 2) == 2  # unset: the topic's
    assert ledger_rules_version(_config(1), "j", 1) == 1
    assert ledger_rules_version(_config(2), "j", 2) == 2


@pytest.mark.parametrize(("configured", "recorded"), [(1, 2), (2, 1)])
def test_a_configured_version_the_topic_did_not_record_is_refused(
    configured: int, recorded: int
) -> None:
    with pytest.raises(ConfigError) as caught:
        ledger_rules_version(_config(configured), "led.journal", recorded)
    message = str(caught.value)
    assert "\n" not in message
    assert f"engine.rules_version is {configured}" in message
    assert f"'led.journal' records rules version {recorded}" in message


@pytest.mark.parametrize("value", ["3", "0"])
def test_an_unknown_rules_version_is_a_one_line_config_error(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"CLEARING_LEDGER_ID": "x", "CLEARING_ENGINE_RULES_VERSION": value})
    assert "\n" not in str(caught.value)
    assert f"rules_version = {value}" in str(caught.value)
    config = load_config(None, {"CLEARING_LEDGER_ID": "x", "CLEARING_ENGINE_RULES_VERSION": "2"})
    assert config.engine.rules_version == 2
    assert load_config(None, {"CLEARING_LEDGER_ID": "x"}).engine.rules_version is None
