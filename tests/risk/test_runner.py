"""The fork-per-scenario runner: results in order, the parent's engine untouched, and a
scenario that fails in its child reported as ScenarioFailed (never a silent gap)."""

from __future__ import annotations

import pytest

from clearing.engine import EngineCore, make_engine, native_available
from clearing.errors import ScenarioFailed
from clearing.risk import Move, apply_scenario, run_scenarios
from tests.risk.ledger import ledger_inputs

CORES = [
    "python",
    pytest.param(
        "native", marks=pytest.mark.skipif(not native_available(), reason="no native core")
    ),
]
E8 = 10**8


def _engine(core: str) -> EngineCore:
    engine = make_engine(core)
    for raw in ledger_inputs():
        engine.apply_encoded(raw)
    return engine


@pytest.mark.parametrize("core", CORES)
def test_each_child_starts_from_the_same_ledger(core: str) -> None:
    engine = _engine(core)
    state, seq = engine.state_json(), engine.seq
    deep, shallow = [Move("BTC-PERP", 70 * E8)], [Move("BTC-PERP", 99 * E8)]
    outcomes = run_scenarios(engine, [deep, shallow, deep, []], jobs=2, measure_fund=True)
    assert outcomes[0] == outcomes[2] != outcomes[1]  # in order, each from the same start
    assert outcomes[0].total.liquidations > 0 and outcomes[3].inputs == []
    assert engine.state_json() == state and engine.seq == seq
    # The same as applying the scenario in this process, to the engine itself.
    assert apply_scenario(engine, deep, measure_fund=True, keep_events=False) == outcomes[0]


@pytest.mark.parametrize("core", CORES)
def test_a_failing_scenario_is_reported(core: str) -> None:
    engine = _engine(core)
    state = engine.state_json()
    with pytest.raises(ScenarioFailed, match=r"scenario 2 failed.*rejected the shock input"):
        run_scenarios(engine, [[], [Move("NO-SUCH-PERP", E8)], []], jobs=1)
    assert engine.state_json() == state
