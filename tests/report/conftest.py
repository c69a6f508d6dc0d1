"""Journals for the report tests: written through the real sequencer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clearing.demo import SimConfig, Simulator
from clearing.sequencer import Sequencer


def journal_of(
    lines: list[bytes], directory: Path, batch: int = 400, rules_version: int = 1
) -> Path:
    """A local journal of ``lines`` (one input each), as the sequencer writes it."""
    sequencer, _ = Sequencer.open_local(str(directory), None, rules_version=rules_version)
    try:
        for start in range(0, len(lines), batch):
            chunk = lines[start : start + batch]
            sequencer.submit([(f"test:{start + i + 1}", raw) for i, raw in enumerate(chunk)])
    finally:
        sequencer.close(snapshot=False)
    return directory


# About 5k inputs of the demo's markets, crash and the fund's top-up included.
SIZE = SimConfig(seed=1, accounts=1000, duration_s=900.0)


@pytest.fixture(scope="package")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 5k inputs of the demo's market, crash and the fund's top-up included."""
    lines = list(Simulator(SIZE))
    return journal_of(lines, tmp_path_factory.mktemp("report") / "journal")


@pytest.fixture(scope="package")
def journal_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same simulation written for rules version 2 (SPEC §9), as ``clearing demo``
    runs it: ADL, partial steps, funding and the fee split all happen."""
    lines = list(Simulator(dataclasses.replace(SIZE, rules_version=2)))
    return journal_of(lines, tmp_path_factory.mktemp("report-v2") / "journal", rules_version=2)
