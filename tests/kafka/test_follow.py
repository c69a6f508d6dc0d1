"""The standby's journal follower without a broker: journal messages as the daemon writes
them, applied through the one replay loop (frame windows on the native core, records on
the Python core), with the same state, chain and input positions as the writer's; and
damage or a divergence (an input that recorded no outputs included) stops it with the
error that names the seq, after the records before it are applied."""

from __future__ import annotations

import types
from typing import Any, NamedTuple, cast

import pytest

from clearing.engine import EngineCore, make_engine, native_available
from clearing.engine.native import NativeEngine
from clearing.errors import JournalError, KafkaJournalError, OutputDivergence, RulesVersionMismatch
from clearing.journal import Record
from clearing.kafka._batch import encode_journal_block
from clearing.kafka._follow import JournalFollower, input_positions
from clearing.kafka._recovery import KafkaRecovery
from clearing.ops.config import Config
from clearing.sequencer import JournalChain, decode_record, sequence
from testkit.journal_edits import rechained, with_fields
from tools.gen_events import generate

CORES = ("python", "native") if native_available() else ("python",)
ODD = [b"not json", b'{"type":"withdraw","account":"acct-0000003","amount":"99999999"}']
_CONFIG = cast(Config, types.SimpleNamespace(topics=types.SimpleNamespace(journal="journal")))


class Message(NamedTuple):
    offset: int
    timestamp: int
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _records() -> tuple[list[Record], str]:
    """A journal of ordinary and odd inputs from four input partitions, and the state
    the writer ended with."""
    payloads = list(generate(1_200, 50, 3, seed=3))
    for i, odd in enumerate(ODD):
        payloads.insert(300 + 400 * i, odd)
    engine, chain = make_engine("python"), JournalChain()
    sources = [f"kafka:in-{i % 2}:{i % 4 // 2}:{i}" for i in range(len(payloads))]
    step = sequence(engine, chain, payloads, sources)
    return [decode_record(r) for r in step.records], engine.state_json().decode()


RECORDS, FINAL_STATE = _records()


def _messages(records: list[Record], per_block: int = 100) -> list[Message]:
    blocks = [records[i : i + per_block] for i in range(0, len(records), per_block)]
    out = []
    for offset, block in enumerate(blocks):
        message = encode_journal_block("journal", block)
        out.append(Message(offset, 1_000 + offset, message.value, message.headers))
    return out


def _follower(core: str) -> JournalFollower:
    recovery = KafkaRecovery(make_engine(core), JournalChain(), -1, {}, None, 0, 0, 0.0)
    return JournalFollower(_CONFIG, recovery)


@pytest.mark.parametrize("core", CORES)
def test_the_follower_ends_where_the_writer_did(core: str) -> None:
    follower = _follower(core)
    messages = _messages(RECORDS)
    applied = follower.apply_messages(messages[:3])
    applied += follower.apply_messages(messages[3:])
    assert applied == len(RECORDS) == follower.applied
    assert follower.engine.state_json().decode() == FINAL_STATE
    assert (follower.chain.last_seq, follower.chain.head_hash) == (
        RECORDS[-1].seq,
        RECORDS[-1].chain_hash,
    )
    assert follower.journal_offset == messages[-1].offset
    assert follower.last_record_ts_ms == messages[-1].timestamp
    # Each partition's last input (see ``_records``), plus one.
    expected = {(f"in-{i % 2}", i % 4 // 2): i + 1 for i in range(len(RECORDS))}
    assert follower.positions == expected == input_positions(RECORDS)


@pytest.mark.parametrize("core", CORES)
def test_records_already_applied_are_skipped(core: str) -> None:
    """The first message after a restart holds records applied before it."""
    follower = _follower(core)
    messages = _messages(RECORDS, per_block=7)
    follower.apply_messages(messages[:5])
    assert follower.apply_messages(messages[4:5]) == 0
    assert follower.apply_messages(messages[4:]) == len(RECORDS) - 35
    assert follower.engine.state_json().decode() == FINAL_STATE


@pytest.mark.skipif(not native_available(), reason="needs the native core")
def test_the_native_core_takes_the_frame_window_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = NativeEngine.replay_window

    def counted(self: NativeEngine, *args: Any) -> Any:
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(NativeEngine, "replay_window", counted)
    follower = _follower("native")
    engine = cast(NativeEngine, follower.engine)
    follower.apply_messages(_messages(RECORDS))
    assert bool(calls) == engine.replays_all_outputs_recorded
    assert follower.engine.state_json().decode() == FINAL_STATE


def _stops_at(core: str, records: list[Record], error: type[Exception], text: str) -> int:
    """The seq of the engine once ``records`` stopped the follower with ``error``."""
    follower = _follower(core)
    with pytest.raises(error, match=text):
        follower.apply_messages(_messages(records))
    engine: EngineCore = follower.engine
    return engine.seq


@pytest.mark.parametrize("core", CORES)
def test_an_altered_record_breaks_the_chain_at_its_seq(core: str) -> None:
    records = list(RECORDS)
    records[500] = with_fields(records[500], payload=records[500].payload.replace(b"1", b"2", 1))
    seq = _stops_at(core, records, KafkaJournalError, "^hash chain break at journal seq 501$")
    assert seq == 500


@pytest.mark.parametrize("core", CORES)
def test_a_missing_record_is_named(core: str) -> None:
    records = RECORDS[:700] + RECORDS[701:]
    seq = _stops_at(core, records, KafkaJournalError, "^journal seq 702 where 701 was expected$")
    assert seq == 700


@pytest.mark.parametrize("core", CORES)
def test_outputs_that_differ_stop_the_follower(core: str) -> None:
    index = next(i for i, r in enumerate(RECORDS) if r.outputs)
    records = rechained(
        RECORDS, lambda r: with_fields(r, outputs=b"{}\n") if r.seq == index + 1 else r
    )
    seq = _stops_at(core, records, OutputDivergence, f"^journal seq {index + 1}: re-derived")
    assert seq == index + 1


@pytest.mark.parametrize("core", CORES)
def test_an_input_that_recorded_no_outputs_must_derive_none(core: str) -> None:
    """The daemon records every input's outputs: an empty record is a claim too."""
    index = max(i for i, r in enumerate(RECORDS) if r.outputs)
    records = rechained(RECORDS, lambda r: with_fields(r, outputs=b"") if r.seq == index + 1 else r)
    seq = _stops_at(core, records, OutputDivergence, f"^journal seq {index + 1}: re-derived")
    assert seq == index + 1


@pytest.mark.parametrize("core", CORES)
def test_a_message_that_is_not_a_journal_record_is_named(core: str) -> None:
    messages = _messages(RECORDS)
    messages[2] = messages[2]._replace(value=b"\x01garbage")
    follower = _follower(core)
    with pytest.raises(KafkaJournalError, match=r"^journal topic 'journal' offset 2: not a"):
        follower.apply_messages(messages)


def test_a_record_of_another_rules_version_is_a_typed_error_not_a_broken_journal() -> None:
    """A standby that started a version-1 ledger on the empty topic meets the active's
    version-2 records: the follower says so (the daemon exits 1, a restart takes the
    topic's version); it neither applies them nor calls the journal broken (exit 4)."""
    blocks = [RECORDS[i : i + 100] for i in range(0, 300, 100)]
    messages = []
    for offset, block in enumerate(blocks):
        message = encode_journal_block("journal", block, rules_version=2)
        messages.append(Message(offset, 1_000 + offset, message.value, message.headers))
    follower = _follower("python")
    with pytest.raises(RulesVersionMismatch, match=r"offset 0 records rules version 2, ") as info:
        follower.apply_messages(messages)
    assert not isinstance(info.value, JournalError)
    assert follower.chain.last_seq == 0
