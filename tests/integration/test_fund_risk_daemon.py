"""Fund adequacy in a running daemon: a real Prometheus scrapes `clearing run` with
``risk.interval_s`` set, and the figures it exports are the ones `clearing risk` prints
for the same committed ledger (the same inputs, in the same order, ingested locally)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.engine.money import E16
from tests.integration.conftest import DaemonProcess, commit, start_prometheus
from tests.ops.test_prometheus_real import _query, _until
from tests.risk.ledger import ledger_inputs

RISK = {"interval_s": 1, "horizon_s": 4, "step_s": 1, "window_s": 3600, "scale": "12"}


def clearing_risk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    inputs = tmp_path / "ledger.jsonl"
    inputs.write_bytes(b"".join(line + b"\n" for line in ledger_inputs()))
    journal = str(tmp_path / "local")
    assert main(["ingest", str(inputs), "--journal", journal]) == 0
    capsys.readouterr()
    argv = ["risk", journal, "--horizon", "4s", "--step", "1s", "--scale", "12", "--json"]
    assert main(argv) == 0
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    return report


async def test_the_daemon_exports_what_clearing_risk_says(
    run_daemon: Callable[..., Awaitable[DaemonProcess]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = clearing_risk(tmp_path, capsys)
    assert report["scenarios"] > 0 and report["coverage_ratio"] is not None  # type: ignore[operator]
    daemon = await run_daemon("risk", risk=RISK)
    metrics_port = daemon.port
    prometheus = None
    try:
        payloads = list(ledger_inputs())
        # One input topic: the journal holds them in exactly this order.
        journal = await commit(daemon.config, [("fills", raw, None) for raw in payloads])
        assert [record.payload for record in journal] == payloads
        assert report["seq"] == len(payloads)

        prometheus, base = await start_prometheus(tmp_path, metrics_port)

        async def value(promql: str) -> float | None:
            result = await _query(base, promql)
            return float(result[0]["value"][1]) if result else None

        async def assessed_head() -> bool:
            return await value("clearing_fund_risk_seq") == float(len(payloads))

        log = tmp_path / "prometheus.log"
        await _until("the fund risk series at the head", assessed_head, prometheus, log)
        draws = report["fund_draws"]
        assert isinstance(draws, dict)
        for level, key in (("0.99", "99"), ("0.999", "99.9")):
            expected = draws[key]["es_e16"] / E16
            assert await value(f'clearing_fund_expected_shortfall{{level="{level}"}}') == expected
        coverage = float(Fraction(str(report["coverage_ratio"])))
        assert await value("clearing_fund_coverage_ratio") == coverage
        assert await value("clearing_fund_risk_scenarios") == float(report["scenarios"])  # type: ignore[arg-type]
        age_s = await value("clearing_fund_risk_age_seconds")
        assert age_s is not None and 0 <= age_s < 60
        assert await value("clearing_fund_risk_failures_total") is not None
    finally:
        if prometheus is not None and prometheus.returncode is None:
            prometheus.terminate()
            await prometheus.wait()
