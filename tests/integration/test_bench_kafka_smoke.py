"""A CI-sized run of the Kafka throughput benchmark (tools/bench_kafka.py) on the session
broker: the tool must keep working end to end (every input journaled exactly once, the
daemon exits 0 on SIGTERM, the breakdown and CPU figures are there). No time is checked:
the CI machine's speed is not under test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clearing.engine.native import native_available

REPO = Path(__file__).resolve().parents[2]
CORES = ["native", "python"] if native_available() else ["python"]


@pytest.mark.parametrize("core", CORES)
def test_bench_kafka_runs_end_to_end(kafka_bootstrap: str, core: str) -> None:
    proc = subprocess.run(
        [sys.executable, "tools/bench_kafka.py", "--events", "3000", "--accounts", "300",
         "--bootstrap", kafka_bootstrap, "--core", core, "--max-records", "500"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    result = next(line["daemon_end_to_end"] for line in lines if "daemon_end_to_end" in line)
    assert result["ok"] and result["exit"] == 0 and result["last_seq"] == 3000
    assert result["breakdown"]["batches"] >= 6  # 3000 inputs, at most 500 per batch
    assert result["daemon_cpu_s"]["total"] > 0
