"""The background adequacy job: the same numbers as ``clearing risk``, from a forked
child, with the parent's engine untouched; and the bounded oracle history it is fed."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.engine import make_engine
from clearing.risk import Settings
from clearing.risk._job import AdequacyResult, OracleHistory, start_adequacy_job
from tests.risk.ledger import START_TS_NS, ledger_inputs

S = 10**9


def test_the_job_reports_what_clearing_risk_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "ledger.jsonl"
    inputs.write_bytes(b"".join(line + b"\n" for line in ledger_inputs()))
    assert main(["ingest", str(inputs), "--journal", str(tmp_path / "j"), "--core", "python"]) == 0
    capsys.readouterr()
    argv = ["risk", str(tmp_path / "j"), "--horizon", "4s", "--step", "1s", "--scale", "12"]
    assert main([*argv, "--json", "--core", "python"]) == 0
    report = json.loads(capsys.readouterr().out)

    engine, history = make_engine("python"), OracleHistory(window_ns=3600 * S)
    for raw in ledger_inputs():
        engine.apply_encoded(raw)
        history.observe(raw)
    state = engine.state_json()
    settings = Settings(horizon_ns=4 * S, step_ns=S, scale=Fraction(12))
    job = start_adequacy_job(engine, history.ticks(), settings)
    result = None
    for _ in range(600):  # the parent goes on working; it polls
        result = job.poll()
        if result is not None:
            break
        time.sleep(0.05)
    assert isinstance(result, AdequacyResult) and result.error is None
    assert engine.state_json() == state
    assert result.seq == report["seq"] and result.scenarios == report["scenarios"]
    assert result.coverage_ratio == report["coverage_ratio"]
    assert result.equity_coverage_ratio == report["equity_coverage_ratio"]
    for name, per_level in result.expected_shortfall_e16.items():
        assert per_level == [report[name]["99"]["es_e16"], report[name]["99.9"]["es_e16"]]


def test_a_job_without_enough_history_says_so() -> None:
    engine = make_engine("python")
    for raw in ledger_inputs(ticks=0):
        engine.apply_encoded(raw)
    result = start_adequacy_job(engine, [], Settings(horizon_ns=3600 * S)).wait()
    assert result.error == "the oracle history is shorter than one horizon"


def test_the_history_keeps_only_its_window() -> None:
    history = OracleHistory(window_ns=10 * S)
    history.observe(b'{"type":"deposit","account":"a","amount":"1","ts":1}')
    for second in range(30):
        ts = START_TS_NS + second * S
        history.observe(b'{"type":"oracle","market":"M","price":"%d","ts":%d}' % (second + 1, ts))
    ticks = history.ticks()
    assert [t.ts_ns - START_TS_NS for t in ticks] == [s * S for s in range(19, 30)]
    assert {t.market for t in ticks} == {"M"}
