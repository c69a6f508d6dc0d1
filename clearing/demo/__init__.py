"""``clearing demo``: a simulated venue, run through the real sequencer, with a live view.

``Simulator`` yields the input stream (deterministic per seed); ``run_demo`` feeds it to
the sequencer and writes the audit report; ``demo_command`` is the CLI entry point.
"""

from clearing.demo._run import DemoOptions, DemoResult, demo_command, run_demo
from clearing.demo._sim import CRASH_MARKET, MARKETS, SimConfig, Simulator

__all__ = [
    "CRASH_MARKET",
    "MARKETS",
    "DemoOptions",
    "DemoResult",
    "SimConfig",
    "Simulator",
    "demo_command",
    "run_demo",
]
