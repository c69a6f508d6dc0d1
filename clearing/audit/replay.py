"""``clearing replay``: the auditor's way to reproduce the ledger from its inputs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import BinaryIO

import msgspec

from clearing.audit.events_out import open_events
from clearing.audit.sources import is_kafka_source
from clearing.engine import EngineCore, make_engine, state_file_bytes, state_sha256
from clearing.engine.rules_v2 import NEWEST_RULES
from clearing.errors import CoreUnavailable, UserError
from clearing.heap import HeapSettler

__all__ = [
    "ReplayResult",
    "encode_state",
    "engine_for",
    "replay_command",
    "replay_lines",
]

# Every encoded event starts with its tag (msgspec writes the tag field first).
_REJECT_PREFIX = b'{"type":"reject"'


def encode_state(engine: EngineCore) -> bytes:
    """The SPEC §8 state as canonical JSON bytes (keys in code-point order)."""
    return engine.state_json()


def engine_for(core: str, rules_version: int = 1) -> EngineCore:
    """An empty engine on the named core under ``rules_version``, or a UserError that
    says how to get it."""
    try:
        return make_engine(core, rules_version=rules_version)
    except CoreUnavailable as exc:
        raise UserError(str(exc)) from exc


class ReplayResult(msgspec.Struct):
    inputs: int
    outputs: int
    rejects: int


def iter_numbered_inputs(stream: BinaryIO, after_line: int = 0) -> Iterator[tuple[int, bytes]]:
    """(line number, input) of a .jsonl stream per SPEC §8: blank lines skipped and not
    counted as inputs; lines up to ``after_line`` skipped (to resume an ingest)."""
    for line_no, line in enumerate(stream, start=1):
        if line_no <= after_line:
            continue
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.strip(b" \t\r"):
            yield line_no, line


def iter_file_inputs(stream: BinaryIO) -> Iterator[bytes]:
    """Input lines of a .jsonl stream, per SPEC §8 (blank lines skipped, not counted)."""
    for _, line in iter_numbered_inputs(stream):
        yield line


def replay_lines(
    engine: EngineCore,
    lines: Iterator[bytes],
    events_out: BinaryIO | None,
    check_every_input: bool = False,
) -> ReplayResult:
    outputs = rejects = inputs = 0
    write = events_out.write if events_out is not None else None
    heap = HeapSettler()
    apply_encoded = engine.apply_encoded
    for line in lines:
        inputs += 1
        produced = apply_encoded(line)
        heap.add()
        if produced:
            outputs += len(produced)
            for event in produced:
                if event.startswith(_REJECT_PREFIX):
                    rejects += 1
                if write is not None:
                    write(event + b"\n")
        if check_every_input:
            engine.check_invariants()
    engine.check_invariants()
    return ReplayResult(inputs, outputs, rejects)


def replay_command(args: argparse.Namespace) -> int:
    path = args.input
    if is_kafka_source(path) or os.path.isdir(path):
        from clearing.audit.journal_replay import replay_journal_command

        return replay_journal_command(args)
    if not os.path.exists(path):
        raise UserError(
            f"{path}: no such file or directory; pass a .jsonl file of input events, "
            f"a journal directory or kafka://HOST:PORT/TOPIC"
        )
    if args.config is not None:
        raise UserError("--config applies to kafka:// sources only")
    if args.until is not None or args.until_ts is not None:
        raise UserError("--until and --until-ts apply to journals only")
    engine = engine_for(args.core, NEWEST_RULES if args.rules is None else args.rules)
    try:
        source = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        events_out = open_events(args.events)
    except UserError:
        source.close()
        raise
    try:
        with source:
            result = replay_lines(
                engine, iter_file_inputs(source), events_out.stream, args.check_invariants
            )
    finally:
        events_out.close()
    if args.state:
        try:
            with open(args.state, "wb") as state_out:
                state_out.write(state_file_bytes(engine))
        except OSError as exc:
            raise UserError(f"cannot write {args.state}: {exc.strerror}") from exc
    if not args.quiet:
        print(
            f"replayed {result.inputs} inputs: {result.outputs} output events "
            f"({result.rejects} rejects); state sha256 {state_sha256(engine)}",
            file=sys.stderr,
        )
    events_out.explain_held_back(result.outputs)
    return 0
