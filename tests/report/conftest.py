"""Journals for the report tests: written through the real sequencer."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearing.demo import SimConfig, Simulator
from clearing.sequencer import Sequencer


def journal_of(lines: list[bytes], directory: Path, batch: int = 400) -> Path:
    """A local journal of ``lines`` (one input each), as the sequencer writes it."""
    sequencer, _ = Sequencer.open_local(str(directory), None)
    try:
        for start in range(0, len(lines), batch):
            chunk = lines[start : start + batch]
            sequencer.submit([(f"test:{start + i + 1}", raw) for i, raw in enumerate(chunk)])
    finally:
        sequencer.close(snapshot=False)
    return directory


@pytest.fixture(scope="package")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 5k inputs of the demo's market, crash and the fund's top-up included."""
    lines = list(Simulator(SimConfig(seed=1, accounts=1000, duration_s=900.0)))
    return journal_of(lines, tmp_path_factory.mktemp("report") / "journal")
