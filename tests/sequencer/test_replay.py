"""The one replay loop (``clearing.sequencer.replay``): its frame-window path (the native
core verifying and applying journal frames) and its per-record path give the same
outputs, state, divergences and damage reports on both cores, for a local journal and
for any reader satisfying ``JournalReader``; and an edited record whose CRC was fixed up
is caught by the hash chain on every path, named by its seq."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearing.audit.replay import encode_state
from clearing.cli import main
from clearing.engine import Engine, make_engine, native_available
from clearing.engine.native import NativeEngine
from clearing.journal import (
    GENESIS_HASH,
    JournalCorrupt,
    JournalReader,
    LocalJournal,
    Record,
    chain_hash,
    hash_at,
)
from clearing.journal._format import SEGMENT_HEADER_BYTES, encode_frame, read_frame
from clearing.sequencer import (
    OutputDivergence,
    ReplayObserver,
    encode_outputs,
    join_outputs,
    recover,
    replay,
)
from clearing.sequencer import _replay as replay_loop
from tools.gen_events import generate

ROOT = Path(__file__).resolve().parents[2]
NATIVE_LOOP = native_available() and NativeEngine().replays_frames
CORES = ("python", "native") if native_available() else ("python",)
needs_native = pytest.mark.skipif(
    not NATIVE_LOOP and not os.environ.get("CI"), reason="needs the native core"
)

# Inputs the native fast parser defers or the core refuses, among ordinary ones.
ODD = [
    b'{"type":"deposit","account":"a\\u0031","amount":"5"}',
    b"not json",
    b'{"type":"withdraw","account":"a3","amount":"99999999"}',
    b'{"type":"oracle","market":"M0","price":"1.5e3"}',
]


def _inputs() -> list[bytes]:
    lines = list(generate(1_500, 120, 3, seed=5))
    for i, odd in enumerate(ODD):
        lines.insert(200 + 301 * i, odd)
    worked = (ROOT / "docs/examples/worked-example.jsonl").read_bytes().split(b"\n")
    return lines + [line for line in worked if line.strip()]


def _journal(path: Path, wrong_outputs: frozenset[int] = frozenset()) -> list[Record]:
    """Journal the inputs with the Python core's outputs (wrong ones at some seqs), in
    several segments; return the records."""
    engine = Engine()
    records = []
    for seq, raw in enumerate(_inputs(), start=1):
        outputs = encode_outputs(engine.apply(raw))
        if seq in wrong_outputs:
            outputs = b'{"type":"bogus"}\n'
        records.append(Record(seq, f"file:inputs.jsonl:{seq}", raw, outputs))
    with LocalJournal(str(path), segment_bytes=48 * 1024) as journal:
        for i in range(0, len(records), 89):
            journal.append(records[i : i + 89])
    assert len([p for p in os.listdir(path) if p.endswith(".seg")]) > 3
    return records


def _expected(records: list[Record], until: int) -> tuple[bytes, bytes]:
    """Outputs and state of the inputs applied one by one to a fresh Python core: what
    any replay must give."""
    engine = Engine()
    events = b"".join(join_outputs(engine.apply_encoded(r.payload)) for r in records[:until])
    return events, encode_state(engine)


class _Everything(ReplayObserver):
    """An observer that sees every record (and so forces the per-record path)."""

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def after(self, record: Record, events: list[bytes], derived: bytes) -> None:
        self.seqs.append(record.seq)


class _ListReader:
    """A reader with no frame windows (as the Kafka journal reader): verified records."""

    def __init__(self, records: list[Record]) -> None:
        self._records = records

    @property
    def last_seq(self) -> int:
        return len(self._records)

    @property
    def head_hash(self) -> bytes:
        return self._records[-1].chain_hash if self._records else GENESIS_HASH

    @property
    def rules_version(self) -> int:
        return 1

    def hash_at(self, seq: int) -> bytes:
        return self._records[seq - 1].chain_hash if seq else GENESIS_HASH

    def read(self, from_seq: int = 1, until_seq: int | None = None) -> Iterator[Record]:
        last = self.last_seq if until_seq is None else min(until_seq, self.last_seq)
        prev = self.hash_at(from_seq - 1)
        for record in self._records[from_seq - 1 : last]:
            digest = chain_hash(
                prev, record.seq, record.source.encode(), record.payload, record.outputs
            )
            assert digest == record.chain_hash
            yield record
            prev = digest


def _ways(path: Path) -> Iterator[tuple[str, str, bool]]:
    """(name, core, with an observer) of every way through the loop."""
    for core in CORES:
        yield f"{core} windows" if core == "native" else core, core, False
        yield f"{core} per record", core, True


@pytest.mark.parametrize("batch", [1, 7, 1024])
def test_every_path_gives_the_outputs_and_state_of_applying_the_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    monkeypatch.setattr(replay_loop, "WINDOW_BATCH_RECORDS", batch)
    records = _journal(tmp_path / "j")
    with LocalJournal(str(tmp_path / "j"), readonly=True) as journal:
        for until in (None, 1, 640):
            want_events, want_state = _expected(records, until or len(records))
            for name, core, per_record in _ways(tmp_path):
                engine = make_engine(core)
                observer = _Everything() if per_record else None
                chunks: list[bytes] = []
                done = replay(
                    journal, engine, until_seq=until, observer=observer, on_events=chunks.append
                )
                assert b"".join(chunks) == want_events, name
                assert encode_state(engine) == want_state, name
                assert done.inputs == engine.seq == (until or len(records)), name
                assert done.events == want_events.count(b"\n"), name
                assert done.divergences == 0 and done.first_divergence is None
                if observer is not None:
                    assert observer.seqs == list(range(1, engine.seq + 1)), name


def test_a_reader_without_frame_windows_replays_record_by_record(tmp_path: Path) -> None:
    records = _journal(tmp_path / "j")
    with LocalJournal(str(tmp_path / "j"), readonly=True) as journal:
        stored = list(journal.read())
    reader = _ListReader(stored)
    assert isinstance(reader, JournalReader)
    want_events, want_state = _expected(records, len(records))
    for core in CORES:
        engine = make_engine(core)
        chunks: list[bytes] = []
        done = replay(reader, engine, on_events=chunks.append)
        assert b"".join(chunks) == want_events and encode_state(engine) == want_state
        assert done.inputs == len(records)
        # From the middle: the engine's seq says where the replay starts.
        engine = make_engine(core)
        replay(reader, engine, until_seq=500)
        replay(reader, engine)
        assert encode_state(engine) == want_state


def test_divergences_stop_the_replay_or_are_counted_on_every_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_loop, "WINDOW_BATCH_RECORDS", 64)
    # 201 is a deferred input on the native core (Python writes its reject).
    wrong = frozenset({40, 201, 900, 901})
    _journal(tmp_path / "j", wrong)
    with LocalJournal(str(tmp_path / "j"), readonly=True) as journal:
        for name, core, per_record in _ways(tmp_path):
            observer = _Everything() if per_record else None
            with pytest.raises(OutputDivergence, match=r"^journal seq 40: ") as caught:
                replay(journal, make_engine(core), observer=observer)
            assert caught.value.recorded == b'{"type":"bogus"}\n', name
            done = replay(journal, make_engine(core), stop_at_divergence=False, observer=observer)
            assert done.divergences == len(wrong), name
            assert done.first_divergence is not None and done.first_divergence.seq == 40
            done = replay(journal, make_engine(core), verify=False, observer=observer)
            assert done.divergences == 0 and done.inputs == journal.last_seq, name


# -- an edited record whose CRC was fixed up ----------------------------------------------


def _forge(journal_dir: Path, seq: int, rechain: bool) -> None:
    """Change record ``seq``'s payload in place and fix its frame's CRC up (and, with
    ``rechain``, its stored chain hash too, as a forger who knows the format would)."""
    with LocalJournal(str(journal_dir), readonly=True) as journal:
        segment = next(s for s in journal.segments() if s.first_seq <= seq <= s.last_seq)
    data = Path(segment.path).read_bytes()
    offset = SEGMENT_HEADER_BYTES
    prev = data[16:48]  # the segment header's prev_hash
    for at in range(segment.first_seq, seq + 1):
        record, after = read_frame(data, offset, len(data), at, prev)
        if at < seq:
            offset, prev = after, record.chain_hash
    payload = record.payload.replace(b"}", b',"note":"x"}', 1)
    assert payload != record.payload
    digest = record.chain_hash
    if rechain:
        digest = chain_hash(prev, seq, record.source.encode(), payload, record.outputs)
    forged = encode_frame(Record(seq, record.source, payload, record.outputs, digest))
    Path(segment.path).write_bytes(data[:offset] + forged + data[after:])


@pytest.mark.parametrize("rechain", [False, True])
def test_an_edited_record_with_a_fixed_up_crc_breaks_the_chain_on_every_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rechain: bool
) -> None:
    journal_dir = tmp_path / "j"
    _journal(journal_dir)
    with LocalJournal(str(journal_dir), readonly=True) as journal:
        second = journal.segments()[1]
    seq = (second.first_seq + second.last_seq) // 2
    _forge(journal_dir, seq, rechain)
    # A forger who recomputed the record's own hash breaks the chain one record later.
    broken = seq + 1 if rechain else seq
    message = f"hash chain break at seq {broken}"

    # Opening with a full scan refuses the journal; a tail open leaves the earlier
    # segments to the replay, which must find the break on every path.
    with pytest.raises(JournalCorrupt, match=message):
        LocalJournal(str(journal_dir), readonly=True)
    with LocalJournal(str(journal_dir), readonly=True, scan_mode="tail") as journal:
        assert journal.last_seq > broken
        for name, core, per_record in _ways(tmp_path):
            engine = make_engine(core)
            observer = _Everything() if per_record else None
            with pytest.raises(JournalCorrupt, match=message):
                replay(journal, engine, observer=observer)
            assert engine.seq == broken - 1, name  # everything before it was applied
            with pytest.raises(JournalCorrupt, match=message):
                recover(None, journal, core=core)

    for core in CORES:
        capsys.readouterr()
        code = main(["replay", str(journal_dir), "-q", "--events", os.devnull, "--core", core])
        err = capsys.readouterr().err
        assert code == 1 and "CORRUPT: the journal is corrupt" in err and message in err, err
    code = main(["journal", "verify", str(journal_dir)])
    err = capsys.readouterr().err
    assert code == 1 and "CORRUPT: " in err and message in err, err


@needs_native
def test_the_native_window_path_is_the_one_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The native core replays a local journal through frame windows (the fast path the
    benchmarks measure), not record by record."""
    _journal(tmp_path / "j")
    calls: list[int] = []
    original = NativeEngine.replay_window

    def counted(self: NativeEngine, *args: object) -> object:
        calls.append(1)
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(NativeEngine, "replay_window", counted)
    with LocalJournal(str(tmp_path / "j"), readonly=True) as journal:
        engine = make_engine("native")
        replay(journal, engine)
        assert calls and engine.seq == journal.last_seq
        assert hash_at(journal, engine.seq) == journal.head_hash
