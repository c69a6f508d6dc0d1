"""The standby half of ``tools/bench_kafka.py --standby`` (a helper, not a tool of its
own): a ``clearing run --role standby`` process beside the measured active daemon, its
applied seq sampled through the run, and the lag figures drawn from the samples.

Lag is measured against the active's committed seq, which the benchmark already polls
every 50 ms (the ledger group's committed input offsets: on fresh topics their sum is
the number of inputs journaled). At each sample:

* ``lag_records``: the active's committed seq minus the standby's applied seq
  (``clearing_journal_last_seq`` on the standby's /metrics);
* ``lag_s``: how long ago the active committed the oldest record the standby has not
  applied yet (0 when it has applied everything committed), from the same timelines.

The standby starts once the active answers /readyz, so its first seconds are a catch-up
(process start, recovery from the journal so far); the run's figures count from the
first sample within one batch of the active (``first_in_sync_s`` says when that was;
``lag_trend_records_per_s``, the slope of the lag while following, says whether a
standby never in sync was catching up or falling behind).
``bounded``: the lag did not grow over the run: its maximum over the last third of those
samples is at most the maximum over the first two thirds plus one batch. The daemon's
own gauges (lag in journal messages and seconds, in sync), sampled the same way, are
reported beside them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

# tools/ is not a package: bench_kafka, which loads this helper in turn, is found by path
# (it finds this module in sys.modules). Appended: a tool's name never hides a module.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))
import bench_kafka

# The daemon's gauges read at each sample (the standby reports its lag each second).
_GAUGES: Final = (
    "clearing_journal_last_seq",
    "clearing_standby_lag_offsets",
    "clearing_standby_lag_seconds",
    "clearing_standby_in_sync",
    "clearing_active",
)
_CATCH_UP_TIMEOUT_S: Final = 120.0
_EXIT_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True)
class Sample:
    at: float  # perf_counter when the scrape returned
    gauges: dict[str, float]

    @property
    def seq(self) -> int:
        return int(self.gauges.get("clearing_journal_last_seq", 0))


def _scrape(port: int) -> dict[str, float] | None:
    try:
        samples = bench_kafka.scrape(port, timeout_s=2.0)
    except OSError:
        return None  # not listening yet, or busy: a missing sample
    return {name: value for name, value in samples.items() if name in _GAUGES}


class StandbyRun:
    """The standby process of one benchmark run and its samples."""

    def __init__(
        self,
        checkout: Path,
        config_path: Path,
        work: Path,
        port: int,
        interval_s: float,
        nice: int = 0,
    ) -> None:
        self._checkout = checkout
        self._config_path = config_path
        self._work = work
        self.port = port
        self.interval_s = interval_s
        self.nice = nice  # scheduling niceness of the standby process (0: as the active)
        self.log_path = work / "standby.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.samples: list[Sample] = []
        self._sampling: asyncio.Task[None] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "CLEARING_SNAPSHOT_DIR": str(self._work / "snapshots-standby"),
            "CLEARING_HTTP_LISTEN": f"127.0.0.1:{self.port}",
        }
        cmd = [sys.executable, "-m", "clearing.cli", "run", "--config", str(self._config_path),
               "--role", "standby"]  # fmt: skip
        if self.nice:
            cmd = ["nice", "-n", str(self.nice), *cmd]
        self.started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self._checkout, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=env)  # fmt: skip
        self._sampling = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            gauges = await asyncio.to_thread(_scrape, self.port)
            if gauges is not None:
                self.samples.append(Sample(time.perf_counter(), gauges))
            await asyncio.sleep(self.interval_s)

    async def finish(self, last_seq: int) -> dict[str, Any]:
        """After the active is done: wait (bounded) until the standby has applied
        ``last_seq``, stop sampling, SIGTERM it. Returns its exit code and whether it
        got there."""
        assert self.proc is not None
        deadline = time.perf_counter() + _CATCH_UP_TIMEOUT_S
        while not (self.samples and self.samples[-1].seq >= last_seq):
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                break
            await asyncio.sleep(self.interval_s)
        await self.stop_sampling()
        reached = bool(self.samples) and self.samples[-1].seq >= last_seq
        cpu = bench_kafka.cpu_seconds(self.proc.pid)  # (user, system)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, _EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        cpu_s = None if cpu is None else round(sum(cpu), 2)
        return {"reached_last_seq": reached, "exit": code, "cpu_s": cpu_s}

    async def stop_sampling(self) -> None:
        if self._sampling is not None:
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling
            self._sampling = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, int(len(ranked) * share))]


def _slope(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def lag_figures(
    samples: list[Sample],
    committed: list[tuple[float, int]],
    *,
    standby_started: float,
    done_at: float,
    last_seq: int,
    batch_records: int,
) -> dict[str, Any]:
    """The lag figures of one run (see the module docstring). ``committed``: the
    active's (perf_counter, committed seq) timeline; ``done_at``: when everything was
    found committed."""
    times = [at for at, _ in committed]
    seqs = [seq for _, seq in committed]
    # Running maximum: a probe that raced a commit never makes the seq go back.
    for i in range(1, len(seqs)):
        seqs[i] = max(seqs[i], seqs[i - 1])

    def active_seq(at: float) -> int:
        i = bisect.bisect_right(times, at)
        return seqs[i - 1] if i else 0

    def lag_s(at: float, seq: int) -> float:
        """Age of the oldest committed record not applied: when the active first had
        committed past ``seq``."""
        first = bisect.bisect_right(seqs, seq)  # first probe with committed > seq
        if first >= len(times) or times[first] > at:
            return 0.0
        return at - times[first]

    during = [s for s in samples if s.at <= done_at]
    points = [(s, max(0, active_seq(s.at) - s.seq), lag_s(s.at, s.seq)) for s in during]
    start = next((i for i, (_, lag, _) in enumerate(points) if lag <= batch_records), None)
    caught = next((s.at for s in samples if s.at >= done_at and s.seq >= last_seq), None)
    first = None if start is None else points[start][0].at - standby_started
    following = [(s.at, float(lag)) for s, lag, _ in points if s.seq > 0]
    trend = _slope(following)
    out: dict[str, Any] = {
        "samples": len(points),
        "first_in_sync_s": None if first is None else round(first, 2),
        "in_sync_after_last_commit_s": None if caught is None else round(caught - done_at, 2),
        # Least-squares slope of the lag while following: < 0 catching up, > 0 falling
        # behind (records per second).
        "lag_trend_records_per_s": None if trend is None else round(trend),
    }
    if start is None:
        # No sample during the run (it ended before the standby was up): not measured.
        out["bounded"] = False if points else None
        out["lag_records_last"] = points[-1][1] if points else None
        return out
    steady = points[start:]
    records = [float(lag) for _, lag, _ in steady]
    seconds = [s for _, _, s in steady]
    cut = max(1, (2 * len(steady)) // 3)
    early, late = records[:cut], records[cut:] or records[-1:]
    gauges = [s.gauges for s, _, _ in steady]
    out.update({
        "lag_records_max": int(max(records)),
        "lag_records_p99": int(_percentile(records, 0.99) or 0),
        "lag_records_median": int(_percentile(records, 0.5) or 0),
        "lag_s_max": round(max(seconds), 3),
        "lag_s_p99": round(_percentile(seconds, 0.99) or 0.0, 3),
        "bounded": max(late) <= max(early) + batch_records,
        "gauge_lag_offsets_max": max(g.get("clearing_standby_lag_offsets", 0) for g in gauges),
        "gauge_lag_s_max": max(g.get("clearing_standby_lag_seconds", 0) for g in gauges),
        "gauge_in_sync_share": round(
            sum(g.get("clearing_standby_in_sync", 0) for g in gauges) / len(gauges), 3
        ),
        "was_active": any(g.get("clearing_active", 0) for g in gauges),
    })  # fmt: skip
    return out
