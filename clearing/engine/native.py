"""The native core (the Rust crate in ``native/``) behind the ``Engine`` contract.

``NativeEngine`` gives the same outputs, byte for byte, and the same state as the pure
Python ``Engine``, which stays the reference: the differential tests run both on the
same streams. The division of work:

* the Rust core parses the common inputs itself and does all ledger work (positions,
  index, waterfall), writing output events straight to their JSON bytes;
* Python decodes what the fast parser declines (anything unusual: escapes in strings,
  invalid fields, malformed JSON) with the reference decoder, and formats reject
  details, so the text of every reject comes from one place (``refusal_reject``).

The extension is optional: ``native_available()`` says whether it is installed, and
``make_engine("auto")`` falls back to the Python core without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import msgspec

from clearing.engine.engine import Engine, refusal_reject
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
from clearing.engine.state import InvariantViolation

try:  # the compiled extension: `pip install ./native`
    import clearing_native as _native
except ImportError:  # pragma: no cover - exercised only where it is not installed
    _native = None

__all__ = [
    "CORES",
    "INPUT_KINDS",
    "NATIVE_RULES_VERSIONS",
    "NativeEngine",
    "ReplayedBatch",
    "account_count",
    "make_engine",
    "native_available",
    "native_rules_refusal",
]

CORES: Final = ("auto", "native", "python")

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


class ReplayedBatch(msgspec.Struct, gc=False):
    """Journal records the native core verified and applied in one call
    (``NativeEngine.frame_replayer``): how many, their output events, those events as
    the journal records them (joined), and, when outputs were verified, how many
    records re-derived different outputs than they recorded, the first as
    ``(seq, source, recorded, derived)``."""

    inputs: int
    events: int
    derived: bytes
    divergences: int
    first_divergence: tuple[int, str, bytes, bytes] | None


class RefusedRecord(msgspec.Struct, gc=False):
    """A journal record the native core refused (its seq is counted, its state
    untouched): ``NativeEngine.finish_refusal`` writes its reject."""

    record: Any
    code: int


def _then_raise(items: list[Any], error: BaseException) -> Iterator[Any]:
    yield from items
    raise error


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


def make_engine(core: str = "auto", rules_version: int = 1) -> Engine | NativeEngine:
    """An empty engine on the named core: "native", "python", or "auto" (native when the
    extension is installed and implements ``rules_version``, else Python). Raises
    RuntimeError for "native" without the extension or without those rules."""
    if core not in CORES:
        raise ValueError(f"unknown engine core {core!r}; choose one of {', '.join(CORES)}")
    native_rules = rules_version in NATIVE_RULES_VERSIONS
    if core == "python" or (core == "auto" and (_native is None or not native_rules)):
        return Engine(rules_version=rules_version)
    if not native_rules:
        raise RuntimeError(native_rules_refusal(rules_version))
    if _native is None:
        raise RuntimeError(
            "the native engine core is not installed; build it with `pip install ./native` "
            "(needs a Rust toolchain) or choose the Python core (--core python)"
        )
    return NativeEngine(rules_version=rules_version)


def account_count(engine: Engine | NativeEngine) -> int:
    """Accounts in the ledger, system accounts included, on either core."""
    if isinstance(engine, NativeEngine):
        return engine.summary()[0]
    return len(engine.ledger.accounts)


# ``journal_run``'s input type bytes; 0: not known (an input applied through Python).
INPUT_KINDS: Final = (None, "market", "deposit", "withdraw", "fill", "oracle", "book")


class NativeEngine:
    """The clearing engine on the native core. Feed it raw inputs in order."""

    core_name: Final = "native"

    def __init__(self, core: Any = None, rules_version: int = 1) -> None:
        if _native is None:
            raise RuntimeError("the native engine core is not installed (pip install ./native)")
        if rules_version not in NATIVE_RULES_VERSIONS:
            raise ValueError(native_rules_refusal(rules_version))
        self._core = core if core is not None else _native.Core(rules_version)

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
        """Whether the installed core has ``frame_replayer``'s native loop."""
        return hasattr(self._core, "replay_frames")

    def frame_replayer(self, verify: bool, stop_at_divergence: bool = False) -> Any:
        """A batch scan for ``clearing.journal._format.batch_scanner``: it verifies a
        batch of journal frames as ``scan_frames`` does and applies each record's payload
        as ``apply_encoded`` would, in one native call. It yields a ``ReplayedBatch`` per
        call, then, when the batch ended at a record the core does not finish alone, that
        record: a ``Record`` to apply with ``apply_encoded`` (the fast parser declined
        it) or a ``RefusedRecord`` (``finish_refusal``). An input that stopped the engine
        half-way raises its exception after the batch of the inputs applied before it.
        With ``stop_at_divergence`` a batch ends after the first record (verified) whose
        outputs differ from the recorded ones. A record that does not carry the engine's
        next seq is handed back like a declined one."""
        from clearing.journal._format import Record

        replay = self._core.replay_frames
        defer = _native.DEFER  # type: ignore[union-attr]

        def scan(
            buf: bytes,
            offset: int,
            end: int,
            seq: int,
            prev: bytes,
            stop: int,
            max_records: int,
            max_bytes: int,
        ) -> tuple[list[Any], int, int, bytes, bool]:
            args = (buf, offset, end, seq, prev, stop, max_records, max_bytes)
            (applied, events, derived, divergences, first, pending, error, *rest) = replay(
                *args, verify, stop_at_divergence
            )
            items: list[Any] = [ReplayedBatch(applied, events, derived, divergences, first)]
            if pending is not None:
                record = Record(*pending[:5])
                code = pending[5]
                items.append(record if code == defer else RefusedRecord(record, code))
            if error is not None:
                return (_then_raise(items, error), *rest)  # type: ignore[return-value]
            return (items, *rest)  # type: ignore[return-value]

        return scan

    def finish_refusal(self, raw: bytes, code: int) -> list[bytes]:
        """The reject of an input the core refused with ``code`` (seq already counted)."""
        return self._apply_slow(raw, code)

    def journal_run(
        self, payloads: list[bytes], sources: list[str], start: int, prev_hash: bytes
    ) -> tuple[int, int | None, list[bytes], bytes, list[tuple[int, list[bytes]]], bytes]:
        """The Kafka daemon's batch step (``clearing.kafka._batch``): apply
        ``payloads[start:]`` in order, extending the journal chain from ``prev_hash``.

        Returns ``(index, code, records, head_hash, outputs)``: the first input not done
        (``len(payloads)`` when all are) and its verdict, ``None`` when deferred (nothing
        applied: ``apply_encoded`` it) or a refusal code (applied: ``finish_refusal``);
        the journal records of the inputs done, MessagePack-encoded as ``Record``; the
        chain hash after them; ``(index, output event bytes)`` of inputs with outputs;
        each record's input type, one byte each (``INPUT_KINDS``).
        """
        index, code, records, head_hash, outputs, kinds = self._core.journal_run(
            payloads, sources, start, prev_hash
        )
        deferred = code == _native.DEFER  # type: ignore[union-attr]
        return index, (None if deferred else code), records, head_hash, outputs, kinds

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
    def load_state(cls, data: bytes) -> NativeEngine:
        """Rebuild from snapshot bytes (either core's); ValueError if unreadable or under
        rules the native core does not implement."""
        if _native is None:
            raise RuntimeError("the native engine core is not installed (pip install ./native)")
        from clearing.engine.persist import state_rules_version

        rules_version = state_rules_version(data)
        if rules_version not in NATIVE_RULES_VERSIONS:
            raise ValueError(native_rules_refusal(rules_version))
        return cls(_native.Core.load_state(data))

    @property
    def rules_version(self) -> int:
        """The ledger's rules version (SPEC §9), fixed at creation or by its snapshot."""
        return self._core.rules_version  # type: ignore[no-any-return]

    def figures(self) -> dict[str, Any]:
        """The ledger figures the metrics export, from one native pass: accounts (system
        ones included), fund cash and equity, fee pool and bad-debt cash (e16 ints),
        markets as (id, long open interest e8, mark e8 or None, tick held), traders with a
        position and how many of them are below initial margin."""
        return self._core.figures()  # type: ignore[no-any-return]

    def summary(self) -> tuple[int, int, str, list[tuple[str, str, str | None]]]:
        """(accounts, positions, fund equity e16, [(market, long OI e8, mark e8)])."""
        return self._core.summary()  # type: ignore[no-any-return]
