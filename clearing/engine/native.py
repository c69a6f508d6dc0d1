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
    ParsedMarket,
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
    "NativeEngine",
    "ReplayedWindow",
    "account_count",
    "make_engine",
    "native_available",
]

CORES: Final = ("auto", "native", "python")

_KINDS: Final[dict[type, str]] = {
    ParsedFill: "fill",
    ParsedOracle: "oracle",
    ParsedDeposit: "deposit",
    ParsedWithdraw: "withdraw",
    ParsedBook: "book",
    ParsedMarket: "market",
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


def make_engine(core: str = "auto") -> Engine | NativeEngine:
    """An empty engine on the named core: "native", "python", or "auto" (native when the
    extension is installed). Raises RuntimeError for "native" without the extension."""
    if core not in CORES:
        raise ValueError(f"unknown engine core {core!r}; choose one of {', '.join(CORES)}")
    if core == "python" or (core == "auto" and _native is None):
        return Engine()
    if _native is None:
        raise RuntimeError(
            "the native engine core is not installed; build it with `pip install ./native` "
            "(needs a Rust toolchain) or choose the Python core (--core python)"
        )
    return NativeEngine()


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

    def __init__(self, core: Any = None) -> None:
        if _native is None:
            raise RuntimeError("the native engine core is not installed (pip install ./native)")
        self._core = core if core is not None else _native.Core()

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
    ) -> ReplayedWindow:
        """Verify the journal frames of ``buf[offset:end]`` (record ``seq`` first, chained
        to ``prev_hash``, none after ``stop_seq``; at most ``max_records`` records or
        ``max_bytes`` bytes) as the journal's format defines them, applying each record's
        payload as ``apply_encoded`` would, in one native call. The call ends early at a
        frame that fails a check, at a record the core does not finish alone or that
        does not carry the engine's next seq (``pending``), and, with
        ``stop_at_divergence``, after the first record whose outputs differ from the
        recorded ones (when ``verify``)."""
        (applied, events, derived, divergences, first, pending, error, *rest) = (
            self._core.replay_frames(
                buf, offset, end, seq, prev_hash, stop_seq, max_records, max_bytes,
                verify, stop_at_divergence,
            )
        )  # fmt: skip
        record: tuple[int, str, bytes, bytes, bytes] | None = None
        refusal: int | None = None
        if pending is not None:
            record = pending[:5]
            code = pending[5]
            refusal = None if code == _native.DEFER else code  # type: ignore[union-attr]
        next_offset, next_seq, last_hash, problem = rest
        return ReplayedWindow(
            applied, events, derived, divergences, first, record, refusal, error,
            next_offset, next_seq, last_hash, problem,
        )  # fmt: skip

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
        parsed = decode_input(raw)
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
        """Rebuild from snapshot bytes (either core's); ValueError if unreadable."""
        if _native is None:
            raise RuntimeError("the native engine core is not installed (pip install ./native)")
        return cls(_native.Core.load_state(data))

    def figures(self) -> dict[str, Any]:
        """The ledger figures the metrics export, from one native pass: accounts (system
        ones included), fund cash and equity, fee pool and bad-debt cash (e16 ints),
        markets as (id, long open interest e8, mark e8 or None, tick held), traders with a
        position and how many of them are below initial margin."""
        return self._core.figures()  # type: ignore[no-any-return]

    def summary(self) -> tuple[int, int, str, list[tuple[str, str, str | None]]]:
        """(accounts, positions, fund equity e16, [(market, long OI e8, mark e8)])."""
        return self._core.summary()  # type: ignore[no-any-return]
