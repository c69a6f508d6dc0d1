"""tools/bench_risk.py at smoke size: it runs, and measures what it says it measures."""

from __future__ import annotations

import json

import pytest

from clearing.engine import native_available
from tools import bench_risk


@pytest.mark.skipif(not native_available(), reason="no native core")
def test_the_risk_benchmark_runs_at_smoke_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_risk.main(["--smoke", "all"]) == 0
    results = json.loads(capsys.readouterr().out)
    scenarios, stress = results["scenarios"], results["stress"]
    assert scenarios["scenarios"] == 50 and scenarios["accounts"] > 2_000
    assert scenarios["scenarios_with_liquidations"] > 0  # the shocks reach the waterfall
    assert stress["accounts"] == 2_000 and stress["liquidations"] > 0
