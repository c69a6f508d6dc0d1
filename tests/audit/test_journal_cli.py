"""Issue 3 end to end: ingest, resume, recovery at cut points, crashes, corruption, audit."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.engine import Engine, encode_output
from clearing.journal import LocalJournal, Record
from clearing.sequencer import RecoveryError, Sequencer, encode_outputs
from clearing.snapshot import list_snapshots
from tools.gen_events import generate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A realistic 6k-input stream with liquidations, plus a few bad lines."""
    path = tmp_path_factory.mktemp("inputs") / "inputs.jsonl"
    lines = list(generate(6_000, 400, 4, seed=7))
    lines[3000:3000] = [b"not json", b'{"type":"deposit","account":"fee-pool","amount":"1"}', b""]
    # The SPEC's worked example at the end: a liquidation, a fund draw and a clawback.
    lines += (ROOT / "docs/examples/worked-example.jsonl").read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _replay_file(path: Path, tmp: Path) -> tuple[bytes, bytes]:
    events, state = tmp / "file.events", tmp / "file.state"
    args = ["replay", str(path), "--rules", "1", "--events", str(events), "--state", str(state)]
    assert main([*args, "-q"]) == 0
    return events.read_bytes(), state.read_bytes()


def _replay_journal(journal: Path, tmp: Path, *extra: str) -> tuple[int, bytes, bytes]:
    events, state = tmp / "journal.events", tmp / "journal.state"
    code = main(
        ["replay", str(journal), "--events", str(events), "--state", str(state), "-q", *extra]
    )
    return code, events.read_bytes(), state.read_bytes()


def test_ingest_resumes_and_journal_replay_equals_file_replay(stream: Path, tmp_path: Path) -> None:
    growing = tmp_path / "growing.jsonl"
    lines = stream.read_bytes().split(b"\n")
    growing.write_bytes(b"\n".join(lines[:2500]) + b"\n")
    journal = tmp_path / "journal"
    assert main(["ingest", str(growing), "--journal", str(journal), "--batch", "300"]) == 0
    growing.write_bytes(stream.read_bytes())  # the same file, grown
    assert (
        main(["ingest", str(growing), "--journal", str(journal), "--snapshot-every", "1000"]) == 0
    )
    assert main(["ingest", str(growing), "--journal", str(journal)]) == 0  # nothing new
    code, events, state = _replay_journal(journal, tmp_path)
    assert code == 0
    assert (events, state) == _replay_file(stream, tmp_path)
    assert b'"liquidation"' in events and b'"reject"' in events


def test_restart_from_snapshot_and_tail_at_many_cut_points(stream: Path, tmp_path: Path) -> None:
    inputs = [line for line in stream.read_bytes().split(b"\n") if line.strip()]
    whole = Engine()
    expected = [encode_output(e) for raw in inputs for e in whole.apply(raw)]
    rng = random.Random(3)
    for trial, cut in enumerate(sorted(rng.sample(range(1, len(inputs)), 8))):
        journal, snaps = str(tmp_path / f"j{trial}"), str(tmp_path / f"s{trial}")
        sequencer, _ = Sequencer.open_local(journal, snaps, snapshot_every_inputs=700)
        got: list[bytes] = []
        for start in range(0, cut, 250):
            batch = [(f"t:{i}", inputs[i]) for i in range(start, min(cut, start + 250))]
            got += [encode_output(e) for e in sequencer.submit(batch)]
        sequencer.journal.close()  # a crash: no final snapshot, no clean close
        resumed, recovery = Sequencer.open_local(journal, snaps, snapshot_every_inputs=700)
        assert recovery.snapshot_seq + recovery.replayed == cut
        batch = [(f"t:{i}", inputs[i]) for i in range(cut, len(inputs))]
        got += [encode_output(e) for e in resumed.submit(batch)]
        assert got == expected
        assert resumed.engine.state() == whole.state()
        resumed.close()


def test_kill_9_mid_ingest_then_resume_loses_and_repeats_nothing(
    stream: Path, tmp_path: Path
) -> None:
    expected_events, expected_state = _replay_file(stream, tmp_path)
    rng = random.Random(11)
    for trial in range(3):
        journal = tmp_path / f"killed{trial}"
        command = [
            sys.executable, "-m", "clearing.cli", "ingest", str(stream),
            "--journal", str(journal), "--batch", "50", "--snapshot-every", "800",
            "--fsync", "always",
        ]  # fmt: skip
        proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.4, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert main(["ingest", str(stream), "--journal", str(journal)]) == 0
        code, events, state = _replay_journal(journal, tmp_path)
        assert code == 0
        assert (events, state) == (expected_events, expected_state)


def test_corrupt_newest_snapshot_falls_back_and_state_is_exact(
    stream: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    assert main(["ingest", str(stream), "--journal", str(journal), "--snapshot-every", "1500"]) == 0
    snaps = list_snapshots(str(journal / "snapshots"))
    assert len(snaps) >= 2
    newest = Path(snaps[-1].path)
    data = bytearray(newest.read_bytes())
    data[-10] ^= 0xFF
    newest.write_bytes(bytes(data))
    sequencer, recovery = Sequencer.open_local(str(journal), str(journal / "snapshots"))
    assert recovery.snapshot_path == snaps[-2].path
    _, expected_state = _replay_file(stream, tmp_path)
    assert json.dumps(sequencer.engine.state(), separators=(",", ":")).encode() + b"\n" == (
        expected_state
    )
    sequencer.close(snapshot=False)


def test_snapshot_ahead_of_journal_refuses_to_start(stream: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    assert main(["ingest", str(stream), "--journal", str(journal), "--snapshot-every", "1500"]) == 0
    for segment in journal.glob("*.seg"):
        segment.unlink()
    with pytest.raises(RecoveryError, match="journal records were lost"):
        Sequencer.open_local(str(journal), str(journal / "snapshots"))


def test_corruption_mid_log_is_refused_with_segment_and_offset(
    stream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "journal"
    assert main(["ingest", str(stream), "--journal", str(journal)]) == 0
    (segment,) = journal.glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    assert main(["journal", "verify", str(journal)]) == 1
    err = capsys.readouterr().err
    assert segment.name in err and "offset" in err and "--repair-truncate" in err
    code = main(["replay", str(journal), "-q"])
    assert code == 1
    assert segment.name in capsys.readouterr().err
    assert main(["journal", "verify", "--repair-truncate", str(journal)]) == 0
    assert main(["journal", "verify", str(journal)]) == 0


def test_replay_reports_the_first_divergence_from_recorded_outputs(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    lines = (ROOT / "docs/examples/worked-example.jsonl").read_bytes().split(b"\n")
    engine = Engine()
    records = []
    for seq, raw in enumerate([line for line in lines if line], start=1):
        outputs = encode_outputs(engine.apply(raw))
        if seq == 7:  # a forged record: a valid chain, but outputs the engine never made
            outputs = outputs.replace(b'"amount":"30"', b'"amount":"31"')
        records.append(Record(seq, f"test:{seq}", raw, outputs))
    with LocalJournal(str(journal_dir)) as journal:
        journal.append(records)
    code, _, _ = _replay_journal(journal_dir, tmp_path)
    assert code == 1


def test_until_seq_until_ts_and_export_round_trip(stream: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    assert main(["ingest", str(stream), "--journal", str(journal)]) == 0
    code, _, state = _replay_journal(journal, tmp_path, "--until", "2000")
    assert code == 0
    prefix = tmp_path / "prefix.jsonl"
    kept = [line for line in stream.read_bytes().split(b"\n") if line.strip()][:2000]
    prefix.write_bytes(b"\n".join(kept) + b"\n")
    assert state == _replay_file(prefix, tmp_path)[1]
    # --until-ts stops before the first input stamped later than the given time.
    all_inputs = [line for line in stream.read_bytes().split(b"\n") if line.strip()]
    stamps = [json.loads(line).get("ts") if line.startswith(b"{") else None for line in all_inputs]
    cutoff = stamps[1500]
    assert cutoff is not None
    first_later = next(i for i, ts in enumerate(stamps) if ts is not None and ts > cutoff)
    code, _, state_ts = _replay_journal(journal, tmp_path, "--until-ts", str(cutoff))
    assert code == 0
    prefix.write_bytes(b"\n".join(all_inputs[:first_later]) + b"\n")
    assert state_ts == _replay_file(prefix, tmp_path)[1]
    exported = tmp_path / "export.jsonl"
    assert main(["journal", "export", str(journal), "-o", str(exported)]) == 0
    assert _replay_file(exported, tmp_path) == _replay_file(stream, tmp_path)


def test_missing_inputs_give_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "nope.jsonl"), "--journal", str(tmp_path / "j")]) == 2
    assert main(["journal", "info", str(tmp_path / "nope")]) == 2


def test_journal_files_are_owner_only(stream: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    assert main(["ingest", str(stream), "--journal", str(journal), "--snapshot-every", "2000"]) == 0
    assert os.stat(journal).st_mode & 0o077 == 0
    for path in [*journal.glob("*.seg"), *(journal / "snapshots").glob("*.snap")]:
        assert os.stat(path).st_mode & 0o077 == 0, path
