"""Running scenarios through the real engine, each in a forked child.

The parent holds the ledger at its head in an engine (either core) and never applies a
scenario to it. For each scenario it forks: the child starts with a copy-on-write image
of the whole ledger, applies the scenario's oracle inputs with the core's ordinary
``apply_encoded``, sends back a summary of the outputs (``Outcome``) through a pipe and
exits. A scenario therefore costs the fork (page tables, not the ledger) plus what the
engine does with the ticks: the liquidation index hands it only the accounts whose
thresholds the move crossed. The engine stays pure; the forking is all here.

How a move becomes inputs (``apply_scenario``): in market-id order, one oracle input at
the shocked price; if the oracle guard holds it back (the engine answers
``oracle_held``), the same input again, which confirms the jump (SPEC §5: a tick within
the guard of the held price). Appending those inputs to the journal gives the same events.
"""

from __future__ import annotations

import gc
import os
import select
import traceback
from collections.abc import Sequence
from typing import Final

import msgspec

from clearing.engine import EngineCore
from clearing.errors import ScenarioFailed
from clearing.heap import settle_heap
from clearing.risk._outcome import Outcome, StepOutputs, summarise
from clearing.risk._shock import Move, oracle_input

__all__ = ["apply_scenario", "run_scenarios"]

_HELD: Final = b'{"type":"oracle_held"'
_REJECT: Final = b'{"type":"reject"'
_READ_BYTES: Final = 1 << 20
# Exit status of a child whose scenario raised (its traceback is in the pipe instead).
_CHILD_FAILED: Final = 70
_encode = msgspec.json.Encoder().encode  # JSON: amounts can pass 64 bits
_decode_outcome = msgspec.json.Decoder(Outcome).decode


def _apply(engine: EngineCore, market: str, raw: bytes) -> StepOutputs:
    outputs = engine.apply_encoded(raw)
    if any(event.startswith(_REJECT) for event in outputs):
        raise ScenarioFailed(f"the engine rejected the shock input {raw!r}: {outputs[0]!r}")
    return StepOutputs(market, raw, outputs)


def apply_scenario(
    engine: EngineCore,
    moves: Sequence[Move],
    *,
    measure_fund: bool,
    keep_events: bool,
    fund_before_e16: int | None = None,
) -> Outcome:
    """Apply ``moves`` to ``engine`` (which it changes: call it on a copy) and summarise.
    ``fund_before_e16``: the fund's equity before, when the caller knows it already."""
    before = fund_before_e16
    if measure_fund and before is None:
        before = engine.summary().fund_equity_e16
    steps: list[StepOutputs] = []
    for move in sorted(moves, key=lambda m: m.market):
        raw = oracle_input(move.market, move.price_e8)
        step = _apply(engine, move.market, raw)
        steps.append(step)
        if any(event.startswith(_HELD) for event in step.outputs):
            confirm = _apply(engine, move.market, raw)
            if any(event.startswith(_HELD) for event in confirm.outputs):
                raise ScenarioFailed(f"the oracle guard held {raw!r} twice")
            steps.append(confirm)
    after = engine.summary().fund_equity_e16 if measure_fund else None
    return summarise(
        steps,
        fund_equity_before_e16=before,
        fund_equity_after_e16=after,
        keep_events=keep_events,
    )


def _child(
    engine: EngineCore,
    moves: Sequence[Move],
    write_fd: int,
    fund_before_e16: int | None,
    keep: bool,
) -> None:
    """In the forked child: run one scenario, write its outcome, never return."""
    status = 0
    try:
        gc.disable()  # a collection would touch (and so copy) every page of the heap
        payload = b"O" + _encode(
            apply_scenario(
                engine,
                moves,
                measure_fund=fund_before_e16 is not None,
                keep_events=keep,
                fund_before_e16=fund_before_e16,
            )
        )
    except BaseException:  # reported to the parent, which raises it
        payload, status = b"E" + traceback.format_exc().encode(), _CHILD_FAILED
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
    finally:
        os._exit(status)


class _Running:
    def __init__(self, pid: int, index: int, read_fd: int) -> None:
        self.pid, self.index, self.read_fd = pid, index, read_fd
        self.chunks: list[bytes] = []


def _finish(job: _Running) -> Outcome:
    os.close(job.read_fd)
    _, status = os.waitpid(job.pid, 0)
    payload = b"".join(job.chunks)
    if os.waitstatus_to_exitcode(status) != 0 or not payload.startswith(b"O"):
        detail = payload[1:].decode(errors="replace").strip().splitlines()
        raise ScenarioFailed(
            f"scenario {job.index + 1} failed in its child process "
            f"(exit {os.waitstatus_to_exitcode(status)}): {detail[-1] if detail else 'no output'}"
        )
    return _decode_outcome(payload[1:])


def run_scenarios(
    engine: EngineCore,
    scenarios: Sequence[Sequence[Move]],
    *,
    jobs: int,
    measure_fund: bool = False,
    keep_events: bool = False,
) -> list[Outcome]:
    """Each scenario's ``Outcome``, in order; ``engine`` is left exactly as it was.
    At most ``jobs`` children run at once."""
    results: list[Outcome | None] = [None] * len(scenarios)
    running: dict[int, _Running] = {}
    pending = iter(enumerate(scenarios))
    # The same for every scenario: measured once here, not once per child.
    fund_before_e16 = engine.summary().fund_equity_e16 if measure_fund else None
    # The ledger settled into the permanent generation (clearing.heap's policy for
    # long-lived objects): a child's collections skip it, so they copy none of its pages.
    settle_heap()
    try:
        exhausted = False
        while True:
            while not exhausted and len(running) < max(1, jobs):
                item = next(pending, None)
                if item is None:
                    exhausted = True
                    break
                index, moves = item
                read_fd, write_fd = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(read_fd)
                    _child(engine, moves, write_fd, fund_before_e16, keep_events)
                os.close(write_fd)
                running[read_fd] = _Running(pid, index, read_fd)
            if not running:
                break
            ready, _, _ = select.select(list(running), [], [])
            for fd in ready:
                chunk = os.read(fd, _READ_BYTES)
                job = running[fd]
                if chunk:
                    job.chunks.append(chunk)
                    continue
                del running[fd]
                results[job.index] = _finish(job)
    finally:
        for job in running.values():  # only after an error: stop the others
            os.close(job.read_fd)
            os.kill(job.pid, 9)
            os.waitpid(job.pid, 0)
    return [outcome for outcome in results if outcome is not None]
