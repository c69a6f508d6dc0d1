"""The deterministic fault simulation (testkit/simulator.py, run by tools/simulate.py),
CI-sized: a few seeds, ~20k inputs.

The long run is ``python tools/simulate.py --seeds 1-500 --jobs 2`` (10M inputs); see
RELIABILITY.md for its latest figures."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import testkit.simulator as simulate
from clearing.engine.native import native_available
from testkit.simulator import SeedResult, Simulation, run_seed

# Seeds picked for coverage: between them they crash inside writes, tear tails on power
# loss, hit ENOSPC/EIO, damage snapshots, restart cleanly and redeliver.
CI_SEEDS = (1, 11, 4)


def test_ci_seeds_hold_every_property(tmp_path: Path) -> None:
    results = [run_seed(seed, 6_500, str(tmp_path)) for seed in CI_SEEDS]
    for result in results:
        assert result.failure is None, result.failure
    faults: Counter[str] = Counter()
    outputs: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    for result in results:
        faults.update(result.faults)
        outputs.update(result.outputs)
        checks.update(result.checks)
    assert sum(r.events for r in results) >= 19_500
    assert sum(r.redelivered for r in results) > 0
    for fault in ("crash_between_batches", "crash_before_ack", "clean_restart"):
        assert faults[fault] > 0, fault
    assert faults["enospc_in_write"] + faults["eio_in_write"] + faults["crash_in_write"] > 0
    for output in ("Liquidation", "FundDraw", "Clawback", "BadDebt", "Reject"):
        assert outputs[output] > 0, output
    for check in ("recovered_state_equals_shadow", "live_state_equals_shadow",
                  "final_full_replay_equals_shadow", "records_read_back"):  # fmt: skip
        assert checks[check] > 0, check
    # Nothing was left behind.
    assert not list(tmp_path.iterdir())


def _summary(result: SeedResult) -> tuple[object, ...]:
    return (
        result.events,
        result.redelivered,
        result.steps,
        sorted(result.faults.items()),
        sorted(result.outputs.items()),
        sorted(result.rejects.items()),
        sorted(result.recoveries.items()),
    )


def test_a_seed_replays_identically(tmp_path: Path) -> None:
    first = run_seed(4, 2_500, str(tmp_path))
    second = run_seed(4, 2_500, str(tmp_path))
    assert first.failure is None
    assert _summary(first) == _summary(second)


def test_the_simulator_notices_a_lost_acknowledged_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks have teeth: a 'crash' that also loses the newest acknowledged record
    (the bug the whole suite is about) is reported, with the seed to reproduce it."""
    real_drop = Simulation.drop

    def lossy_drop(self: Simulation) -> None:
        journal = self.up_journal()
        if not self.inflight and journal.last_seq > 100:
            segment = journal.segments()[-1]
            record_start = _last_frame_start(Path(segment.path))
            real_drop(self)
            with open(segment.path, "r+b") as f:
                f.truncate(record_start)
            return
        real_drop(self)

    monkeypatch.setattr(simulate.Simulation, "drop", lossy_drop)
    result = run_seed(1, 6_000, str(tmp_path))
    assert result.failure is not None
    assert "acknowledged inputs lost" in result.failure
    assert result.failure.startswith("seed 1 step ")


def _last_frame_start(segment: Path) -> int:
    data = segment.read_bytes()
    offset = 52
    while True:
        end = offset + 14 + int.from_bytes(data[offset + 2 : offset + 6], "big")
        if end >= len(data):
            return offset
        offset = end


def test_the_simulator_drives_the_daemons_sequencer_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every input the simulator journals goes through ``Sequencer.step``'s batch step,
    the one the Kafka daemon's planner runs: counted here by wrapping that step."""
    from clearing.engine import Engine
    from clearing.kafka import InputRecord, JournalChain, plan_batch
    from clearing.sequencer import _sequencer

    stepped: list[int] = []
    real = _sequencer.sequence

    def counted(engine: object, chain: object, payloads: list[bytes], sources: list[str]) -> object:
        stepped.append(len(payloads))
        return real(engine, chain, payloads, sources)  # type: ignore[arg-type]

    monkeypatch.setattr(_sequencer, "sequence", counted)
    result = run_seed(4, 1_500, str(tmp_path))
    assert result.failure is None, result.failure
    # Crashes before an acknowledgement re-send inputs, so at least every acknowledged one.
    assert sum(stepped) >= result.events > 0
    before = len(stepped)
    deposit = b'{"type":"deposit","account":"a","amount":"1"}'
    plan = plan_batch(
        Engine(),
        JournalChain(),
        [InputRecord("in", 0, 0, 0, None, deposit)],
        journal_topic="j",
        events_topic="e",
        dlq_topic="d",
        ledger_id="L",
        max_message_bytes=1000,
    )
    assert plan.last_seq == 1 and stepped[before:] == [1]


@pytest.mark.skipif(not native_available(), reason="clearing_native is not installed")
def test_a_seed_runs_the_same_on_the_native_fast_path(tmp_path: Path) -> None:
    """On the native core the sequencer applies and journals whole runs inside Rust
    (``journal_run``, the daemon's fast path): same seed, same faults, same outcomes, and
    every step checked against the Python shadow."""
    python = run_seed(11, 2_000, str(tmp_path))
    native = run_seed(11, 2_000, str(tmp_path), core="native")
    assert python.failure is None and native.failure is None, native.failure
    assert _summary(native) == _summary(python)
    assert native.checks["native_state_equals_shadow"] == native.checks["invariants"] > 0
