"""The engine-core contract: what every caller may ask of either core, and nothing else.

``Engine`` (pure Python, the reference) and ``NativeEngine`` (the Rust core) both satisfy
``EngineCore``. Code outside ``clearing.engine`` holds an ``EngineCore`` and never asks
which core it has: anything it needs from the ledger is a method here, answered by both
cores with the same values (``tests/engine/test_contract.py``).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import msgspec

from clearing.engine.events import OutputEvent
from clearing.engine.money import E8

__all__ = ["EngineCore", "LedgerFigures", "LedgerSummary", "MarketFigures", "MarketSummary"]


class MarketSummary(msgspec.Struct, frozen=True, gc=False):
    """One market in a ``LedgerSummary``."""

    market: str
    long_open_interest_e8: int  # sum of the long positions' quantities
    mark_e8: int | None  # None until the first fill or oracle tick


class LedgerSummary(msgspec.Struct, frozen=True, gc=False):
    """Counts for tools and logs (one O(positions) pass on either core)."""

    accounts: int  # system accounts included
    positions: int  # open positions of every account, system ones included
    fund_equity_e16: int  # the insurance fund's cash plus its positions at the marks
    markets: list[MarketSummary]  # in market id order


class MarketFigures(msgspec.Struct, frozen=True, gc=False):
    """One market in ``LedgerFigures``."""

    market: str
    long_open_interest_e8: int
    mark_e8: int | None
    tick_held: bool  # an oracle tick is held back awaiting confirmation
    # Rules version 2 (SPEC §9.3): the volatility estimate v (a variance per tick, e16)
    # and the fund's share of a liquidation fee charged now (e8). A version-1 ledger has
    # no estimate and gives the whole fee to the fund: the defaults, v = 0 and share = 1.
    volatility_e16: int = 0
    fund_share_e8: int = E8


class LedgerFigures(msgspec.Struct, frozen=True, gc=False):
    """The ledger figures the metrics export, exact, from one pass over the ledger."""

    accounts: int  # system accounts included
    fund_cash_e16: int
    fund_equity_e16: int
    fee_pool_cash_e16: int
    bad_debt_cash_e16: int  # <= 0: losses nobody covered
    markets: list[MarketFigures]  # in market id order
    traders: int  # non-system accounts holding a position
    traders_below_im: int  # of those, the ones whose equity is below initial margin


class JournalRun(NamedTuple):
    """What ``EngineCore.journal_run`` did with ``payloads[start:]``."""

    # The first input not done here: ``len(payloads)`` when all are.
    next_index: int
    # That input's verdict: None when deferred (nothing applied: ``apply_encoded`` it),
    # else a refusal code (applied, seq counted: ``finish_refusal`` writes its reject).
    # Meaningless when ``next_index == len(payloads)``.
    code: int | None
    # The journal records of the inputs done, each MessagePack-encoded as ``Record``.
    records: list[bytes]
    # The chain hash after the last of those records (``prev_hash`` when none).
    head_hash: bytes
    # ``(index into payloads, [output event JSON bytes])`` of each done input with outputs.
    outputs: list[tuple[int, list[bytes]]]
    # Each record's input type, one byte per record (indexes into ``INPUT_KINDS``).
    kinds: bytes


@runtime_checkable
class EngineCore(Protocol):
    """An engine core. Feed it raw inputs in order; read its state through these methods.

    ``liquidation_scan`` (a constructor argument of both cores, and this attribute)
    names one switch: True makes a mark move visit every holder of the market (the
    benchmark baseline), False (the default) asks the liquidation index.
    """

    core_name: str  # "python" or "native": for logs and reports, never for branching
    liquidation_scan: bool
    # The clearing rules (SPEC §9 head): 1 is §1-§8 alone, 2 adds §9; fixed at creation.
    rules_version: int
    # Inputs applied so far; the next input gets seq + 1. (Tools that compare states
    # set it aside by writing it.)
    seq: int

    def apply(self, raw: bytes) -> list[OutputEvent]:
        """Apply one raw input (a JSON object's bytes); its output events."""
        ...

    def apply_encoded(self, raw: bytes) -> list[bytes]:
        """``apply``, the output events as their JSON bytes (what journals and sinks write)."""
        ...

    def check_invariants(self) -> None:
        """Raise ``InvariantViolation`` if the ledger does not balance (or its index is off)."""
        ...

    def dump_state(self) -> bytes:
        """The snapshot document; both cores write the same bytes for the same state."""
        ...

    def state_json(self) -> bytes:
        """The SPEC §8 state as canonical JSON bytes (keys in code-point order)."""
        ...

    def account_count(self) -> int:
        """Accounts in the ledger, system accounts included (O(1))."""
        ...

    def journal_run(
        self, payloads: list[bytes], sources: list[str], start: int, prev_hash: bytes
    ) -> JournalRun:
        """Apply ``payloads[start:]`` in order and write their journal records on the
        chain from ``prev_hash``, as far as the core can alone; the sequencer takes the
        input at ``next_index`` on the per-input path. (The Python core does none alone:
        it hands every input back, so the sequencer never asks which core it holds.)"""
        ...

    def finish_refusal(self, raw: bytes, code: int) -> list[bytes]:
        """The reject of an input ``journal_run`` refused with ``code`` (seq counted)."""
        ...

    def summary(self) -> LedgerSummary: ...

    def figures(self) -> LedgerFigures: ...

    # Read views for the daemon's read API (docs/read-api.yaml): canonical JSON bytes,
    # byte-identical on both cores (tests/engine/test_views.py).

    def account_view(self, account: str) -> bytes | None:
        """One account: cash, equity, IM, MM, positions with their distance to
        liquidation (``clearing.engine._views``); None for an unknown account. O(markets
        it holds)."""
        ...

    def market_view(self, market: str, depth: int) -> bytes | None:
        """One market: parameters, mark, held tick, holders, long open interest, and the
        first ``depth`` book levels per side (and under rules version 2 the volatility
        estimate); None for an unknown market. O(depth): the open interest is a running
        sum."""
        ...

    def rankings(self, limit: int) -> bytes:
        """Per market the ``limit`` largest positions, and the ``limit`` accounts nearest
        to liquidation (smallest E/MM). One pass over every account: O(accounts)."""
        ...
