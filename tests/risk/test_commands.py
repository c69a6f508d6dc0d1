"""``clearing stress`` / ``clearing risk``: bad arguments are one line and exit 2; the
risk report is the statistics of what each scenario does in the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.engine import load_engine
from clearing.risk import apply_scenario, tail
from clearing.risk._adequacy import LEVELS
from clearing.risk._history import horizon_scenarios, to_moves
from clearing.risk._outcome import parse_e16
from clearing.risk._source import load_ledger, oracle_history
from clearing.snapshot import write_snapshot
from tests.risk.ledger import ledger_inputs


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("risk")
    inputs = root / "ledger.jsonl"
    inputs.write_bytes(b"".join(line + b"\n" for line in ledger_inputs()))
    assert main(["ingest", str(inputs), "--journal", str(root / "journal")]) == 0
    return root / "journal"


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str, needle: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"clearing {command}: error: "), err
    assert needle in err, err


@pytest.mark.parametrize(
    ("shock", "needle"),
    [
        ("DOGE-PERP=-30%", "no such market in the ledger; markets: BTC-PERP, ETH-PERP"),
        ("BTC-PERP=-100%", "-100% or more"),
        ("BTC-PERP=-250%", "-100% or more"),
        ("BTC-PERP=-30", "expected MARKET=PERCENT%"),
        ("BTC-PERP", "expected MARKET=PERCENT%"),
    ],
)
def test_bad_shocks_are_one_line_exit_2(
    journal: Path, capsys: pytest.CaptureFixture[str], shock: str, needle: str
) -> None:
    capsys.readouterr()
    assert main(["stress", str(journal), "--shock", shock]) == 2
    _one_line_error(capsys, "stress", needle)


def test_a_market_shocked_twice_is_refused(
    journal: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["stress", str(journal), "--shock", "BTC-PERP=-1%", "--shock", "BTC-PERP=-2%"]
    assert main(argv) == 2
    _one_line_error(capsys, "stress", "given twice")


def test_an_empty_ledger_has_nothing_to_shock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert main(["ingest", str(empty), "--journal", str(tmp_path / "j")]) == 0
    capsys.readouterr()
    assert main(["stress", str(tmp_path / "j"), "--shock", "BTC-PERP=-30%"]) == 2
    _one_line_error(capsys, "stress", "no market with a mark price")
    assert main(["risk", str(tmp_path / "j"), "--horizon", "1h"]) == 2
    _one_line_error(capsys, "risk", "no market with a mark price")


def test_missing_source_and_bad_until(journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["stress", str(journal / "nope"), "--shock", "BTC-PERP=-1%"]) == 2
    _one_line_error(capsys, "stress", "no such file or directory")
    assert main(["stress", str(journal), "--shock", "BTC-PERP=-1%", "--until", "99999"]) == 2
    _one_line_error(capsys, "stress", "the journal ends at seq")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--horizon", "1x"], "expected a positive duration"),
        (["--horizon", "0s"], "expected a positive duration"),
        (["--horizon", "1h"], "shorter than one --horizon 1h"),
        (["--horizon", "5s", "--scale", "-1"], "expected a positive number"),
        (["--horizon", "5s", "--scenarios", "0"], "give 1 or more"),
    ],
)
def test_bad_risk_arguments_are_one_line_exit_2(
    journal: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    capsys.readouterr()
    assert main(["risk", str(journal), *extra]) == 2
    _one_line_error(capsys, "risk", needle)


def test_stress_reads_a_snapshot_but_risk_needs_the_history(
    journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = load_ledger(str(journal), None, "python")
    path = write_snapshot(str(tmp_path), ledger.engine.dump_state(), ledger.seq, b"\0" * 32)
    capsys.readouterr()
    assert main(["stress", str(path), "--shock", "BTC-PERP=-8%", "--json"]) == 0
    from_snapshot = json.loads(capsys.readouterr().out)
    assert main(["stress", str(journal), "--shock", "BTC-PERP=-8%", "--json"]) == 0
    from_journal = json.loads(capsys.readouterr().out)
    assert {**from_snapshot, "source": ""} == {**from_journal, "source": ""}
    assert main(["risk", str(path), "--horizon", "5s"]) == 2
    _one_line_error(capsys, "risk", "holds no oracle history")


def test_risk_is_the_tail_of_each_scenarios_engine_run(
    journal: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every scenario re-run by hand, in process, on a fresh copy of the ledger: the
    report's VaR and ES are those of these fund draws."""
    argv = ["risk", str(journal), "--horizon", "4s", "--step", "1s", "--scale", "12", "--json"]
    capsys.readouterr()
    assert main([*argv, "--core", "python"]) == 0
    report = json.loads(capsys.readouterr().out)
    ledger = load_ledger(str(journal), None, "python")
    marks = {m.market: m.mark_e8 for m in ledger.engine.summary().markets if m.mark_e8}
    ticks = list(oracle_history(str(journal), ledger.seq))
    state = ledger.engine.dump_state()
    draws, clawed, fell = [], [], []
    for scenario in horizon_scenarios(ticks, marks, 4 * 10**9, 10**9):
        copy = load_engine(state, "python")
        outcome = apply_scenario(
            copy, to_moves(scenario, marks, 12), measure_fund=True, keep_events=False
        )
        assert outcome.fund_equity_before_e16 is not None
        assert outcome.fund_equity_after_e16 is not None
        fell.append(max(0, outcome.fund_equity_before_e16 - outcome.fund_equity_after_e16))
        draws.append(outcome.total.fund_draw_e16)
        clawed.append(outcome.total.clawback_e16 + outcome.total.adl_e16)
    assert report["scenarios"] == len(draws) and max(draws) > 0
    for level, name in zip(LEVELS, ("99", "99.9"), strict=True):
        assert report["fund_draws"][name]["es_e16"] == tail(draws, level).es
        assert report["fund_draws"][name]["var_e16"] == tail(draws, level).var
        assert report["clawback_and_adl"][name]["es_e16"] == tail(clawed, level).es
        assert report["fund_equity_loss"][name]["es_e16"] == tail(fell, level).es
    fund = parse_e16(report["fund_equity"])
    es999 = tail(draws, LEVELS[1]).es
    assert report["coverage_ratio"] == f"{fund / es999:.4f}"
    assert max(fell) > 0
    assert report["equity_coverage_ratio"] == f"{fund / tail(fell, LEVELS[1]).es:.4f}"


def test_risk_is_deterministic_for_a_seed(
    journal: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["risk", str(journal), "--horizon", "3s", "--step", "1s", "--scale", "10"]
    outputs = []
    for seed in ("5", "5", "6"):
        capsys.readouterr()
        assert main([*argv, "--scenarios", "40", "--seed", seed, "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]
    assert outputs[0]["scenarios"] == 40 and outputs[0]["intervals_available"] > 40
    assert {**outputs[2], "seed": 5} != outputs[0]  # another seed, another sample


def test_the_grid_is_one_stress_per_market_and_move(
    journal: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["stress", str(journal), "--grid", "--json", "--core", "python"]) == 0
    grid = json.loads(capsys.readouterr().out)["grid"]
    assert [(r["market"], r["move"]) for r in grid][:3] == [
        ("BTC-PERP", "-50.00%"),
        ("BTC-PERP", "-30.00%"),
        ("BTC-PERP", "-20.00%"),
    ]
    assert len(grid) == 16
    for row in (grid[2], grid[8]):  # BTC-PERP -20%, ETH-PERP -50%
        pct = row["move"].replace(".00", "")
        assert main(["stress", str(journal), "--shock", f"{row['market']}={pct}", "--json"]) == 0
        single = json.loads(capsys.readouterr().out)
        assert row["fund_draw"] == single["total"]["fund_draw"] != "0"
        assert row["liquidations"] == single["total"]["liquidations"]
        assert row["fund_equity_after"] == single["fund_equity_after"]


def test_grid_and_shock_together_are_refused(
    journal: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["stress", str(journal), "--grid", "--shock", "BTC-PERP=-1%"]) == 2
    _one_line_error(capsys, "stress", "or --grid (not both)")


@pytest.mark.parametrize("command", [["stress", "--grid"], ["risk", "--horizon", "5s"]])
def test_config_is_for_kafka_sources_only(
    journal: Path, tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "clearing.toml"
    config.write_text("")
    argv = [command[0], str(journal), *command[1:], "--config", str(config)]
    assert main(argv) == 2
    _one_line_error(capsys, command[0], "--config applies to kafka:// sources only")
