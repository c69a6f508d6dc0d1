"""``clearing demo`` end to end on a small size: the journal it writes is deterministic,
replays to the same outputs and state, recovers from its snapshots, and balances."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearing.audit.journal_cli import default_snapshot_dir
from clearing.cli import main
from clearing.demo import DemoOptions, SimConfig, Simulator, run_demo
from clearing.demo._run import DEMO_RULES, _MetricsEndpoint
from clearing.engine import state_sha256
from clearing.journal import LocalJournal
from clearing.sequencer import Sequencer
from clearing.snapshot import list_snapshots

# About 2.5k inputs: the crash and a few snapshots (every 1,000 inputs here), quickly.
SEED, ACCOUNTS, DURATION_S = 4, 600, 600.0
SMALL = [
    "--seed", str(SEED), "--accounts", str(ACCOUNTS), "--duration", str(DURATION_S), "--no-live"
]  # fmt: skip


def _head(directory: Path) -> str:
    with LocalJournal(directory / "journal", readonly=True) as journal:
        return journal.head_hash.hex()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("demo") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("clearing.demo._run.SNAPSHOT_EVERY_INPUTS", 1_000)
        assert main(["demo", *SMALL, "--dir", str(directory)]) == 0
    yield directory


def test_demo_writes_journal_snapshots_and_report(demo_dir: Path) -> None:
    journal_dir = demo_dir / "journal"
    assert any(name.endswith(".seg") for name in os.listdir(journal_dir))
    assert len(list_snapshots(default_snapshot_dir(str(journal_dir)))) >= 2
    report = (demo_dir / "report.html").read_text(encoding="utf-8")
    assert report.startswith("<!DOCTYPE html>")
    with LocalJournal(journal_dir, readonly=True) as journal:
        records = list(journal.read())
    # Every record names the simulated stream and its place in it, nothing machine-bound.
    assert [r.source for r in records[:2]] == [f"demo:seed={SEED}:1", f"demo:seed={SEED}:2"]
    config = SimConfig(SEED, ACCOUNTS, DURATION_S, rules_version=DEMO_RULES)
    assert [r.payload for r in records] == list(Simulator(config))


def test_same_seed_same_journal_head(demo_dir: Path, tmp_path: Path) -> None:
    def run(seed: int, name: str) -> str:
        options = DemoOptions(
            seed=seed,
            accounts=ACCOUNTS,
            duration_s=DURATION_S,
            directory=str(tmp_path / name),
            live=False,
            report=False,
        )
        return run_demo(options).head_hash_hex

    assert run(SEED, "again") == _head(demo_dir)
    assert run(SEED + 1, "other") != _head(demo_dir)


def test_replay_and_recovery_reproduce_the_demo_ledger(demo_dir: Path, tmp_path: Path) -> None:
    # The auditor's replay: from seq 1, every recorded output re-derived (exit 1 if not).
    state_file = tmp_path / "state.json"
    code = main(
        ["replay", str(demo_dir / "journal"), "--state", str(state_file), "--events",
         str(tmp_path / "events.jsonl"), "-q", "--check-invariants"]
    )  # fmt: skip
    assert code == 0
    replayed = json.loads(state_file.read_text())
    # Recovery as the daemon does it, from an older snapshot plus the journal tail: drop
    # the final snapshot of a copy so there is a tail to replay.
    copy = tmp_path / "copy"
    shutil.copytree(demo_dir / "journal", copy)
    snapshots = list_snapshots(default_snapshot_dir(str(copy)))
    os.remove(snapshots[-1].path)
    sequencer, recovery = Sequencer.open_local(str(copy), default_snapshot_dir(str(copy)))
    try:
        assert recovery.snapshot_path == snapshots[-2].path
        assert recovery.replayed > 0  # outputs of the tail re-derived and compared
        engine = sequencer.engine
        engine.check_invariants()
        assert json.loads(json.dumps(engine.state())) == replayed
        recovered_hash = state_sha256(engine)
    finally:
        sequencer.close(snapshot=False)
    summary = _report_summary(demo_dir / "report.html")
    assert summary["verification"]["state_sha256"] == recovered_hash
    assert summary["verification"]["invariants_ok"] is True


def _report_summary(path: Path) -> dict[str, dict[str, object]]:
    page = path.read_text(encoding="utf-8")
    start = page.index('<script type="application/json" id="report-summary">')
    return json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])


def test_refuses_a_directory_that_already_holds_a_journal(
    demo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *SMALL, "--dir", str(demo_dir)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{demo_dir} already holds a demo run; pass --force to replace it" in line


TINY = ["--seed", "2", "--accounts", "200", "--events", "1500", "--no-live"]


def test_a_second_run_refuses_the_default_directory_then_force_replaces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    made = tmp_path / "clearing-demo-seed2"
    assert main(["demo", *TINY]) == 0
    out = capsys.readouterr().out
    assert f"report:  {made / 'report.html'}" in out.splitlines()
    assert "OK" in next(line for line in out.splitlines() if "invariants" in line)
    # The fund's deposits are in the summary, with what the fund would hold without them.
    deposits = next(line for line in out.splitlines() if "fund deposits" in line)
    assert "fund before top-ups" in deposits
    head = _head(made)
    (made / "notes.txt").write_text("mine")
    # Again: one line naming the folder and both ways on, nothing written anywhere.
    assert main(["demo", *TINY]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "clearing demo: error: ./clearing-demo-seed2 already holds a demo run; pass --force "
        "to replace it, or --dir DIR to write elsewhere (inspect it with: clearing report "
        "./clearing-demo-seed2)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clearing-demo-seed2"]
    # --force replaces the run (same seed, same journal) and leaves other files alone.
    report = made / "report.html"
    report.write_text("stale")
    assert main(["demo", *TINY, "--force"]) == 0
    assert _head(made) == head
    assert report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert (made / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clearing-demo-seed2"]


def test_force_leaves_a_journal_directory_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal_dir = tmp_path / "run" / "journal"
    journal_dir.mkdir(parents=True)
    (journal_dir / "ledger.db").write_text("not a demo's")
    assert main(["demo", *TINY, "--dir", str(tmp_path / "run"), "--force"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "holds files a demo does not write (ledger.db)" in line
    assert (journal_dir / "ledger.db").exists()


@pytest.mark.parametrize(
    "path",
    [
        "clearing-demo-seed1/report.html",
        "clearing-demo-seed7/journal/LOCK",
        "x/clearing-demo-seed1/a",
    ],
)
def test_demo_folders_are_git_ignored(path: str) -> None:
    root = Path(__file__).resolve().parents[2]
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=root, check=False)
    assert ignored.returncode == 0, f"{path} is not git-ignored"


def test_metrics_endpoint_follows_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scraped: list[str] = []
    stop = _MetricsEndpoint.stop

    def scrape_then_stop(endpoint: _MetricsEndpoint) -> None:
        # The last scrape of the live endpoint, just before the demo shuts it down.
        with urllib.request.urlopen(f"{endpoint._server.url}/metrics", timeout=5) as response:
            scraped.append(response.read().decode())
        stop(endpoint)

    monkeypatch.setattr(_MetricsEndpoint, "stop", scrape_then_stop)
    options = DemoOptions(
        seed=2,
        accounts=200,
        events=1_500,
        directory=str(tmp_path / "m"),
        metrics_port=0,  # any free port
        live=False,
        report=False,
    )
    run_demo(options)
    (body,) = scraped
    # One bounded "topic" label for every demo input, whatever its source string.
    assert 'clearing_input_records_total{topic="demo",type="fill"}' in body
    assert "clearing_journal_last_seq 1500.0" in body
    assert "clearing_ready 1.0" in body
