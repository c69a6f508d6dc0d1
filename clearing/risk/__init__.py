"""Fund risk: stress tests and the insurance fund's adequacy, through the real engine.

Pure parts (no I/O, no engine): ``_shock`` (what a shock is, as engine inputs),
``_history`` (scenarios from the ledger's oracle history), ``_stats`` (VaR and expected
shortfall), ``_outcome`` (output events boiled down to the waterfall's figures). The
parts that do: ``_runner`` (each scenario in a forked child on a copy-on-write image of
the ledger), ``_adequacy`` (the scenarios of ``clearing risk`` and their tails, for any
caller holding an engine and its oracle history), ``_job`` (the same in a background
child, for a long-running process), ``_grid`` (the default shock grid),
``_source`` (the ledger from a journal or a snapshot), ``_command`` and ``_arguments``
(the ``clearing stress`` and ``clearing risk`` commands). ``docs/fund-risk.md`` explains it.
"""

import importlib
from typing import TYPE_CHECKING, Any

from clearing.risk._arguments import add_risk_commands

if TYPE_CHECKING:
    from clearing.risk._adequacy import LEVELS, LOSSES, Adequacy, Settings, assess
    from clearing.risk._command import risk_command, stress_command
    from clearing.risk._job import AdequacyJob, AdequacyResult, OracleHistory, start_adequacy_job
    from clearing.risk._outcome import MarketOutcome, Outcome
    from clearing.risk._runner import apply_scenario, run_scenarios
    from clearing.risk._shock import Move, Shock, oracle_input, parse_shock
    from clearing.risk._stats import Tail, tail

__all__ = [
    "LEVELS",
    "LOSSES",
    "Adequacy",
    "AdequacyJob",
    "AdequacyResult",
    "MarketOutcome",
    "Move",
    "OracleHistory",
    "Outcome",
    "Settings",
    "Shock",
    "Tail",
    "add_risk_commands",
    "apply_scenario",
    "assess",
    "oracle_input",
    "parse_shock",
    "risk_command",
    "run_scenarios",
    "start_adequacy_job",
    "stress_command",
    "tail",
]

# Everything but the argument parser is imported on first use: ``clearing``'s parser adds
# these subcommands on every run, and the runner's imports (journal, snapshots, recovery)
# would otherwise cost every command a seventh of a second at start-up.
_LAZY = {
    "LEVELS": "clearing.risk._adequacy",
    "LOSSES": "clearing.risk._adequacy",
    "Adequacy": "clearing.risk._adequacy",
    "AdequacyJob": "clearing.risk._job",
    "AdequacyResult": "clearing.risk._job",
    "OracleHistory": "clearing.risk._job",
    "start_adequacy_job": "clearing.risk._job",
    "Settings": "clearing.risk._adequacy",
    "assess": "clearing.risk._adequacy",
    "MarketOutcome": "clearing.risk._outcome",
    "Move": "clearing.risk._shock",
    "Outcome": "clearing.risk._outcome",
    "Shock": "clearing.risk._shock",
    "Tail": "clearing.risk._stats",
    "apply_scenario": "clearing.risk._runner",
    "oracle_input": "clearing.risk._shock",
    "parse_shock": "clearing.risk._shock",
    "risk_command": "clearing.risk._command",
    "run_scenarios": "clearing.risk._runner",
    "stress_command": "clearing.risk._command",
    "tail": "clearing.risk._stats",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
