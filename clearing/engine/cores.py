"""Choosing an engine core: the factories every caller uses, and ``run_jsonl``.

Callers name a core ("native", "python" or "auto": native when the extension is
installed) and get an ``EngineCore``; nothing outside ``clearing.engine`` constructs a
core class or asks which one it holds.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from clearing.engine._contract import EngineCore
from clearing.engine.engine import Engine, iter_jsonl_lines
from clearing.engine.events import encode_output
from clearing.engine.native import (
    NATIVE_RULES_VERSIONS,
    NativeEngine,
    native_available,
    native_rules_refusal,
)
from clearing.engine.persist import state_rules_version
from clearing.errors import CoreUnavailable, StateFormatError

__all__ = [
    "CORES",
    "load_engine",
    "make_engine",
    "native_available",
    "run_jsonl",
    "state_file_bytes",
    "state_sha256",
]

CORES: Final = ("auto", "native", "python")


def _use_native(core: str, rules_version: int) -> bool:
    """Whether ``core`` names the native core for a ledger under ``rules_version``;
    ValueError for an unknown name, CoreUnavailable for "native" under rules it lacks."""
    if core not in CORES:
        raise ValueError(f"unknown engine core {core!r}; choose one of {', '.join(CORES)}")
    native_rules = rules_version in NATIVE_RULES_VERSIONS
    if core == "native" and not native_rules:
        raise CoreUnavailable(native_rules_refusal(rules_version))
    return core == "native" or (core == "auto" and native_available() and native_rules)


def make_engine(
    core: str = "auto", liquidation_scan: bool = False, rules_version: int = 1
) -> EngineCore:
    """An empty engine on the named core under ``rules_version`` ("auto" takes the
    native core only when it implements those rules). ``liquidation_scan``: see
    ``EngineCore``. CoreUnavailable (saying how to get it) for "native" without the
    extension or without those rules."""
    if _use_native(core, rules_version):
        return NativeEngine(liquidation_scan)
    return Engine(liquidation_scan, rules_version)


def load_engine(
    snapshot: bytes, core: str = "python", liquidation_scan: bool = False
) -> EngineCore:
    """An engine on the named core rebuilt from ``dump_state`` bytes of either core;
    StateFormatError if the bytes are not an engine state of this version."""
    if not _use_native(core, state_rules_version(snapshot)):
        return Engine.load_state(snapshot, liquidation_scan)
    try:
        return NativeEngine.load_state(snapshot, liquidation_scan)
    except ValueError as exc:
        raise StateFormatError(str(exc)) from exc


def state_file_bytes(engine: EngineCore) -> bytes:
    """The SPEC §8 state as ``clearing replay --state`` writes it: canonical JSON (keys
    in code-point order, byte-identical on both cores) and a final newline."""
    return engine.state_json() + b"\n"


def state_sha256(engine: EngineCore) -> str:
    """THE state hash (hex): SHA-256 of ``state_file_bytes``, so ``sha256sum`` of a
    ``--state`` file gives it too. Replay, the report, ``clearing snapshot show --hash``
    and the daemon's ``/state-hash`` all print this one; two ledgers agree iff it does."""
    return hashlib.sha256(state_file_bytes(engine)).hexdigest()


def run_jsonl(
    data: bytes, core: str = "python", rules_version: int = 1
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Replay a whole .jsonl file in memory: (output events as JSON dicts, final state).

    A convenience for tests and small tools; it goes through the exact output bytes.
    ``core`` names the engine core ("python", "native" or "auto").
    """
    engine = make_engine(core, rules_version=rules_version)
    events: list[dict[str, object]] = []
    for _, line in iter_jsonl_lines(data):
        for event in engine.apply(line):
            events.append(msgspec.json.decode(encode_output(event)))
    return events, msgspec.json.decode(engine.state_json())
