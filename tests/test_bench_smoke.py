"""CI-sized runs of the benchmark suite: they must work, and the index must beat the scan.

Ratios only, never absolute times: the CI machine's speed is not under test.
"""

from __future__ import annotations

from tools.bench import bench_restart, bench_tick


def test_tick_index_is_far_faster_than_the_full_scan() -> None:
    result = bench_tick(accounts=20_000, ticks=200, scan_ticks=10)
    assert result["positions"] == 20_000
    assert result["liquidations"] > 0  # the path exercises real liquidations
    # ~2000x measured on 20k accounts; the ratio grows with the account count.
    assert result["scan_over_index_p50"] >= 50


def test_restart_replays_the_tail_after_the_snapshot() -> None:
    result = bench_restart(accounts=2_000, tail=3_000)
    assert result["tail_events"] == 3_000
