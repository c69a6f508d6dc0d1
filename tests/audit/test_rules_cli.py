"""Rules versions end to end: a journal records its ledger's version in every segment
header, ingest and replay keep to it, and ``replay FILE.jsonl`` defaults to the newest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.engine.native import native_available
from clearing.journal import LocalJournal

# A partial liquidation (liq_step 0.25) then a funding input: both exist only under v2.
_INPUTS = [
    {"type": "market", "market": "M", "imr": "0.1", "mmr": "0.05", "liq_fee": "0.01"}
    | {"liq_step": "0.25"},
    {"type": "deposit", "account": "a", "amount": "100"},
    {"type": "deposit", "account": "b", "amount": "1000"},
    {"type": "oracle", "market": "M", "price": "100"},
    {"type": "fill", "fill_id": "f1", "market": "M", "price": "100", "qty": "10"}
    | {"buyer": "a", "seller": "b"},
    {"type": "oracle", "market": "M", "price": "93"},
    {"type": "funding", "market": "M", "rate": "0.001"},
]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(rec) + "\n" for rec in _INPUTS))
    return path


def _types(path: Path) -> list[str]:
    return [json.loads(line)["type"] for line in path.read_text().splitlines()]


def test_replay_file_defaults_to_the_newest_rules(inputs: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    assert main(["replay", str(inputs), "--core", "python", "--events", str(events), "-q"]) == 0
    assert _types(events) == ["liquidation", "liquidation", "funding"]
    assert main(["replay", str(inputs), "--rules", "1", "--events", str(events), "-q"]) == 0
    assert _types(events) == ["liquidation", "reject"]  # funding is unknown_type under v1


def test_journal_records_its_rules_and_replays_under_them(inputs: Path, tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    assert main(["ingest", str(inputs), "--journal", str(v1)]) == 0
    assert main(["ingest", str(inputs), "--journal", str(v2), "--rules", "2"]) == 0
    # Byte 7 of every segment header: 0 for version 1 (as before versions existed), else
    # the version.
    assert [p.read_bytes()[7] for p in v1.glob("*.seg")] == [0]
    assert [p.read_bytes()[7] for p in v2.glob("*.seg")] == [2]
    with LocalJournal(v2, readonly=True) as journal:
        assert journal.rules_version == 2
    events = tmp_path / "events.jsonl"
    # No --rules: each journal under its own version, outputs verified against the record.
    assert main(["replay", str(v2), "--events", str(events), "-q"]) == 0
    assert _types(events) == ["liquidation", "liquidation", "funding"]
    assert main(["replay", str(v1), "--events", str(events), "-q"]) == 0
    assert _types(events) == ["liquidation", "reject"]


def test_a_journal_keeps_its_rules(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "j"
    assert main(["ingest", str(inputs), "--journal", str(journal), "--rules", "2"]) == 0
    capsys.readouterr()
    assert main(["ingest", str(inputs), "--journal", str(journal), "--rules", "1"]) == 2
    assert main(["replay", str(journal), "--rules", "1"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    assert "records rules version 2, not 1" in errors[0]
    assert "records rules version 2; it replays under that version" in errors[1]


@pytest.mark.skipif(not native_available(), reason="native core not installed")
def test_native_core_refuses_v2_with_one_line(
    inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(inputs), "--core", "native", "-q"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "does not implement rules version 2" in line
