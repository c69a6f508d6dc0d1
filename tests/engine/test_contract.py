"""The engine-core contract (``EngineCore``): both cores satisfy it and answer it alike.

Callers outside ``clearing.engine`` never ask which core they hold, so everything they
read must be equal on both: the named figures, the metrics built from them, the switch
names, and the invariant check, which must catch a ledger whose cash does not balance
on either core without any test hook in the extension (a doctored snapshot does it).
"""

from __future__ import annotations

import os

import msgspec
import pytest

from clearing.demo._sim import SimConfig, Simulator
from clearing.engine import (
    Engine,
    EngineCore,
    InvariantViolation,
    JournalRun,
    LedgerFigures,
    LedgerSummary,
    load_engine,
    make_engine,
    native_available,
)
from clearing.engine.margin import equity_e16, initial_requirement_e24
from clearing.engine.native import NativeEngine
from clearing.journal import GENESIS_HASH, Record, chain_hash
from clearing.ops import Metrics

pytestmark = pytest.mark.skipif(
    not native_available() and not os.environ.get("CI"),
    reason="clearing_native is not installed (pip install ./native)",
)

CORES = ("python", "native")
# Timing, not a figure: differs run to run (as do the ``*_created`` stamps).
_TIMINGS = frozenset({"clearing_ledger_metrics_update_seconds"})


@pytest.fixture(scope="module")
def venue_lines() -> list[bytes]:
    """A seeded venue with a crash (liquidations, fund draws, clawbacks, bad debt)."""
    return list(Simulator(SimConfig.for_inputs(seed=3, accounts=200, inputs=20_000)))


@pytest.fixture(scope="module")
def both(venue_lines: list[bytes]) -> dict[str, EngineCore]:
    engines = {core: make_engine(core) for core in CORES}
    for engine in engines.values():
        for line in venue_lines:
            engine.apply_encoded(line)
    return engines


def test_both_cores_satisfy_the_protocol() -> None:
    for core in CORES:
        engine = make_engine(core)
        assert isinstance(engine, EngineCore), core
        assert engine.core_name == core
        assert engine.liquidation_scan is False
        assert engine.seq == 0
        assert engine.account_count() == 3  # the system accounts exist from genesis


def test_both_cores_give_the_same_named_figures(both: dict[str, EngineCore]) -> None:
    python, native = both["python"], both["native"]
    figures, summary = python.figures(), python.summary()
    assert type(figures) is LedgerFigures and type(summary) is LedgerSummary
    assert native.figures() == figures
    assert native.summary() == summary
    assert native.account_count() == python.account_count() == summary.accounts
    # The venue's crash left something for every figure to show.
    assert figures.traders_below_im > 0 and figures.bad_debt_cash_e16 < 0
    assert any(market.long_open_interest_e8 > 0 for market in figures.markets)


def test_the_python_figures_equal_a_direct_reading_of_its_ledger(
    both: dict[str, EngineCore],
) -> None:
    """An independent oracle for the figures both cores agree on."""
    python = both["python"]
    assert isinstance(python, Engine)
    ledger = python.ledger
    markets = ledger.markets
    figures = python.figures()
    assert figures.accounts == len(ledger.accounts)
    assert figures.fund_cash_e16 == ledger.fund.cash_e16
    assert figures.fund_equity_e16 == equity_e16(ledger.fund, markets)
    assert figures.fee_pool_cash_e16 == ledger.fee_pool.cash_e16
    assert figures.bad_debt_cash_e16 == ledger.bad_debt.cash_e16
    for market in figures.markets:
        holders = markets[market.market].holders.values()
        longs = [a.positions[market.market].qty_e8 for a in holders]
        assert market.long_open_interest_e8 == sum(q for q in longs if q > 0)
        assert market.mark_e8 == markets[market.market].mark_e8
        assert market.tick_held == (markets[market.market].held_e8 is not None)
    assert [m.market for m in figures.markets] == sorted(markets)
    traders = [a for a in ledger.accounts.values() if a.positions and not a.is_system]
    assert figures.traders == len(traders)
    below = [
        a for a in traders if equity_e16(a, markets) * 10**8 < initial_requirement_e24(a, markets)
    ]
    assert figures.traders_below_im == len(below)
    summary = python.summary()
    assert summary.positions == sum(len(a.positions) for a in ledger.accounts.values())


def test_both_cores_export_the_same_metrics(both: dict[str, EngineCore]) -> None:
    exported = {}
    for core, engine in both.items():
        metrics = Metrics(process_collectors=False, now_ns=0)
        metrics.update_ledger(engine, 0)
        exported[core] = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in metrics.registry.collect()
            for sample in family.samples
            if family.name not in _TIMINGS and not sample.name.endswith("_created")
        }
    assert exported["native"] == exported["python"]
    below = ("clearing_accounts_below_initial_margin", ())
    assert exported["python"][below] == both["python"].figures().traders_below_im > 0


def _doctored(snapshot: bytes, account: str, extra_cash_e16: int) -> bytes:
    """The snapshot with ``extra_cash_e16`` added to one account's cash and nothing else
    (no matching deposit): a ledger whose cash does not sum to the net deposits."""
    version, seq, net_deposits, accounts, markets, fill_ids = msgspec.msgpack.decode(snapshot)
    for record in accounts:
        if record[0] == account:
            record[1] = int(record[1]) + extra_cash_e16
    return msgspec.msgpack.encode([version, seq, net_deposits, accounts, markets, fill_ids])


@pytest.mark.parametrize("core", CORES)
def test_the_invariant_check_catches_cash_that_does_not_balance(core: str) -> None:
    engine = make_engine(core)
    engine.apply_encoded(b'{"type":"deposit","account":"a","amount":"5"}')
    engine.check_invariants()
    snapshot = engine.dump_state()
    assert load_engine(_doctored(snapshot, "a", 0), core).dump_state() == snapshot
    broken = load_engine(_doctored(snapshot, "a", 1), core)
    assert broken.core_name == core
    with pytest.raises(InvariantViolation, match="cash sums to"):
        broken.check_invariants()


@pytest.mark.parametrize("core", CORES)
def test_liquidation_scan_is_one_switch_on_both_cores(core: str, venue_lines: list[bytes]) -> None:
    """True visits every holder on a mark move, False asks the index: same bytes."""
    lines = venue_lines[:6_000]
    index, scan = make_engine(core), make_engine(core, liquidation_scan=True)
    assert (index.liquidation_scan, scan.liquidation_scan) == (False, True)
    for line in lines:
        assert scan.apply_encoded(line) == index.apply_encoded(line)
    assert scan.dump_state() == index.dump_state()
    loaded = load_engine(index.dump_state(), core, liquidation_scan=True)
    assert loaded.liquidation_scan is True


def test_journal_run_names_its_results() -> None:
    engine = NativeEngine()
    payloads = [
        b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}',
        b'{"type":"deposit","account":"a","amount":"100"}',
        b'{"type":"deposit","account":"b","amount":"100"}',
        b'{"type":"fill","fill_id":"f","market":"M","price":"10","qty":"1",'
        b'"buyer":"a","seller":"b"}',
        b'{"type":"withdraw","account":"a","amount":"1000"}',
    ]
    sources = [f"file:in.jsonl:{n}" for n in range(1, len(payloads) + 1)]
    run = engine.journal_run(payloads, sources, 0, GENESIS_HASH)
    assert type(run) is JournalRun
    # The withdrawal is refused: the run stops there with its code, seq counted.
    assert run.next_index == 4 and run.code is not None and engine.seq == 5
    assert len(run.records) == 4 and len(run.kinds) == 4
    assert [run.kinds[i] for i in range(4)] == [1, 2, 2, 4]  # INPUT_KINDS order
    assert run.outputs == []  # no input before the refusal had outputs
    head = GENESIS_HASH
    for seq, encoded in enumerate(run.records, start=1):
        record = msgspec.msgpack.decode(encoded, type=Record)
        assert record.seq == seq and record.source == sources[seq - 1]
        head = chain_hash(head, seq, record.source.encode(), record.payload, record.outputs)
    assert run.head_hash == head


def test_python_core_journal_run_hands_every_input_back() -> None:
    """The sequencer calls ``journal_run`` on either core; the reference core batches
    nothing, so it returns at once with the input at ``start`` deferred to the
    per-input path and the chain untouched."""
    engine = Engine()
    prev_hash = bytes(range(32))
    run = engine.journal_run(
        [b'{"type":"deposit","account":"a","amount":"1"}'], ["s"], 0, prev_hash
    )
    assert run == JournalRun(0, None, [], prev_hash, [], b"")
    assert engine.seq == 0
