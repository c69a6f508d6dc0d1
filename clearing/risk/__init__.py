"""Fund risk: stress tests and the insurance fund's adequacy, through the real engine.

Pure parts (no I/O, no engine): ``_shock`` (what a shock is, as engine inputs),
``_history`` (scenarios from the ledger's oracle history), ``_stats`` (VaR and expected
shortfall), ``_outcome`` (output events boiled down to the waterfall's figures). The
parts that do: ``_runner`` (each scenario in a forked child on a copy-on-write image of
the ledger), ``_adequacy`` (the scenarios of ``clearing risk`` and their tails, for any
caller holding an engine and its oracle history), ``_grid`` (the default shock grid),
``_source`` (the ledger from a journal or a snapshot), ``_command`` (the ``clearing
stress`` and ``clearing risk`` commands). ``docs/fund-risk.md`` explains it.
"""

from clearing.risk._adequacy import LEVELS, LOSSES, Adequacy, Settings, assess
from clearing.risk._command import risk_command, stress_command
from clearing.risk._outcome import MarketOutcome, Outcome
from clearing.risk._runner import apply_scenario, run_scenarios
from clearing.risk._shock import Move, Shock, oracle_input, parse_shock
from clearing.risk._stats import Tail, tail

__all__ = [
    "LEVELS",
    "LOSSES",
    "Adequacy",
    "MarketOutcome",
    "Move",
    "Outcome",
    "Settings",
    "Shock",
    "Tail",
    "apply_scenario",
    "assess",
    "oracle_input",
    "parse_shock",
    "risk_command",
    "run_scenarios",
    "stress_command",
    "tail",
]
