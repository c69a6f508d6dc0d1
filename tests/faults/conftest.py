"""Shared helpers for the fault tests: a realistic input stream and a sequencer to break."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from clearing.engine import Engine
from clearing.engine.persist import dump_state
from clearing.journal import LocalJournal
from clearing.sequencer import RecoveryResult, Sequencer, recover
from testkit.hostile import StreamModel, valid_case


def realistic_lines(count: int, seed: int = 3) -> list[bytes]:
    """``count`` valid inputs with liquidations, fund draws and clawbacks in them."""
    model = StreamModel(random.Random(seed))
    lines = [valid_case(f).raw for f in model.genesis()]
    while len(lines) < count:
        lines.extend(valid_case(f).raw for f in model.next_events())
    return lines[:count]


def state_after(lines: Sequence[bytes]) -> bytes:
    """The engine state (``dump_state``) after exactly ``lines``, each applied once."""
    engine = Engine()
    for line in lines:
        engine.apply(line)
    return dump_state(engine)


def open_sequencer(
    root: Path,
    *,
    segment_bytes: int = 1024,
    snapshot_every: int = 10**9,
    fsync: str = "never",
) -> tuple[Sequencer, RecoveryResult]:
    """``Sequencer.open_local`` with a small segment size, so that rolls happen (fsync
    "never" by default: these tests model crashes themselves, and fsyncs are slow)."""
    journal = LocalJournal(root / "journal", segment_bytes=segment_bytes, fsync=fsync)  # type: ignore[arg-type]
    try:
        recovery = recover(str(root / "snapshots"), journal)
    except BaseException:
        journal.close()
        raise
    sequencer = Sequencer(
        recovery.engine, journal, str(root / "snapshots"), snapshot_every_inputs=snapshot_every
    )
    return sequencer, recovery


def resume_position(sequencer: Sequencer) -> int:
    """Where a feeder resumes: the newest record's source, as ``clearing ingest`` does."""
    last = sequencer.journal.last_record()
    return 0 if last is None else int(last.source.rpartition(":")[2])


def feed(sequencer: Sequencer, lines: Sequence[bytes], start: int, stop: int, batch: int) -> int:
    """Submit ``lines[start:stop]`` in batches (sources ``line:<1-based index>``)."""
    for low in range(start, stop, batch):
        chunk = range(low, min(stop, low + batch))
        sequencer.submit([(f"line:{i + 1}", lines[i]) for i in chunk])
    return stop


def drop(sequencer: Sequencer) -> None:
    """What a killed process leaves: no close, no sync; the kernel closes the files."""
    sequencer.journal._release()  # type: ignore[attr-defined]


def journal_sources(root: Path) -> list[str]:
    with LocalJournal(root / "journal", readonly=True) as journal:
        return [record.source for record in journal.read()]


@pytest.fixture(scope="session")
def lines() -> list[bytes]:
    return realistic_lines(400)


@pytest.fixture
def umask_zero() -> object:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)
