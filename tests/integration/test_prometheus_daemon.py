"""A real Prometheus server scrapes a real `clearing run` daemon fed through real Kafka.

Proves the operability story end to end: the daemon's /metrics is scrapeable, and the key
series (ready, invariant, journal seq, fund equity, liquidations) hold the values the
ledger implies once inputs have flowed through.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from clearing.ops.config import load_config
from tests.integration import test_daemon as daemon_helpers
from tests.ops.test_prometheus_real import _free_port, _query, _until
from tests.ops.tools import require_binary

REPO = Path(__file__).resolve().parents[2]


async def test_prometheus_scrapes_a_running_daemon(kafka_bootstrap: str, tmp_path: Path) -> None:
    binary = require_binary("prometheus")
    metrics_port = _free_port()
    config_path = daemon_helpers.write_config(
        tmp_path, kafka_bootstrap, "prom", http={"listen": f"127.0.0.1:{metrics_port}"}
    )
    config = load_config(str(config_path), environ={})
    assert not (await daemon_helpers.create_topics(config)).problems
    daemon = subprocess.Popen(
        [sys.executable, "-m", "clearing.cli", "run", "--config", str(config_path)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    prometheus = None
    try:
        await daemon_helpers.wait_http(f"http://127.0.0.1:{metrics_port}/readyz", 200, daemon)
        items = daemon_helpers.flat(daemon_helpers.scenario(seed=5, groups=4))
        await daemon_helpers.produce(config, items)
        total = daemon_helpers.sequenced_count(items)
        journal = await daemon_helpers.journal_until(config, total)
        liquidations = sum(record.outputs.count(b'"type":"liquidation"') for record in journal)
        assert liquidations > 0

        prom_port = _free_port()
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "clearing",
                    "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(json.dumps(prom_config))
        log = tmp_path / "prometheus.log"
        with log.open("wb") as log_file:
            prometheus = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        base = f"http://127.0.0.1:{prom_port}"

        async def value(promql: str) -> float | None:
            result = await _query(base, promql)
            return float(result[0]["value"][1]) if result else None

        async def seen_all() -> bool:
            return (
                await value('clearing_ready{job="clearing"}') == 1.0
                and await value("clearing_journal_last_seq") == float(total)
                and await value("clearing_liquidated_accounts_total") == float(liquidations)
                and await value("clearing_insurance_fund_equity_quote") is not None
            )

        await _until("the daemon's series", seen_all, prometheus, log)
        assert await value("clearing_invariant_violation") == 0.0
        assert await value('up{job="clearing"}') == 1.0
    finally:
        if prometheus is not None and prometheus.returncode is None:
            prometheus.terminate()
            await prometheus.wait()
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(30)
