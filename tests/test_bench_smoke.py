"""CI-sized runs of the benchmark suite: they must work, and the index must beat the scan.

Ratios only, never absolute times: the CI machine's speed is not under test. Both engine
cores run (CI builds the native one).
"""

from __future__ import annotations

import os

import pytest

from clearing.engine.native import native_available
from tools.bench import bench_restart, bench_tick

CORES = ["python", "native"] if native_available() or os.environ.get("CI") else ["python"]


@pytest.mark.parametrize("core", CORES)
def test_tick_index_is_far_faster_than_the_full_scan(core: str) -> None:
    result = bench_tick(accounts=20_000, ticks=200, scan_ticks=10, core=core)
    assert result["positions"] == 20_000
    assert result["liquidations"] > 0  # the path exercises real liquidations
    # ~2000x measured on 20k accounts with the Python core; the ratio grows with the
    # account count.
    assert result["scan_over_index_p50"] >= 50


@pytest.mark.parametrize("core", CORES)
def test_restart_replays_the_tail_after_the_snapshot(core: str) -> None:
    result = bench_restart(accounts=2_000, tail=3_000, core=core)
    assert result["tail_events"] == 3_000


@pytest.mark.parametrize("core", CORES)
def test_rules_v2_benchmarks_reach_their_paths(core: str) -> None:
    """tools/bench_v2.py at CI size: partial steps, an ADL pass and a funding input
    really happen (no times asserted)."""
    from tools.bench_v2 import bench_adl, bench_funding
    from tools.bench_v2 import bench_tick as bench_tick_v2

    assert bench_tick_v2(accounts=4_000, ticks=200, core=core)["liquidation_events"] > 0
    assert bench_adl(accounts=4_000, core=core)["adl_events"] == 1_000
    assert len(bench_funding(accounts=4_000, runs=2, core=core)["runs_ms"]) == 2  # type: ignore[arg-type]
