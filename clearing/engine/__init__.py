"""The pure clearing core: no I/O, no clock, no asyncio. Same inputs, same bytes.

Callers hold an ``EngineCore`` (either core) from ``make_engine`` or ``load_engine``.
"""

from clearing.engine._contract import (
    EngineCore,
    LedgerFigures,
    LedgerSummary,
    MarketFigures,
    MarketSummary,
)
from clearing.engine.cores import (
    CORES,
    load_engine,
    make_engine,
    native_available,
    run_jsonl,
    state_file_bytes,
    state_sha256,
)
from clearing.engine.engine import Engine, iter_jsonl_lines
from clearing.engine.events import REJECT_REASONS, OutputEvent, encode_output
from clearing.engine.native import INPUT_KINDS
from clearing.errors import InvariantViolation

__all__ = [
    "CORES",
    "INPUT_KINDS",
    "REJECT_REASONS",
    "Engine",
    "EngineCore",
    "InvariantViolation",
    "LedgerFigures",
    "LedgerSummary",
    "MarketFigures",
    "MarketSummary",
    "OutputEvent",
    "encode_output",
    "iter_jsonl_lines",
    "load_engine",
    "make_engine",
    "native_available",
    "run_jsonl",
    "state_file_bytes",
    "state_sha256",
]
