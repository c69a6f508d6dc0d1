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
    # Every input in the topics journaled (3000, or more if the producer re-sent a send
    # that had been written after all).
    assert result["ok"] and result["exit"] == 0
    assert result["last_seq"] == result["inputs"] >= 3000
    assert result["breakdown"]["batches"] >= 6  # 3000 inputs, at most 500 per batch
    assert result["daemon_cpu_s"]["total"] > 0


def test_rounds_print_a_summary(kafka_bootstrap: str) -> None:
    """``--rounds``: the runs repeat (each on fresh topics) and a summary line closes."""
    proc = subprocess.run(
        [sys.executable, "tools/bench_kafka.py", "--events", "1000", "--accounts", "100",
         "--bootstrap", kafka_bootstrap, "--core", CORES[0], "--rounds", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    runs = [line["daemon_end_to_end"] for line in lines if "daemon_end_to_end" in line]
    verdicts = [{k: run[k] for k in ("ok", "exit", "inputs", "last_seq")} for run in runs]
    assert proc.returncode == 0, (verdicts, proc.stderr[-2000:])
    assert len(runs) == 2 and all(run["ok"] for run in runs)
    (summary,) = [line["summary"] for line in lines if "summary" in line]
    (entry,) = summary.values()
    assert entry["events_per_s"] == [run["events_per_s"] for run in runs]
    assert min(entry["events_per_s"]) <= entry["median_events_per_s"] <= max(entry["events_per_s"])


def test_the_summary_compares_round_by_round() -> None:
    """Pure: medians per checkout, ratios to the first checkout per round, a failed run
    leaves its round out of the ratios."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_kafka", REPO / "tools" / "bench_kafka.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def result(eps: int, ok: bool = True) -> dict[str, object]:
        cpu = {"total": eps / 10_000}
        return {"ok": ok, "events_per_s": eps, "daemon_cpu_s": cpu, "broker_cpu_s": cpu}

    new, old = Path("/nonexistent/new"), Path("/nonexistent/old")
    summary = bench.summarize({
        new: [result(120), result(90), result(100)],
        old: [result(100), None, result(125)],
    })  # fmt: skip
    assert summary[str(new)]["median_events_per_s"] == 100
    assert summary[str(old)]["events_per_s"] == [100, None, 125]
    assert summary[str(old)]["median_events_per_s"] == 112.5
    assert summary[str(old)][f"ratio_to_{new}"] == [0.833, 1.25]
    assert summary[str(old)]["median_ratio"] == (0.833 + 1.25) / 2
    assert summary[str(new)]["commit"] == "unknown"


def test_standby_rounds_compare_with_and_without(kafka_bootstrap: str) -> None:
    """``--standby``: each round runs without and with a hot standby following the
    journal; the standby must apply every record (its outputs checked against the
    active's) and exit 0, and a ``standby_summary`` line pairs the runs."""
    proc = subprocess.run(
        [sys.executable, "tools/bench_kafka.py", "--events", "2000", "--accounts", "200",
         "--bootstrap", kafka_bootstrap, "--core", CORES[0], "--standby"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    runs = [line["daemon_end_to_end"] for line in lines if "daemon_end_to_end" in line]
    assert proc.returncode == 0, ([run["standby"] for run in runs], proc.stderr[-3000:])
    assert [run["standby"] is None for run in runs] == [True, False]  # round 1: without first
    standby = runs[1]["standby"]
    assert standby["ok"] and standby["reached_last_seq"] and standby["exit"] == 0
    assert standby["in_sync_after_last_commit_s"] is not None
    (summary,) = [line["standby_summary"] for line in lines if "standby_summary" in line]
    (entry,) = summary.values()
    assert entry["failed_rounds"] == 0
    assert entry["ratio_with_over_without"] == [
        round(runs[1]["events_per_s"] / runs[0]["events_per_s"], 3)
    ]
    assert entry["standby"] == [standby]


def test_standby_lag_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pure: lag in records and seconds against the active's committed timeline, from
    the first sample within a batch; ``bounded`` tells a steady lag from a growing one."""
    import importlib.util

    path = REPO / "tools" / "bench_kafka_standby.py"
    spec = importlib.util.spec_from_file_location("bench_kafka_standby", path)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    # Registered first: its dataclass looks its module up while the class is made.
    monkeypatch.setitem(sys.modules, "bench_kafka_standby", tool)
    spec.loader.exec_module(tool)
    # The active commits 1000 records a second, done at t=10 with seq 10000.
    committed = [(float(t), 1000 * t) for t in range(11)]

    def figures(standby_seqs: dict[float, int]) -> dict[str, object]:
        samples = [tool.Sample(at, {"clearing_journal_last_seq": seq})
                   for at, seq in standby_seqs.items()]  # fmt: skip
        return tool.lag_figures(samples, committed, standby_started=0.5, done_at=10.0,
                                last_seq=10_000, batch_records=100)  # fmt: skip

    steady = figures({1.5: 0, 2.5: 2000, 3.5: 2500, 4.5: 4000, 5.5: 5000, 6.5: 6000,
                      7.5: 7000, 8.5: 8000, 9.5: 9000, 10.5: 10_000})  # fmt: skip
    assert steady["first_in_sync_s"] == 2.0  # t=1.5 was 1000 behind: the catch-up
    assert steady["lag_records_max"] == 500  # t=3.5: 3000 committed, 2500 applied
    assert steady["lag_s_max"] == 0.5  # seq 2501 was committed by t=3.0
    assert steady["in_sync_after_last_commit_s"] == 0.5
    assert steady["bounded"] is True and steady["samples"] == 9
    growing = figures({t + 0.5: 1000 * t - 200 * (t - 2) for t in range(2, 10)})
    assert growing["lag_records_max"] == 1400 and growing["bounded"] is False
    assert growing["lag_trend_records_per_s"] == 200
    assert growing["in_sync_after_last_commit_s"] is None  # never reached seq 10000
    assert figures({})["bounded"] is None  # no sample during the run: not measured
