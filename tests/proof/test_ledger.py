"""Liabilities from the §8 state: equity at the marks, exact, floored at 0, system
accounts left out."""

from __future__ import annotations

import json

import pytest

from clearing.engine import LedgerFigures, make_engine, native_available
from clearing.proof import ledger_liabilities

E16 = 10**16
E8 = 10**8


class _StubCore:
    """Just the part of ``EngineCore`` the liabilities are read through."""

    seq = 42

    def __init__(self, state: dict[str, object]) -> None:
        self._state = state

    def state_json(self) -> bytes:
        return json.dumps(self._state).encode()

    def figures(self) -> LedgerFigures:
        return LedgerFigures(0, 0, 0, 0, 0, [], 0, 0)


def test_equity_at_the_mark_floored_at_zero_without_system_accounts() -> None:
    state = {
        "accounts": {
            "rich": {"cash": "-900.0000000000000001", "positions": {"BTC": "10"}},
            "short": {"cash": "2000", "positions": {"BTC": "-10", "ETH": "0.5"}},
            "underwater": {"cash": "-1000", "positions": {"BTC": "1"}},
            "flat": {"cash": "3.25", "positions": {}},
            "insurance-fund": {"cash": "20", "positions": {}},
            "fee-pool": {"cash": "7", "positions": {}},
            "bad-debt": {"cash": "-1", "positions": {}},
        },
        "markets": {"BTC": {"mark": "100.5"}, "ETH": {"mark": "0.00000001"}, "X": {"mark": None}},
    }
    ledger = ledger_liabilities(_StubCore(state))  # type: ignore[arg-type]
    assert ledger.seq == 42
    assert ledger.liabilities == [
        ("flat", 325 * E16 // 100),
        ("rich", 105 * E16 - 1),  # -900 - 1e-16 + 10 * 100.5
        ("short", 995 * E16 + 5 * E16 // 10**9),  # 2000 - 1005 + 0.5 * 1e-8
        ("underwater", 0),  # -1000 + 100.5 < 0 owes the venue; floored
    ]


def test_a_position_without_a_mark_is_refused() -> None:
    state = {
        "accounts": {"a": {"cash": "1", "positions": {"X": "1"}}},
        "markets": {"X": {"mark": None}},
    }
    with pytest.raises(ValueError, match="no mark"):
        ledger_liabilities(_StubCore(state))  # type: ignore[arg-type]


@pytest.mark.parametrize("cash", ["1e3", "1.00000000000000001", "--1", ""])
def test_a_malformed_amount_is_refused(cash: str) -> None:
    state = {"accounts": {"a": {"cash": cash, "positions": {}}}, "markets": {}}
    with pytest.raises(ValueError, match="is not a decimal"):
        ledger_liabilities(_StubCore(state))  # type: ignore[arg-type]


@pytest.mark.skipif(not native_available(), reason="needs the native core")
def test_both_cores_give_the_same_liabilities() -> None:
    from tools.gen_events import generate

    cores = [make_engine("python"), make_engine("native")]
    for raw in generate(2_000, 150, 3, seed=5):
        for core in cores:
            core.apply_encoded(raw)
    python, native = (ledger_liabilities(core) for core in cores)
    assert python == native
    assert len(python.liabilities) == 150 and sum(v for _, v in python.liabilities) > 0
