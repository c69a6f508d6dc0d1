"""The pure clearing core: no I/O, no clock, no asyncio. Same inputs, same bytes."""

from clearing.engine.engine import Engine, iter_jsonl_lines, run_jsonl
from clearing.engine.events import REJECT_REASONS, OutputEvent, encode_output
from clearing.engine.state import InvariantViolation

__all__ = [
    "REJECT_REASONS",
    "Engine",
    "InvariantViolation",
    "OutputEvent",
    "encode_output",
    "iter_jsonl_lines",
    "run_jsonl",
]
