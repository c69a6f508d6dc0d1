"""The journal topic read back for recovery and the audit, without a broker: the native
core takes the topic's records as frame windows (``KafkaJournalReader.frame_windows``),
the Python core record by record (``read``), and both end in the writer's state and
outputs; damage (an altered, missing or duplicated record, a message that is not a
journal record, an input that recorded no outputs but derives some) stops both with the
same error after the same records; and recovery (``recover`` over the topic, its input
positions taken from ``on_records``) gives the same engine on both cores."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, cast

import pytest

from clearing.engine import EngineCore, make_engine, native_available
from clearing.engine.native import NativeEngine
from clearing.errors import KafkaJournalError, OutputDivergence
from clearing.journal import JournalReader, Record
from clearing.kafka._batch import encode_journal_block
from clearing.kafka._journal import KafkaJournalReader
from clearing.kafka._recovery import _TailPositions, input_positions
from clearing.ops.config import Config
from clearing.sequencer import JournalChain, decode_record, recover, replay, sequence
from testkit.journal_edits import rechained, with_fields
from tools.gen_events import generate

CORES = ("python", "native") if native_available() else ("python",)
ODD = [b"not json", b'{"type":"withdraw","account":"acct-0000003","amount":"99999999"}']
_CONFIG = cast(Config, types.SimpleNamespace(topics=types.SimpleNamespace(journal="journal")))
# More records than one frame window holds (_WINDOW_RECORDS), so windows follow on.
_RECORDS_N = 9_000


class Message(NamedTuple):
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _records() -> tuple[list[Record], str]:
    """A journal of ordinary and odd inputs from four input partitions, and the state
    the writer ended with."""
    payloads = list(generate(_RECORDS_N, 200, 3, seed=5))
    for i, odd in enumerate(ODD):
        payloads.insert(300 + 4_000 * i, odd)
    engine, chain = make_engine("python"), JournalChain()
    sources = [f"kafka:in-{i % 2}:{i % 4 // 2}:{i}" for i in range(len(payloads))]
    step = sequence(engine, chain, payloads, sources)
    return [decode_record(r) for r in step.records], engine.state_json().decode()


RECORDS, FINAL_STATE = _records()


def _topic(records: Sequence[Record], per_block: int = 700) -> list[Message | None]:
    """The journal topic's log: one block message per ``per_block`` records, each
    followed by its transaction's commit marker (an offset without a message)."""
    log: list[Message | None] = []
    for i in range(0, len(records), per_block):
        message = encode_journal_block("journal", records[i : i + per_block])
        log += [Message(message.value, list(message.headers)), None]
    return log


class _Topic(KafkaJournalReader):
    """A ``KafkaJournalReader`` over an in-memory log instead of a broker."""

    def __init__(
        self,
        log: list[Message | None],
        on_records: Callable[[list[Record]], None] | None = None,
    ) -> None:
        super().__init__(_CONFIG, on_records=on_records)
        self.log = log

    def _bounds(self) -> tuple[int, int]:
        return 0, len(self.log)

    def _fetch(
        self, start_offset: int, end_offset: int
    ) -> Iterator[tuple[int, bytes | None, Sequence[tuple[str, bytes]]]]:
        for offset in range(start_offset, end_offset):
            message = self.log[offset]
            if message is not None:
                yield offset, message.value, message.headers


@pytest.fixture
def window_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the native core's frame-window calls."""
    calls: list[int] = []
    if native_available():
        original = NativeEngine.replay_window

        def counted(self: NativeEngine, *args: Any) -> Any:
            calls.append(1)
            return original(self, *args)

        monkeypatch.setattr(NativeEngine, "replay_window", counted)
    return calls


def _replays_frames(engine: EngineCore) -> bool:
    return isinstance(engine, NativeEngine) and engine.replays_all_outputs_recorded


@pytest.mark.parametrize("core", CORES)
def test_the_topic_replays_to_the_writers_state_and_outputs(
    core: str, window_calls: list[int]
) -> None:
    reader = _Topic(_topic(RECORDS))
    assert isinstance(reader, JournalReader) and reader.all_outputs_recorded
    engine = make_engine(core)
    events: list[bytes] = []
    done = replay(reader, engine, on_events=events.append)
    assert done.inputs == len(RECORDS) == engine.seq
    assert engine.state_json().decode() == FINAL_STATE
    assert b"".join(events) == b"".join(r.outputs for r in RECORDS)
    # The native core takes windows, the records of one call per 1024 at most.
    assert len(window_calls) >= (len(RECORDS) // 1024 if _replays_frames(engine) else 0)
    assert bool(window_calls) == _replays_frames(engine)


@pytest.mark.parametrize("core", CORES)
def test_a_replay_from_an_anchored_seq_inside_a_message(core: str) -> None:
    """From a snapshot's seq: the anchor's message holds records before and after it."""
    log, middle = _topic(RECORDS), 5_000
    engine = make_engine("python")
    for record in RECORDS[:middle]:
        engine.apply_encoded(record.payload)
    engine = _on_core(engine, core)
    reader = _Topic(log)
    reader.anchor(middle, 2 * ((middle - 1) // 700))  # the offset of its block
    done = replay(reader, engine)
    assert done.inputs == len(RECORDS) - middle
    assert engine.state_json().decode() == FINAL_STATE


def _on_core(engine: EngineCore, core: str) -> EngineCore:
    """``engine``'s state on ``core``."""
    from clearing.engine import load_engine

    return load_engine(engine.dump_state(), core)


def _stopped(core: str, log: list[Message | None]) -> tuple[str, str, int, bytes]:
    """(error type, message, engine seq, outputs derived) once ``log`` stopped a
    replay on ``core``."""
    engine = make_engine(core)
    events: list[bytes] = []
    with pytest.raises((KafkaJournalError, OutputDivergence)) as raised:
        replay(_Topic(log), engine, on_events=events.append)
    return type(raised.value).__name__, str(raised.value), engine.seq, b"".join(events)


def _altered() -> list[Message | None]:
    records = list(RECORDS)
    records[6_500] = with_fields(
        records[6_500], payload=records[6_500].payload.replace(b"1", b"2", 1)
    )
    return _topic(records)


def _not_a_record() -> list[Message | None]:
    """Small blocks: the damaged message lies before the offsets the reader's search
    for the journal's end reads (which would find it before the replay)."""
    log = _topic(RECORDS, per_block=20)
    message = log[12]
    assert message is not None
    log[12] = message._replace(value=b"\x01garbage")
    return log


# The last input before seq 7000 with outputs: recorded as having none, it diverges.
_DIVERGES = max(r.seq for r in RECORDS[:7_000] if r.outputs)


def _empty_outputs() -> list[Message | None]:
    edit = lambda r: with_fields(r, outputs=b"") if r.seq == _DIVERGES else r  # noqa: E731
    return _topic(rechained(RECORDS, edit))


DAMAGE: dict[str, tuple[Callable[[], list[Message | None]], str, int]] = {
    # name: (the log, how the error starts, the seq the engine stops at)
    "altered": (_altered, "journal topic 'journal' offset 18: hash chain break at seq 6501", 6500),
    "missing": (
        lambda: _topic(RECORDS[:4_999] + RECORDS[5_000:]),
        "journal topic 'journal' offset 14: seq 5001 where 5000 was expected: records are missing",
        4999,
    ),
    "duplicated": (
        lambda: _topic(RECORDS[:5_000] + RECORDS[4_999:]),
        "journal topic 'journal' offset 14: seq 5000 where 5001 was expected: records are dup",
        5000,
    ),
    "not a record": (
        _not_a_record,
        "journal topic 'journal' offset 12: not a journal record",
        120,
    ),
    # The record that diverged is applied before the divergence is raised.
    "empty outputs": (_empty_outputs, f"journal seq {_DIVERGES}: re-derived outputs", _DIVERGES),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_stops_both_cores_alike(damage: str) -> None:
    make_log, start, seq = DAMAGE[damage]
    log = make_log()
    stops = {core: _stopped(core, log) for core in CORES}
    _, message, stopped_at, events = stops["python"]
    assert message.startswith(start), message
    assert stopped_at == seq
    assert events == b"".join(r.outputs for r in RECORDS[:seq])  # the diverging one's too
    assert all(stop == stops["python"] for stop in stops.values()), stops


@pytest.mark.parametrize("core", CORES)
def test_recovery_over_the_topic_gives_one_state_on_both_cores(
    core: str, window_calls: list[int]
) -> None:
    """``recover`` as ``recover_from_kafka`` runs it: no observer, the tail's input
    positions from ``on_records``."""
    tail = _TailPositions()
    reader = _Topic(_topic(RECORDS), on_records=tail.observe)
    result = recover(None, reader, core=core)
    assert result.replayed == len(RECORDS) == result.engine.seq
    assert result.engine.state_json().decode() == FINAL_STATE
    assert tail.positions == input_positions(RECORDS)
    assert bool(window_calls) == _replays_frames(result.engine)
