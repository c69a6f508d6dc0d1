"""Fund adequacy in a running daemon: a real Prometheus scrapes `clearing run` with
``risk.interval_s`` set, and the figures it exports are the ones `clearing risk` prints
for the same committed ledger (the same inputs, in the same order, ingested locally)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.engine.money import E16
from clearing.kafka._oracle_backfill import read_oracle_window
from clearing.ops.config import load_config
from clearing.risk import OracleHistory
from clearing.snapshot import list_snapshots
from tests.integration import test_daemon as daemon_helpers
from tests.integration.conftest import REPO, DaemonProcess, commit, start_prometheus
from tests.ops.test_prometheus_real import _free_port, _query, _until
from tests.risk.ledger import ledger_inputs

S = 10**9
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


def _scrape(port: int) -> dict[str, float]:
    """The daemon's /metrics, unlabelled and ``level``-labelled samples by their line name."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    samples: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _start_daemon(config_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "clearing.cli", "run", "--config", str(config_path)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


async def test_after_a_restart_the_history_is_read_back_from_the_journal(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The restarted daemon recovers from a snapshot at the head (no tail to replay, so no
    tick in its history); the figures it exports are clearing risk's over the whole
    window all the same, read back from the journal topic."""
    report = clearing_risk(tmp_path, capsys)
    payloads = list(ledger_inputs())
    port = _free_port()
    config_path = daemon_helpers.write_config(
        tmp_path, kafka_bootstrap, "riskrestart", http={"listen": f"127.0.0.1:{port}"},
        risk={**RISK, "interval_s": 3600},  # only the computation right after the read-back
    )  # fmt: skip
    config = load_config(str(config_path), environ={})
    assert not (await daemon_helpers.create_topics(config)).problems
    first = _start_daemon(config_path)
    try:
        await daemon_helpers.wait_http(f"http://127.0.0.1:{port}/readyz", 200, first)
        await daemon_helpers.produce(config, [("fills", raw, None) for raw in payloads])
        assert len(await daemon_helpers.journal_until(config, len(payloads))) == len(payloads)
        first.send_signal(signal.SIGTERM)  # a clean stop snapshots the head
        assert await asyncio.to_thread(first.wait, 30) == 0
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    (snapshot,) = list_snapshots(str(tmp_path / "snapshots"))
    assert snapshot.journal_seq == len(payloads)

    second = _start_daemon(config_path)
    try:
        await daemon_helpers.wait_http(f"http://127.0.0.1:{port}/readyz", 200, second)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        samples = await asyncio.to_thread(_scrape, port)
        while samples.get("clearing_fund_risk_seq") != float(len(payloads)):
            assert loop.time() < deadline, f"no figures after the restart: {samples}"
            await asyncio.sleep(0.5)
            samples = await asyncio.to_thread(_scrape, port)
        draws = report["fund_draws"]
        assert isinstance(draws, dict)
        for level, key in (("0.99", "99"), ("0.999", "99.9")):
            name = f'clearing_fund_expected_shortfall{{level="{level}"}}'
            assert samples[name] == draws[key]["es_e16"] / E16
        assert samples["clearing_fund_risk_scenarios"] == float(report["scenarios"])  # type: ignore[arg-type]
        assert samples["clearing_fund_coverage_ratio"] == float(
            Fraction(str(report["coverage_ratio"]))
        )
    finally:
        if second.poll() is None:
            second.terminate()
            second.wait(30)
        _, stderr = second.communicate()
    read_back = f"oracle ticks of seqs 1..{len(payloads)} read back from the journal"
    assert read_back.encode() in stderr, stderr[-2000:]


async def test_without_a_tick_held_the_read_back_starts_at_a_snapshot(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A promoted standby, or a restart on a snapshot at the head, holds no tick: the
    record at the recovered seq dates the window, and the read starts after the newest
    local snapshot stamped before the window's start, not at seq 1 (a journal trimmed by
    retention would fail there); the ticks are the window's all the same."""
    payloads = list(ledger_inputs())
    window_s = 40
    config_path = daemon_helpers.write_config(
        tmp_path, kafka_bootstrap, "riskstart", snapshot={"every_inputs": 20, "keep": 20}
    )
    config = load_config(str(config_path), environ={})
    assert not (await daemon_helpers.create_topics(config)).problems
    daemon = _start_daemon(config_path)
    try:
        await daemon_helpers.produce(config, [("fills", raw, None) for raw in payloads])
        assert len(await daemon_helpers.journal_until(config, len(payloads))) == len(payloads)
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.communicate()
    snapshot_seqs = [s.journal_seq for s in list_snapshots(str(tmp_path / "snapshots"))]
    stamps_ns = [json.loads(raw).get("ts") for raw in payloads]  # seq n: payloads[n - 1]
    oldest_ns = stamps_ns[-1] - window_s * S
    expected = 1 + max(s for s in snapshot_seqs if stamps_ns[s - 1] <= oldest_ns)
    assert expected > 1, snapshot_seqs  # the test needs a snapshot older than the window

    ticks, first = await asyncio.to_thread(
        read_oracle_window, config, len(payloads), None, None, window_s * S, threading.Event()
    )
    assert first == expected
    history = OracleHistory(window_s * S)
    for raw in payloads:
        history.observe(raw)
    assert ticks == history.ticks() and ticks
