"""A real Prometheus server scrapes a real `clearing run` daemon fed through real Kafka.

Proves the operability story end to end: the daemon's /metrics is scrapeable, and the key
series (ready, invariant, journal seq, fund equity, liquidations) hold the values the
ledger implies once inputs have flowed through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.integration import test_daemon as daemon_helpers
from tests.integration.conftest import DaemonProcess, commit, start_prometheus
from tests.ops.test_prometheus_real import _query, _until
from tests.ops.tools import require_binary


async def test_prometheus_scrapes_a_running_daemon(
    run_daemon: Callable[..., Awaitable[DaemonProcess]], tmp_path: Path
) -> None:
    require_binary("prometheus")  # before the daemon: without it, fail at once
    daemon = await run_daemon("prom")
    prometheus = None
    try:
        items = daemon_helpers.flat(daemon_helpers.scenario(seed=5, groups=4))
        journal = await commit(daemon.config, items)
        total = daemon_helpers.sequenced_count(items)
        liquidations = sum(record.outputs.count(b'"type":"liquidation"') for record in journal)
        assert liquidations > 0

        prometheus, base = await start_prometheus(tmp_path, daemon.port)
        log = tmp_path / "prometheus.log"

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
