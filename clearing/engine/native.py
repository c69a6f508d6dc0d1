"""The native core (the Rust crate in ``native/``) behind the ``EngineCore`` contract.

``NativeEngine`` gives the same outputs, byte for byte, and the same state as the pure
Python ``Engine``, which stays the reference: the differential tests run both on the
same streams. The division of work:

* the Rust core parses the common inputs itself and does all ledger work (positions,
  index, waterfall), writing output events straight to their JSON bytes;
* Python decodes what the fast parser declines (anything unusual: escapes in strings,
  invalid fields, malformed JSON) with the reference decoder, and formats reject
  details, so the text of every reject comes from one place (``refusal_reject``).

The extension is optional: ``native_available()`` says whether it is installed, and
``make_engine("auto")`` (``clearing.engine.cores``) falls back to the Python core without
it.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import msgspec

from clearing.engine._contract import (
    JournalRun,
    LedgerFigures,
    LedgerSummary,
    MarketFigures,
    MarketSummary,
)
from clearing.engine.engine import refusal_reject
from clearing.engine.events import (
    REJECT_REASONS,
    DecodeFailure,
    OutputEvent,
    ParsedBook,
    ParsedDeposit,
    ParsedFill,
    ParsedFunding,
    ParsedMarket,
    ParsedMarketV2,
    ParsedOracle,
    ParsedWithdraw,
    Reject,
    decode_input,
    decode_output,
    encode_output,
)
from clearing.engine.persist import state_rules_version
from clearing.errors import CoreUnavailable, InvariantViolation

try:  # the compiled extension: `pip install ./native`
    import clearing_native as _native
except ImportError:  # pragma: no cover - exercised only where it is not installed
    _native = None

__all__ = [
    "INPUT_KINDS",
    "NATIVE_RULES_VERSIONS",
    "JournalRun",
    "NativeEngine",
    "ReplayedWindow",
    "native_available",
    "native_rules_refusal",
]

_NOT_INSTALLED: Final = (
    "the native engine core is not installed; build it with `pip install ./native` "
    "(needs a Rust toolchain) or choose the Python core (--core python)"
)

_KINDS: Final[dict[type, str]] = {
    ParsedFill: "fill",
    ParsedOracle: "oracle",
    ParsedDeposit: "deposit",
    ParsedWithdraw: "withdraw",
    ParsedBook: "book",
    ParsedMarket: "market",
    ParsedMarketV2: "market",
    ParsedFunding: "funding",
}


class ReplayedWindow(msgspec.Struct, gc=False):
    """What one ``NativeEngine.replay_window`` call verified and applied.

    ``inputs`` records applied natively, ``events`` their output events and ``derived``
    those events as the journal records them (joined); with outputs verified,
    ``divergences`` counts the records whose re-derived outputs differ from the recorded
    ones, the first as ``(seq, source, recorded, derived)``. ``pending`` is a verified
    record the core did not finish, as ``(seq, source, payload, outputs, chain_hash)``:
    ``refusal`` None means deferred (not applied: ``apply_encoded`` it), else the core
    refused it with that code (its seq counted: ``finish_refusal``). ``error`` is what
    stopped the engine half-way through an input (raise it once the inputs before it
    are accounted for). ``next_offset``, ``next_seq`` and ``last_hash`` say where the
    frames verified end; ``problem`` that the frame at ``next_offset`` failed a check
    (the journal's reader classifies it).
    """

    inputs: int
    events: int
    derived: bytes
    divergences: int
    first_divergence: tuple[int, str, bytes, bytes] | None
    pending: tuple[int, str, bytes, bytes, bytes] | None
    refusal: int | None
    error: BaseException | None
    next_offset: int
    next_seq: int
    last_hash: bytes
    problem: bool


def native_available() -> bool:
    return _native is not None


# The rules versions the native core implements (version 2 is SPEC §9).
NATIVE_RULES_VERSIONS: Final = (1, 2)


def native_rules_refusal(rules_version: int) -> str:
    """The one-line error for a ledger under rules the native core does not implement."""
    return (
        f"the native engine core does not implement rules version {rules_version} yet; "
        f"use the Python core (--core python)"
    )


class _FramesReplayed(NamedTuple):
    """``Core.replay_frames``' result, field by field (see its Rust doc comment)."""

    applied: int  # records applied in this call
    events: int  # their output events
    derived: bytes  # those events joined as the journal records them
    divergences: int  # records whose re-derived outputs differ from the recorded ones
    first_divergence: tuple[int, str, bytes, bytes] | None  # (seq, source, rec, derived)
    pending: tuple[int, str, bytes, bytes, bytes, int] | None  # record fields + code
    error: BaseException | None  # what stopped the engine half-way, raised after the rest
    next_offset: int  # as ``scan_frames``: where the next frame starts
    next_seq: int
    last_hash: bytes
    problem: bool  # the scan stopped at a frame that failed a check


# ``journal_run``'s input type bytes; 0: not known (an input applied through Python).
INPUT_KINDS: Final = (None, "market", "deposit", "withdraw", "fill", "oracle", "book")


class NativeEngine:
    """The clearing engine on the native core. Feed it raw inputs in order."""

    core_name: Final = "native"

    def __init__(
        self, liquidation_scan: bool = False, *, core: Any = None, rules_version: int = 1
    ) -> None:
        """``liquidation_scan``: see ``EngineCore``. ``core``: a loaded ``Core`` to wrap
        (it carries its own rules version); else a new ledger under ``rules_version``."""
        if _native is None:
            raise CoreUnavailable(_NOT_INSTALLED)
        if rules_version not in NATIVE_RULES_VERSIONS:
            raise CoreUnavailable(native_rules_refusal(rules_version))
        self._core = core if core is not None else _native.Core(rules_version)
        self._core.liquidation_scan = liquidation_scan

    @property
    def liquidation_scan(self) -> bool:
        """True: a mark move visits every holder (the benchmark baseline)."""
        return self._core.liquidation_scan  # type: ignore[no-any-return]

    @liquidation_scan.setter
    def liquidation_scan(self, liquidation_scan: bool) -> None:
        self._core.liquidation_scan = liquidation_scan

    @property
    def seq(self) -> int:
        """Inputs applied so far; the next input gets seq + 1."""
        return self._core.seq  # type: ignore[no-any-return]

    @seq.setter
    def seq(self, seq: int) -> None:
        self._core.seq = seq

    def apply_encoded(self, raw: bytes) -> list[bytes]:
        """Apply one raw input; its output events as JSON bytes (``encode_output`` form)."""
        result = self._core.apply(raw)
        if result is None:
            return []
        if type(result) is list:
            return result
        return self._apply_slow(raw, result)

    def apply(self, raw: bytes) -> list[OutputEvent]:
        """Apply one raw input and return its output events (as ``Engine.apply`` does)."""
        return [decode_output(event) for event in self.apply_encoded(raw)]

    def apply_many(self, raws: Any) -> list[OutputEvent]:
        out: list[OutputEvent] = []
        for raw in raws:
            out.extend(self.apply(raw))
        return out

    @property
    def replays_frames(self) -> bool:
        """Whether the installed core verifies and applies journal frames in one call
        (``replay_window``)."""
        return hasattr(self._core, "replay_frames")

    @property
    def replays_all_outputs_recorded(self) -> bool:
        """Whether ``replay_window`` can hold a record that recorded no outputs to
        re-deriving none (``all_outputs_recorded``; a core built before it cannot)."""
        signature = getattr(getattr(self._core, "replay_frames", None), "__text_signature__", None)
        return "all_outputs_recorded" in (signature or "")

    def replay_window(
        self,
        buf: bytes,
        offset: int,
        end: int,
        seq: int,
        prev_hash: bytes,
        stop_seq: int,
        max_records: int,
        max_bytes: int,
        verify: bool,
        stop_at_divergence: bool,
        all_outputs_recorded: bool = False,
    ) -> ReplayedWindow:
        """Verify the journal frames of ``buf[offset:end]`` (record ``seq`` first, chained
        to ``prev_hash``, none after ``stop_seq``; at most ``max_records`` records or
        ``max_bytes`` bytes) as the journal's format defines them, applying each record's
        payload as ``apply_encoded`` would, in one native call. The call ends early at a
        frame that fails a check, at a record the core does not finish alone or that
        does not carry the engine's next seq (``pending``), and, with
        ``stop_at_divergence``, after the first record whose outputs differ from the
        recorded ones (when ``verify``). With ``all_outputs_recorded`` (only where
        ``replays_all_outputs_recorded``) a record that recorded no outputs must
        re-derive none; without it, such a record is not compared."""
        # Passed only when set, so that a core built before the flag still replays.
        strict = {"all_outputs_recorded": True} if all_outputs_recorded else {}
        done = _FramesReplayed._make(
            self._core.replay_frames(
                buf, offset, end, seq, prev_hash, stop_seq, max_records, max_bytes,
                verify, stop_at_divergence, **strict,
            )
        )  # fmt: skip
        record: tuple[int, str, bytes, bytes, bytes] | None = None
        refusal: int | None = None
        if done.pending is not None:
            record = done.pending[:5]
            code = done.pending[5]
            refusal = None if code == _native.DEFER else code  # type: ignore[union-attr]
        return ReplayedWindow(
            done.applied, done.events, done.derived, done.divergences,
            done.first_divergence, record, refusal, done.error,
            done.next_offset, done.next_seq, done.last_hash, done.problem,
        )  # fmt: skip

    def finish_refusal(self, raw: bytes, code: int) -> list[bytes]:
        """The reject of an input the core refused with ``code`` (seq already counted)."""
        return self._apply_slow(raw, code)

    def journal_run(
        self, payloads: list[bytes], sources: list[str], start: int, prev_hash: bytes
    ) -> JournalRun:
        """The Kafka daemon's batch step (``clearing.kafka._batch``): apply
        ``payloads[start:]`` in order (``sources[i]`` is input i's journal source),
        extending the journal chain from ``prev_hash``; it stops before an input this
        core does not finish alone. ``JournalRun`` names the six results."""
        index, code, records, head_hash, outputs, kinds = self._core.journal_run(
            payloads, sources, start, prev_hash
        )
        deferred = code == _native.DEFER  # type: ignore[union-attr]
        return JournalRun(index, None if deferred else code, records, head_hash, outputs, kinds)

    def _apply_slow(self, raw: bytes, code: int) -> list[bytes]:
        core = self._core
        parsed = decode_input(raw, core.rules_version)
        if code == _native.DEFER:  # type: ignore[union-attr]
            if type(parsed) is DecodeFailure:
                core.skip()
                reject = Reject(core.seq, parsed.reason, parsed.detail, **parsed.known)
                return [encode_output(reject)]
            fields: tuple[Any, ...] = tuple(parsed)
            if type(parsed) is ParsedBook:
                fields = (parsed.market, list(parsed.bids.items()), list(parsed.asks.items()))
            result = core.apply_parsed(_KINDS[type(parsed)], fields)
            if result is None:
                return []
            if type(result) is list:
                return result
            code = result
        assert type(parsed) is not DecodeFailure, "the fast parser accepted an invalid input"
        return [encode_output(refusal_reject(core.seq, REJECT_REASONS[code - 1], parsed))]

    # -- views -------------------------------------------------------------------------

    def state_json(self) -> bytes:
        """The SPEC §8 state as canonical JSON bytes (what ``encode_state`` writes)."""
        return self._core.state_json()  # type: ignore[no-any-return]

    def state(self) -> dict[str, object]:
        return msgspec.json.decode(self._core.state_json())  # type: ignore[no-any-return]

    def check_invariants(self) -> None:
        """Raise ``InvariantViolation`` if the ledger does not balance (or its index is off)."""
        error = self._core.invariant_error() or self._core.index_error()
        if error is not None:
            raise InvariantViolation(error)

    def dump_state(self) -> bytes:
        """The snapshot document, byte-identical to ``persist.dump_state`` of the same state."""
        return self._core.dump_state()  # type: ignore[no-any-return]

    @classmethod
    def load_state(cls, data: bytes, liquidation_scan: bool = False) -> NativeEngine:
        """Rebuild from snapshot bytes (either core's); ValueError if unreadable or under
        rules the native core does not implement."""
        if _native is None:
            raise CoreUnavailable(_NOT_INSTALLED)
        rules_version = state_rules_version(data)
        if rules_version not in NATIVE_RULES_VERSIONS:
            raise ValueError(native_rules_refusal(rules_version))
        return cls(liquidation_scan, core=_native.Core.load_state(data))

    @property
    def rules_version(self) -> int:
        """The ledger's rules version (SPEC §9), fixed at creation or by its snapshot."""
        return self._core.rules_version  # type: ignore[no-any-return]

    def account_count(self) -> int:
        """Accounts in the ledger, system accounts included (O(1))."""
        return self._core.account_count()  # type: ignore[no-any-return]

    def figures(self) -> LedgerFigures:
        """The ledger figures the metrics export, from one native pass."""
        raw = self._core.figures()
        return LedgerFigures(
            accounts=raw["accounts"],
            fund_cash_e16=raw["fund_cash_e16"],
            fund_equity_e16=raw["fund_equity_e16"],
            fee_pool_cash_e16=raw["fee_pool_cash_e16"],
            bad_debt_cash_e16=raw["bad_debt_cash_e16"],
            # Each market's volatility estimate and current fund share come with it
            # (version 1: 0 and 1e8), as the Python core's _figures gives them.
            markets=[MarketFigures(*market) for market in raw["markets"]],
            traders=raw["traders"],
            traders_below_im=raw["below_im"],
        )

    def account_view(self, account: str) -> bytes | None:
        """One account for the read API, byte-identical to the Python core's."""
        return self._core.account_view(account)  # type: ignore[no-any-return]

    def market_view(self, market: str, depth: int) -> bytes | None:
        """One market for the read API, byte-identical to the Python core's."""
        return self._core.market_view(market, depth)  # type: ignore[no-any-return]

    def rankings(self, limit: int) -> bytes:
        """The read API's ranked lists, byte-identical to the Python core's."""
        return self._core.rankings(limit)  # type: ignore[no-any-return]

    def summary(self) -> LedgerSummary:
        """Counts for tools and logs (the Rust core gives its big numbers as decimals)."""
        accounts, positions, fund_equity_e16, markets = self._core.summary()
        return LedgerSummary(
            accounts=accounts,
            positions=positions,
            fund_equity_e16=int(fund_equity_e16),
            markets=[
                MarketSummary(market, int(long_e8), None if mark_e8 is None else int(mark_e8))
                for market, long_e8, mark_e8 in markets
            ],
        )
