"""A stress result is what the engine does when the shock's inputs are appended for real.

``clearing stress`` runs the shock in a forked copy of the ledger; here the same inputs
are appended to a copy of the journal with ``clearing ingest`` and the two are compared:
the same inputs, the same output events byte for byte, the same figures, the same fund
equity after, on both cores. The original journal is left byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import msgspec
import pytest

from clearing.cli import main
from clearing.engine import native_available
from clearing.journal import LocalJournal
from clearing.risk._outcome import StepOutputs, parse_e16, summarise
from clearing.risk._render import outcome_json
from clearing.risk._source import load_ledger
from tests.risk.ledger import ledger_inputs

CORES = [
    "python",
    pytest.param(
        "native", marks=pytest.mark.skipif(not native_available(), reason="no native core")
    ),
]
SHOCKS = ["--shock", "BTC-PERP=-25%", "--shock", "ETH-PERP=-15%"]


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _journal(tmp_path: Path, core: str) -> Path:
    inputs = tmp_path / "ledger.jsonl"
    inputs.write_bytes(b"".join(line + b"\n" for line in ledger_inputs()))
    journal = tmp_path / "journal"
    assert main(["ingest", str(inputs), "--journal", str(journal), "--core", core]) == 0
    return journal


@pytest.mark.parametrize("core", CORES)
def test_stress_equals_appending_its_inputs(
    tmp_path: Path, core: str, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = _journal(tmp_path, core)
    capsys.readouterr()
    before = _tree_digest(journal)
    inputs, events = tmp_path / "shock-inputs.jsonl", tmp_path / "shock-events.jsonl"
    argv = ["stress", str(journal), *SHOCKS, "--json", "--core", core]
    assert main([*argv, "--inputs", str(inputs), "--events", str(events)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert _tree_digest(journal) == before  # the ledger itself is never touched

    appended = tmp_path / "appended"
    shutil.copytree(journal, appended)
    head = result["seq"]
    assert main(["ingest", str(inputs), "--journal", str(appended), "--core", core]) == 0
    reader = LocalJournal(str(appended), readonly=True)
    try:
        records = list(reader.read(head + 1))
    finally:
        reader.close()

    # The same inputs, and the same output events byte for byte.
    assert [r.payload for r in records] == inputs.read_bytes().splitlines()
    assert [r.payload.decode() for r in records] == result["inputs"]
    assert b"".join(r.outputs for r in records) == events.read_bytes()
    # The shock reaches the waterfall (the comparison is not of two empty lists).
    assert result["total"]["liquidations"] > 0 and parse_e16(result["total"]["clawback"]) > 0
    assert b'"oracle_held"' in records[0].outputs  # the guard's hold, then its confirmation

    # The same figures, computed from the appended journal's records.
    steps = [
        StepOutputs(msgspec.json.decode(r.payload)["market"], r.payload, r.outputs.splitlines())
        for r in records
    ]
    figures = summarise(steps)
    assert outcome_json(figures.total) == result["total"]
    for row in figures.markets:
        [reported] = [m for m in result["markets"] if m["market"] == row.market]
        assert {k: reported[k] for k in outcome_json(row)} == outcome_json(row)

    # The same fund equity after, from the appended ledger rebuilt from its journal.
    rebuilt = load_ledger(str(appended), None, core).engine
    assert parse_e16(result["fund_equity_after"]) == rebuilt.summary().fund_equity_e16


@pytest.mark.skipif(not native_available(), reason="no native core")
def test_both_cores_give_the_same_stress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = _journal(tmp_path, "python")
    capsys.readouterr()
    results = {}
    for core in ("python", "native"):
        assert main(["stress", str(journal), *SHOCKS, "--json", "--core", core]) == 0
        results[core] = json.loads(capsys.readouterr().out)
        assert results[core].pop("core") == core
    assert results["python"] == results["native"]


def test_until_stresses_the_ledger_at_that_seq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = _journal(tmp_path, "python")
    capsys.readouterr()
    argv = ["stress", str(journal), "--shock", "BTC-PERP=-8%", "--json", "--core", "python"]
    assert main([*argv, "--until", "8"]) == 0
    early = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    head = json.loads(capsys.readouterr().out)
    assert early["seq"] == 8 and early["total"]["liquidations"] == 0
    assert head["seq"] > 8 and head["total"]["liquidations"] > 0


@pytest.mark.parametrize("core", CORES)
def test_a_version_2_journal_is_stressed_under_its_own_rules(
    tmp_path: Path, core: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ledger is rebuilt under the rules its journal recorded (SPEC §9): a version-2
    journal's stress equals appending the shock to it, liquidations and all."""
    inputs = tmp_path / "ledger.jsonl"
    inputs.write_bytes(b"".join(line + b"\n" for line in ledger_inputs()))
    journal = tmp_path / "journal"
    argv = ["ingest", str(inputs), "--journal", str(journal), "--core", core, "--rules", "2"]
    assert main(argv) == 0
    capsys.readouterr()
    shock_inputs, events = tmp_path / "shock-inputs.jsonl", tmp_path / "shock-events.jsonl"
    argv = ["stress", str(journal), *SHOCKS, "--json", "--core", core]
    assert main([*argv, "--inputs", str(shock_inputs), "--events", str(events)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["total"]["liquidations"] > 0
    appended = tmp_path / "appended"
    shutil.copytree(journal, appended)
    assert main(["ingest", str(shock_inputs), "--journal", str(appended), "--core", core]) == 0
    reader = LocalJournal(str(appended), readonly=True)
    try:
        assert reader.rules_version == 2
        records = list(reader.read(result["seq"] + 1))
    finally:
        reader.close()
    assert b"".join(r.outputs for r in records) == events.read_bytes()
