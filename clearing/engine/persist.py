"""The engine's full state as a compact, deterministic msgpack document (for snapshots).

Records are ``array_like`` Structs for size and speed. Evolution rule: any change to the
layout bumps ``STATE_FORMAT_VERSION``; a reader refuses other versions, so an old snapshot
is never misread: recovery then falls back to replaying the journal from the start.

One exception, additive and old-file-safe: a ledger under rules version 2 (SPEC §9)
appends fields at the end of the state record (``rules_version``) and of each market
record (§9's parameters and volatility estimate). A version-1 ledger writes exactly the
old layout, so its bytes never change, and the reader takes absent trailing fields as
version 1's values. A reader that does not know the trailing fields must check
``state_rules_version`` first.
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
from clearing.engine.state import (
    DEFAULT_FUND_SHARE_E8,
    DEFAULT_LIQ_STEP_E8,
    DEFAULT_VOL_LAMBDA_E8,
    Ledger,
    MarketState,
    Position,
)
from clearing.errors import StateFormatError

__all__ = [
    "STATE_FORMAT_VERSION",
    "StateFormatError",
    "dump_ledger",
    "dump_state",
    "load_ledger",
    "state_rules_version",
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


class _MarketRecV2(_MarketRec, array_like=True, gc=False):
    """A market under rules version 2: version 1's record plus SPEC §9's fields. The
    defaults are version 1's, so the reader takes a version-1 record as one of these."""

    liq_step_e8: int = DEFAULT_LIQ_STEP_E8
    adl: bool = False
    fund_share_e8: int = DEFAULT_FUND_SHARE_E8
    vol_tiers: list[tuple[int, int]] = []
    vol_lambda_e8: int = DEFAULT_VOL_LAMBDA_E8
    vol_e16: Big = 0


class _StateRec(Struct, array_like=True, gc=False):
    version: int
    seq: int
    net_deposits_e16: Big
    accounts: list[_AccountRec]
    markets: list[_MarketRec]
    fill_ids: list[str]


class _StateRecV2(Struct, array_like=True, gc=False):
    """The state under rules version 2; read for every state (absent tail = version 1)."""

    version: int
    seq: int
    net_deposits_e16: Big
    accounts: list[_AccountRec]
    markets: list[_MarketRecV2]
    fill_ids: list[str]
    rules_version: int = 1


# A version-1 state is a 6-element array (msgpack fixarray 0x96); a longer one carries
# the rules version at the end.
_V1_STATE_HEADER: Final = 0x96


_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_StateRecV2)


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
def dump_ledger(ledger: Ledger, seq: int, rules_version: int = 1) -> bytes:
    """The Python core's ledger and input counter as the snapshot document (a version-1
    ledger in exactly the old layout, a version-2 one with the trailing fields)."""
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
    markets = [
        _market_rec(ledger.markets[market_id], rules_version)
        for market_id in sorted(ledger.markets)
    ]
    head = (STATE_FORMAT_VERSION, seq, _big(ledger.net_deposits_e16), accounts, markets)
    if rules_version == 1:
        return _encoder.encode(_StateRec(*head, sorted(ledger.fill_ids)))  # type: ignore[arg-type]
    record = _StateRecV2(*head, sorted(ledger.fill_ids), rules_version)  # type: ignore[arg-type]
    return _encoder.encode(record)


def _market_rec(market: MarketState, rules_version: int) -> _MarketRec:
    bids, asks = market.book.levels()
    fields = (
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
    if rules_version == 1:
        return _MarketRec(*fields)
    return _MarketRecV2(
        *fields,
        market.liq_step_e8,
        market.adl,
        market.fund_share_e8,
        [tuple(tier) for tier in market.vol_tiers],  # type: ignore[misc]
        market.vol_lambda_e8,
        _big(market.vol_e16),
    )


def state_rules_version(data: bytes) -> int:
    """The rules version of ``dump_state`` bytes, without decoding the whole state: 1 for
    the version-1 layout, else the trailing field (StateFormatError if unreadable)."""
    if data[:1] == bytes((_V1_STATE_HEADER,)):
        return 1
    try:
        return _decoder.decode(data).rules_version
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StateFormatError(f"not an engine state: {exc}") from exc


@_collector_paused
def load_ledger(data: bytes) -> tuple[Ledger, int, int]:
    """The ledger, input counter and rules version of a snapshot document (either
    core's); StateFormatError if the bytes are not one of this version."""
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
        market.liq_step_e8 = rec.liq_step_e8
        market.adl = rec.adl
        market.fund_share_e8 = rec.fund_share_e8
        market.vol_tiers = tuple((sigma, share) for sigma, share in rec.vol_tiers)
        market.vol_lambda_e8 = rec.vol_lambda_e8
        market.vol_e16 = _int(rec.vol_e16)
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
    ledger.recount()
    ledger.build_index()
    return ledger, record.seq, record.rules_version
