"""The one sequencer: its batch step on both cores, the local-journal sink that commits
it, and the upkeep schedule every writer asks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from clearing.demo._sim import SimConfig, Simulator
from clearing.engine import make_engine
from clearing.engine.native import native_available
from clearing.journal import LocalJournal
from clearing.sequencer import (
    JournalChain,
    Sequencer,
    SequencerBroken,
    UpkeepSchedule,
    encode_record,
)
from testkit.storage import FaultyStorage

needs_native = pytest.mark.skipif(not native_available(), reason="clearing_native is not installed")


def _inputs(count: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """A demo stream (liquidations, rejects, clawbacks) with a few escaped strings, which
    the native core's parser hands back to Python (the per-input path inside a run)."""
    lines = list(Simulator(SimConfig.for_inputs(seed=seed, accounts=60, inputs=count)))
    rng = random.Random(seed)
    half = len(lines) // 2
    for i in rng.sample(range(half, len(lines)), min(5, len(lines) - half)):
        lines[i] = b'{"type":"deposit","account":"\\u0061x","amount":"5"}'
    return [(f"test:{n}", line) for n, line in enumerate(lines, start=1)]


@needs_native
def test_the_step_writes_the_same_records_on_both_cores() -> None:
    inputs = _inputs(2_000)
    steps = []
    for core in ("python", "native"):
        sequencer = Sequencer(make_engine(core), chain=JournalChain())
        done = [
            sequencer.step([raw for _, raw in chunk], [source for source, _ in chunk])
            for chunk in (inputs[:700], inputs[700:])
        ]
        steps.append([(s.first_seq, s.records, s.outputs, s.head_hash) for s in done])
    assert steps[0] == steps[1]
    assert steps[0][1][0] == 701 and any(outputs for _, _, outputs, _ in steps[0])


@pytest.mark.parametrize("core", ["python", pytest.param("native", marks=needs_native)])
def test_submit_commits_exactly_the_steps_records(tmp_path: Path, core: str) -> None:
    inputs = _inputs(600)
    twin = Sequencer(make_engine(core), chain=JournalChain())
    expected = twin.step([raw for _, raw in inputs], [source for source, _ in inputs])
    sequencer, _ = Sequencer.open_local(str(tmp_path / "j"), None, fsync="never", core=core)
    try:
        for begin in range(0, len(inputs), 250):
            sequencer.submit(inputs[begin : begin + 250])
        assert sequencer.journal is not None
        records = [encode_record(r) for r in sequencer.journal.read()]
        assert sequencer.chain.head_hash == sequencer.journal.head_hash == expected.head_hash
    finally:
        sequencer.close(snapshot=False)
    assert records == expected.records


def test_a_failed_journal_write_breaks_the_sequencer(tmp_path: Path) -> None:
    disk = FaultyStorage(random.Random(1))
    journal = LocalJournal(tmp_path / "j", fsync="batch", storage=disk)
    sequencer = Sequencer(make_engine("python"), journal)
    inputs = _inputs(50)
    sequencer.submit(inputs[:10])
    disk.arm("eio_in_write")
    with pytest.raises(OSError):
        sequencer.submit(inputs[10:20])
    with pytest.raises(SequencerBroken, match="batch ending at seq 20 failed"):
        sequencer.submit(inputs[20:])
    with pytest.raises(SequencerBroken):
        sequencer.step([inputs[20][1]], [inputs[20][0]])
    sequencer.close()
    with LocalJournal(tmp_path / "j") as reopened:
        assert reopened.last_seq in range(10, 21)


def test_without_a_journal_the_caller_commits() -> None:
    sequencer = Sequencer(make_engine("python"), chain=JournalChain())
    with pytest.raises(TypeError, match="no local journal"):
        sequencer.submit(_inputs(3))
    sequencer.close()  # nothing to close: no error


def test_the_engine_and_the_journal_must_agree_on_the_seq() -> None:
    with pytest.raises(ValueError, match="engine at seq 0 but journal at 5"):
        Sequencer(make_engine("python"), chain=JournalChain(5))


def test_the_upkeep_schedule() -> None:
    schedule = UpkeepSchedule(100, snapshot_every_inputs=50, invariant_check_inputs=20,
                              last_snapshot_seq=80)  # fmt: skip
    assert schedule.due(119) == (False, False)
    assert schedule.due(120) == (False, True)
    schedule.checked(120)
    assert schedule.due(130) == (True, False)
    schedule.snapshot_attempted(130)
    assert schedule.due(179) == (False, True)
    assert schedule.due(180) == (True, True)
    nowhere = UpkeepSchedule(0, snapshot_every_inputs=None, invariant_check_inputs=10)
    assert nowhere.due(10**9) == (False, True)
