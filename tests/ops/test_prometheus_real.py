"""A real Prometheus server scrapes the ops endpoint and evaluates the shipped alert rules.

Starts the ``prometheus`` binary of the Debian package (tools/install_prometheus.sh) on a
free loopback port with a generated config: 1 s scrape and rule evaluation, TSDB in
tmp_path, alerts.yml from deploy/. The ops server runs on this test's event loop, so
every wait here is async. Missing binary: test failure in CI, skip locally.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from clearing.ops.http import OpsServer
from clearing.ops.metrics import Metrics
from tests.ops.scenario import run_scenario
from tests.ops.tools import require_binary

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
# Prometheus needs about a second to start and one scrape interval to see a target.
_WAIT_S = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


async def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    body = await asyncio.to_thread(_get_json, url)
    assert body["status"] == "success", body
    return body["data"]


async def _query(base: str, promql: str) -> list[dict[str, Any]]:
    data = await _api(base, "/api/v1/query", query=promql)
    assert data["resultType"] == "vector"
    return data["result"]


async def _until(what: str, check: Any, proc: asyncio.subprocess.Process, log: Path) -> Any:
    deadline = time.monotonic() + _WAIT_S
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"prometheus exited ({proc.returncode}):\n{log.read_text()}")
        try:
            result = await check()
            if result:
                return result
        except (OSError, AssertionError) as exc:  # not listening yet, or not there yet
            last_error = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} ({last_error!r}):\n{log.read_text()}")


async def test_prometheus_scrapes_metrics_and_fires_alerts(tmp_path: Path) -> None:
    binary = require_binary("prometheus")
    metrics = Metrics()
    run_scenario(metrics)
    metrics.set_ready(True)

    async with OpsServer(metrics, port=0) as ops:
        port = _free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "clearing", "static_configs": [{"targets": [f"127.0.0.1:{ops.port}"]}]}
            ],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        log = tmp_path / "prometheus.log"
        with log.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            await _run_checks(base, proc, log, metrics)
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _run_checks(
    base: str, proc: asyncio.subprocess.Process, log: Path, metrics: Metrics
) -> None:
    async def scraped() -> list[dict[str, Any]]:
        return await _query(base, 'up{job="clearing"} == 1')

    await _until("the first successful scrape", scraped, proc, log)

    async def value(promql: str) -> float:
        (sample,) = await _query(base, promql)
        return float(sample["value"][1])

    assert await value("clearing_insurance_fund_equity_quote") == 80
    assert await value("clearing_insurance_fund_cash_quote") == -670
    assert await value("clearing_fund_to_open_interest_ratio") == 80 / 750
    assert await value("sum(clearing_open_interest_notional_quote)") == 750
    assert await value("clearing_invariant_violation") == 0
    assert await value("clearing_ready") == 1
    assert await value('clearing_input_records_total{topic="oracle",type="oracle"}') == 10
    assert await value("clearing_bad_debt_quote_total") == 30
    assert await value("clearing_engine_apply_seconds_count") == 6  # 22 inputs, batches of 4

    # The shipped rules loaded, and none fails to evaluate against real data.
    async def rules_evaluated() -> list[dict[str, Any]]:
        groups = (await _api(base, "/api/v1/rules"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(rule["health"] == "ok" for rule in rules) else []

    rules = await _until("every rule evaluated", rules_evaluated, proc, log)
    assert {"ClearingInvariantBroken", "ClearingFundRatioLow", "ClearingOracleStale"} <= {
        rule["name"] for rule in rules
    }

    # Break the ledger: the next scrape must turn into a firing page.
    metrics.set_invariant_ok(False)
    metrics.set_ready(False, "invariant violated")

    async def invariant_alert() -> list[dict[str, Any]]:
        alerts = (await _api(base, "/api/v1/alerts"))["alerts"]
        return [
            alert
            for alert in alerts
            if alert["labels"]["alertname"] == "ClearingInvariantBroken"
            and alert["state"] == "firing"
        ]

    (alert,) = await _until("ClearingInvariantBroken to fire", invariant_alert, proc, log)
    assert alert["labels"]["severity"] == "page"
    assert await value("clearing_ready") == 0
