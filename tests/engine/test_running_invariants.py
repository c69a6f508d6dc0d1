"""The SPEC's two invariants, asserted after every input from running totals (O(1)).

A ledger that stops balancing must stop at the input that shows it, on both cores: here a
snapshot whose cash does not sum to its deposits (written from a damaged Python ledger) is
loaded, and the next input, whatever it is, raises ``InvariantViolation``.
"""

from __future__ import annotations

import os

import pytest

from clearing.engine import (
    Engine,
    EngineCore,
    InvariantViolation,
    load_engine,
    make_engine,
    native_available,
)
from clearing.engine.persist import dump_state

NATIVE = native_available() or bool(os.environ.get("CI"))
CORES = ["python", "native"] if NATIVE else ["python"]

SETUP = [
    b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}',
    b'{"type":"deposit","account":"a","amount":"10"}',
    b'{"type":"deposit","account":"b","amount":"1000"}',
    b'{"type":"fill","fill_id":"f1","market":"M","price":"100","qty":"1","buyer":"a","seller":"b"}',
]
NEXT = b'{"type":"oracle","market":"M","price":"101"}'


def _load(core: str, data: bytes) -> EngineCore:
    return load_engine(data, core)


def _damaged(damage: str) -> bytes:
    engine = Engine()
    for line in SETUP:
        engine.apply(line)
    if damage == "cash":
        engine.ledger.accounts["a"].cash_e16 += 1  # one unit from nowhere
    else:
        engine.ledger.accounts["b"].positions["M"].qty_e8 += 1  # a one-sided position
    return dump_state(engine)


@pytest.mark.parametrize("core", CORES)
def test_a_balanced_ledger_applies_inputs(core: str) -> None:
    engine = make_engine(core)
    for line in [*SETUP, NEXT]:
        engine.apply(line)
    engine.check_invariants()


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize(
    ("damage", "message"), [("cash", "cash sums to"), ("qty", "positions in M do not sum to 0")]
)
def test_the_next_input_after_damage_raises(core: str, damage: str, message: str) -> None:
    engine = _load(core, _damaged(damage))
    with pytest.raises(InvariantViolation, match=message):
        engine.apply(NEXT)


@pytest.mark.skipif(not NATIVE, reason="clearing_native is not installed (pip install ./native)")
def test_the_native_core_refuses_inputs_after_a_violation() -> None:
    engine = _load("native", _damaged("cash"))
    with pytest.raises(InvariantViolation):
        engine.apply(NEXT)
    with pytest.raises(RuntimeError, match="can no longer be trusted"):
        engine.apply(NEXT)


def test_the_deep_check_catches_a_stale_running_open_interest() -> None:
    engine = Engine()
    for line in SETUP:
        engine.apply(line)
    market = engine.ledger.markets["M"]
    assert market.long_oi_e8 == 100_000_000  # a's long 1 (b's short does not count)
    market.long_oi_e8 += 1
    with pytest.raises(InvariantViolation, match="running open interest of M is stale"):
        engine.check_invariants()
