"""The live view: every number is labelled, amounts carry their unit, and the run is
paced so a person can watch the crash, only on a terminal and never with ``--fast``."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from clearing.cli import main
from clearing.demo import DemoOptions, SimConfig, Simulator, run_demo
from clearing.demo._live import UNIT, LiveView, Tally
from clearing.demo._pace import CRASH_WALL_SHARE, PACE_S, Pacer, should_pace
from clearing.demo._run import DemoResult
from clearing.engine import Engine
from clearing.engine.events import Adl


class FakeClock:
    """Wall time that moves only when the code under test sleeps (or work is simulated)."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.slept.append(seconds)
        self.now_s += seconds


def _rendered_lines(tally: Tally, engine: Engine) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=120, record=True, color_system=None)
    view = LiveView(console, "test", note="")
    try:
        panel = view.render(0.5, "0:30:00 / 1:00:00", "crash", 1234, 567.0, tally, engine)
    finally:
        view.close()
    console.print(panel)
    return [line.strip("│ ").rstrip() for line in console.export_text().splitlines()]


def test_every_number_in_the_live_view_has_a_label_and_amounts_a_unit() -> None:
    engine = Engine()
    tally = Tally()
    for line in Simulator(SimConfig.for_inputs(seed=4, accounts=200, inputs=1_500)):
        tally.observe(engine.apply(line))
    # Some of every layer, so no row is all zeros.
    tally.fund_draws, tally.fund_draw_e16 = 3, 12_345 * 10**16
    tally.clawbacks, tally.clawback_e16 = 2_000, 6_789 * 10**16
    tally.adls, tally.adl_e16 = 42, 4_321 * 10**16
    tally.bad_debts, tally.bad_debt_e16 = 1, 555 * 10**16
    lines = _rendered_lines(tally, engine)
    text = "\n".join(lines)
    status = next(line for line in lines if line.startswith("simulated time"))
    assert "phase crash" in status and "inputs 1,234 (567/s)" in status
    assert f"mark ({UNIT})" in text and f"open interest ({UNIT})" in text
    assert "insurance fund equity 300" not in text or UNIT in text
    fund_line = next(line for line in lines if line.startswith("insurance fund equity"))
    assert fund_line.split("   ")[0].endswith(f" {UNIT}")
    # The waterfall: every number sits under a column header that names it.
    header = next(line for line in lines if line.startswith("loss waterfall"))
    events_end = header.index("events") + len("events")
    amount_header = f"amount ({UNIT})"
    amount_end = header.index(amount_header) + len(amount_header)
    expected = {
        "fund draws": ("3", "12,345"),
        "clawbacks": ("2,000", "6,789"),
        "deleveraging": ("42", "4,321"),
        "bad debt": ("1", "555"),
    }
    for label, (count, amount) in expected.items():
        row = next(line for line in lines if line.startswith(label))
        assert row[events_end - len(count) : events_end] == count, row
        assert row[amount_end - len(amount) : amount_end] == amount, row
    liquidations = next(line for line in lines if line.startswith("liquidations"))
    assert liquidations[events_end - len(f"{tally.liquidations:,}") : events_end] == (
        f"{tally.liquidations:,}"
    )


def test_adl_hand_overs_are_tallied_with_what_they_paid() -> None:
    tally = Tally()
    paid = Adl(seq=8, account="s1", market="M", qty="-6", amount="12.5", cause="a")
    free = Adl(seq=8, account="s2", market="M", qty="-4", amount="0", cause="a")
    tally.observe([paid, free])
    assert (tally.adls, tally.adl_e16) == (2, 125 * 10**15)


@pytest.mark.parametrize(
    ("live", "fast", "paced"),
    [(True, False, True), (True, True, False), (False, False, False), (False, True, False)],
)
def test_pacing_decision(live: bool, fast: bool, paced: bool) -> None:
    assert should_pace(live=live, fast=fast) is paced


@pytest.mark.parametrize(
    ("tty", "flags", "pace_s"),
    [
        (False, [], None),  # piped or captured: never paced, so tests stay fast
        (True, [], PACE_S),
        (True, ["--fast"], None),
        (True, ["--no-live"], None),
    ],
)
def test_the_demo_command_paces_only_a_live_view_on_a_terminal(
    tty: bool,
    flags: list[str],
    pace_s: float | None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    seen: list[DemoOptions] = []

    def fake_run(options: DemoOptions, console: Console) -> DemoResult:
        seen.append(options)
        return DemoResult(str(tmp_path), str(tmp_path / "journal"), None, 0, "", 1.0, 0.0, None)

    monkeypatch.setattr("clearing.demo._run.run_demo", fake_run)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    assert main(["demo", "--dir", str(tmp_path / "d"), *flags]) == 0
    (options,) = seen
    assert options.pace_s == pace_s
    assert options.live is (tty and "--no-live" not in flags)


def test_the_schedule_slows_down_around_the_crash() -> None:
    pacer = Pacer(duration_s=3_600.0, crash_at_s=1_980.0, wall_s=30.0)
    assert pacer.wall_at(0.0) == 0.0
    assert pacer.wall_at(3_600.0) == pytest.approx(30.0)
    samples = [pacer.wall_at(s) for s in range(0, 3_601, 5)]
    assert samples == sorted(samples)
    window_wall_s = pacer.wall_at(1_995.0) - pacer.wall_at(1_970.0)
    assert window_wall_s == pytest.approx(30.0 * CRASH_WALL_SHARE)
    # The crash ticks (0, +3, +5, +8 simulated seconds) are seconds apart on screen.
    assert pacer.wall_at(1_983.0) - pacer.wall_at(1_980.0) > 1.0
    # The same simulated stretch outside the window flies by.
    assert pacer.wall_at(1_003.0) - pacer.wall_at(1_000.0) < 0.05


def test_wait_sleeps_only_when_ahead_of_the_schedule() -> None:
    clock = FakeClock()
    pacer = Pacer(3_600.0, 1_980.0, 30.0, clock=clock, sleep=clock.sleep)
    pacer.start()
    assert pacer.wait(0.0) == 0.0
    assert pacer.wait(1_800.0) == pytest.approx(pacer.wall_at(1_800.0))
    clock.now_s += 60.0  # a slow machine: far behind the schedule, it never waits
    assert pacer.wait(1_900.0) == 0.0
    assert clock.slept == [pytest.approx(pacer.wall_at(1_800.0))]


def test_a_paced_run_takes_the_wall_time_and_writes_the_same_journal(tmp_path: Path) -> None:
    small = {"seed": 4, "accounts": 300, "duration_s": 600.0, "live": False, "report": False}
    clock = FakeClock()
    config = SimConfig(seed=4, accounts=300, duration_s=600.0)
    crash_at_s = Simulator(config).crash_at_s
    pacer = Pacer(600.0, crash_at_s, 30.0, clock=clock, sleep=clock.sleep)
    paced = run_demo(DemoOptions(**small, directory=str(tmp_path / "p"), pace_s=30.0), None, pacer)
    assert sum(clock.slept) == pytest.approx(30.0, abs=0.5)
    # A frame every quarter second of the schedule (about 120), where unpaced the whole
    # run is three batches of 500 inputs and the crash is inside one of them.
    assert len(clock.slept) >= 60
    fast = run_demo(DemoOptions(**small, directory=str(tmp_path / "f")))
    assert paced.head_hash_hex == fast.head_hash_hex
    assert paced.inputs == fast.inputs


def test_deposits_to_the_fund_are_counted_when_accepted() -> None:
    engine = Engine()
    tally = Tally()
    inputs = [
        b'{"type":"deposit","account":"insurance-fund","amount":"250.5"}',
        b'{"type":"deposit","account":"alice","amount":"100"}',
        b'{"type":"deposit","account":"insurance-fund","amount":"-3"}',  # rejected
        b'{"type":"withdraw","account":"insurance-fund","amount":"1"}',  # rejected
        b'{"type":"deposit","account":"insurance-fund","amount":7}',
    ]
    outputs = [event for raw in inputs for event in engine.apply(raw)]
    tally.observe(outputs)
    tally.observe_inputs(1, inputs, outputs)
    assert (tally.fund_deposits, tally.fund_deposit_e16) == (2, 2575 * 10**15)
    assert tally.last_event == f"seq 5: 7 {UNIT} deposited to the insurance fund"
    lines = _rendered_lines(tally, engine)
    assert f"deposits to the fund 258 {UNIT} (2 deposits)" in lines
