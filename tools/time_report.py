"""Time each phase of ``clearing report`` on a journal: wall and CPU seconds (the process
and its reaped scenario children), so that runs on a loaded machine can be compared by CPU.

    python tools/time_report.py /tmp/demo/journal            # the default page
    python tools/time_report.py /tmp/demo/journal --risk     # with the fund risk section

Runs the same calls as ``clearing report`` (``clearing.report._command.write_report``),
phase by phase, and writes nothing. docs/fund-risk.md quotes its output.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clearing.report._collect import collect_journal
from clearing.report._render import render_html
from clearing.report._risk import collect_risk, read_history


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def _phase(name: str) -> Iterator[None]:
    wall, cpu = time.perf_counter(), _cpu_s()
    yield
    print(f"{name:24s} wall {time.perf_counter() - wall:6.1f} s  cpu {_cpu_s() - cpu:6.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("journal_dir")
    parser.add_argument("--risk", action="store_true", help="with the fund risk section")
    args = parser.parse_args()
    risk = None
    with _phase("total"):
        history = horizon_ns = None
        if args.risk:
            with _phase("oracle history"):
                history = read_history(args.journal_dir)
            horizon_ns = history.settings.horizon_ns if history.settings else None
        with _phase("replay and collect"):
            data = collect_journal(args.journal_dir, episode_horizon_ns=horizon_ns)
        if history is not None:
            with _phase("fund risk section"):
                risk = collect_risk(
                    args.journal_dir, history=history, episode=data.fund_loss_episode
                )
        with _phase("render"):
            render_html(data, risk)
    if risk is not None:
        backtest = risk.backtest.scenarios if risk.backtest else 0
        points = [p.scenarios for p in risk.coverage_over_time]
        print(f"scenarios: head {len(risk.fund_draws_e16)}, coverage points {points}, "
              f"back-test {backtest}, grid {len(risk.grid)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
