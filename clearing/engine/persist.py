"""The engine's full state as a compact, deterministic msgpack document (for snapshots).

Records are ``array_like`` Structs for size and speed. Evolution rule: any change to the
layout bumps ``STATE_FORMAT_VERSION``; a reader refuses other versions, so an old snapshot
is never misread: recovery then falls back to replaying the journal from the start.
Integers that do not fit msgpack's 64 bits (large e16/e24 amounts) travel as decimal
strings. Everything is emitted in sorted order, so equal states give equal bytes.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

import msgspec
from msgspec import Struct

from clearing.engine._contract import EngineCore
from clearing.engine.state import Ledger, MarketState, Position
from clearing.errors import StateFormatError

__all__ = [
    "STATE_FORMAT_VERSION",
    "StateFormatError",
    "dump_ledger",
    "dump_state",
    "load_ledger",
]

STATE_FORMAT_VERSION: Final = 1

Big = int | str


class _PositionRec(Struct, array_like=True, gc=False):
    market: str
    qty_e8: Big
    k_e16: Big


class _AccountRec(Struct, array_like=True, gc=False):
    id: str
    cash_e16: Big
    positions: list[_PositionRec]


class _MarketRec(Struct, array_like=True, gc=False):
    id: str
    imr_e8: int
    mmr_e8: int
    liq_fee_e8: int
    max_oracle_move_e8: Big | None
    mark_e8: Big | None
    oracle_seen: bool
    held_e8: Big | None
    bids: list[tuple[Big, Big]]
    asks: list[tuple[Big, Big]]


class _StateRec(Struct, array_like=True, gc=False):
    version: int
    seq: int
    net_deposits_e16: Big
    accounts: list[_AccountRec]
    markets: list[_MarketRec]
    fill_ids: list[str]


_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_StateRec)


def _big(value: int) -> Big:
    return value if _INT64_MIN <= value <= _INT64_MAX else str(value)


def _int(value: Big) -> int:
    return int(value) if type(value) is str else value  # type: ignore[return-value]


def _opt_big(value: int | None) -> Big | None:
    return None if value is None else _big(value)


def _opt_int(value: Big | None) -> int | None:
    return None if value is None else _int(value)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _collector_paused(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with the cyclic garbage collector paused.

    Building or walking a million accounts allocates millions of objects that all stay
    alive; the collector would rescan the growing heap many times over for nothing (at
    300k accounts: load 2.3 s -> 0.85 s, dump 1.0 s -> 0.7 s with it paused). No cycles
    are made here, so nothing is left for it to find afterwards.
    """

    @functools.wraps(fn)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return paused


def dump_state(engine: EngineCore) -> bytes:
    """Serialize the whole engine (ledger, markets, books, fill ids, seq). Both cores
    write the same bytes for the same state. (``clearing.engine.load_engine`` reads it.)"""
    return engine.dump_state()


@_collector_paused
def dump_ledger(ledger: Ledger, seq: int) -> bytes:
    """The Python core's ledger and input counter as the snapshot document."""
    accounts = [
        _AccountRec(
            account.id,
            _big(account.cash_e16),
            [
                _PositionRec(market_id, _big(pos.qty_e8), _big(pos.k_e16))
                for market_id, pos in sorted(account.positions.items())
            ],
        )
        for _, account in sorted(ledger.accounts.items())
    ]
    markets = []
    for market_id in sorted(ledger.markets):
        market = ledger.markets[market_id]
        bids, asks = market.book.levels()
        markets.append(
            _MarketRec(
                market.id,
                market.imr_e8,
                market.mmr_e8,
                market.liq_fee_e8,
                _opt_big(market.max_oracle_move_e8),
                _opt_big(market.mark_e8),
                market.oracle_seen,
                _opt_big(market.held_e8),
                [(_big(p), _big(q)) for p, q in bids],
                [(_big(p), _big(q)) for p, q in asks],
            )
        )
    record = _StateRec(
        STATE_FORMAT_VERSION,
        seq,
        _big(ledger.net_deposits_e16),
        accounts,
        markets,
        sorted(ledger.fill_ids),
    )
    return _encoder.encode(record)


@_collector_paused
def load_ledger(data: bytes) -> tuple[Ledger, int]:
    """The ledger and input counter of a snapshot document (either core's);
    StateFormatError if the bytes are not one of this version."""
    try:
        record = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StateFormatError(f"not an engine state: {exc}") from exc
    if record.version != STATE_FORMAT_VERSION:
        raise StateFormatError(
            f"state format version {record.version}; this build reads {STATE_FORMAT_VERSION}"
        )
    ledger = Ledger()
    ledger.net_deposits_e16 = _int(record.net_deposits_e16)
    for rec in record.markets:
        market = MarketState(
            rec.id, rec.imr_e8, rec.mmr_e8, rec.liq_fee_e8, _opt_int(rec.max_oracle_move_e8)
        )
        market.mark_e8 = _opt_int(rec.mark_e8)
        market.oracle_seen = rec.oracle_seen
        market.held_e8 = _opt_int(rec.held_e8)
        market.book.replace(
            {_int(p): _int(q) for p, q in rec.bids}, {_int(p): _int(q) for p, q in rec.asks}
        )
        ledger.markets[rec.id] = market
    for rec in record.accounts:
        account = ledger.account(rec.id)
        account.cash_e16 = _int(rec.cash_e16)
        for pos in rec.positions:
            account.positions[pos.market] = Position(_int(pos.qty_e8), _int(pos.k_e16))
            ledger.markets[pos.market].holders[account.id] = account
    ledger.fill_ids = set(record.fill_ids)
    ledger.build_index()
    return ledger, record.seq
