"""check_index must notice a damaged liquidation index (it guards every optimisation)."""

from __future__ import annotations

import pytest

from clearing.engine import Engine
from clearing.engine.state import InvariantViolation


def _engine() -> Engine:
    engine = Engine()
    for raw in (
        b'{"type":"market","market":"BTC","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}',
        b'{"type":"market","market":"ETH","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}',
        b'{"type":"deposit","account":"solo","amount":"100"}',
        b'{"type":"deposit","account":"multi","amount":"500"}',
        b'{"type":"deposit","account":"mm","amount":"100000"}',
        b'{"type":"oracle","market":"BTC","price":"100"}',
        b'{"type":"oracle","market":"ETH","price":"10"}',
        b'{"type":"fill","fill_id":"1","market":"BTC","price":"100","qty":"2",'
        b'"buyer":"solo","seller":"mm"}',
        b'{"type":"fill","fill_id":"2","market":"BTC","price":"100","qty":"1",'
        b'"buyer":"multi","seller":"mm"}',
        b'{"type":"fill","fill_id":"3","market":"ETH","price":"10","qty":"5",'
        b'"buyer":"mm","seller":"multi"}',
    ):
        engine.apply(raw)
    engine.check_invariants()  # intact
    return engine


def test_a_missing_threshold_is_noticed() -> None:
    engine = _engine()
    solo = engine.ledger.accounts["solo"]
    assert solo.threshold_list is not None
    solo.threshold_list.remove(solo.threshold_key)
    with pytest.raises(InvariantViolation, match="not indexed"):
        engine.ledger.check_index()


def test_a_missing_safety_edge_is_noticed() -> None:
    engine = _engine()
    ledger = engine.ledger
    multi = ledger.accounts["multi"]
    assert multi.index_bands is not None and set(multi.index_bands) == {"BTC", "ETH"}
    ledger.markets["BTC"].band_low.clear()
    with pytest.raises(InvariantViolation, match="not indexed"):
        ledger.check_index()


def test_an_edge_that_no_longer_holds_is_noticed() -> None:
    engine = _engine()
    multi = engine.ledger.accounts["multi"]
    multi.cash_e16 -= 10**30  # behind the index's back: the edges guarantee nothing now
    with pytest.raises(InvariantViolation, match="no longer hold"):
        engine.ledger.check_index()


def test_a_stale_cached_edge_term_is_noticed() -> None:
    engine = _engine()
    multi = engine.ledger.accounts["multi"]
    multi.band_terms_e24 += 1
    with pytest.raises(InvariantViolation, match="no longer hold"):
        engine.ledger.check_index()
