"""``clearing snapshot show``: a snapshot's state equals a replay of the journal up to its
seq, byte for byte and by hash; anything else is a one-line error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.snapshot import list_snapshots
from tools.gen_events import generate


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("snapshots")
    inputs = work / "inputs.jsonl"
    inputs.write_bytes(b"\n".join(generate(3_000, 200, 3, seed=11)) + b"\n")
    path = work / "journal"
    argv = ["ingest", str(inputs), "--journal", str(path), "--snapshot-every", "1000"]
    assert main([*argv, "--batch", "500"]) == 0
    return path


def test_state_and_hash_equal_a_replay_up_to_the_snapshot_seq(
    journal: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    snapshots = [s for s in list_snapshots(str(journal / "snapshots")) if s.journal_seq]
    assert snapshots
    for snap in snapshots:
        state = tmp_path / f"state{snap.journal_seq}.json"
        replay = ["replay", str(journal), "--until", str(snap.journal_seq), "-q"]
        assert main([*replay, "--state", str(state), "--events", str(tmp_path / "e")]) == 0
        capsysbinary.readouterr()
        assert main(["snapshot", "show", snap.path]) == 0
        assert capsysbinary.readouterr().out == state.read_bytes()
        assert main(["snapshot", "show", "--hash", snap.path]) == 0
        expected = hashlib.sha256(state.read_bytes()).hexdigest()
        shown = capsysbinary.readouterr().out.decode()
        assert shown == f"seq {snap.journal_seq} state sha256 {expected}\n"


def test_replay_prints_the_sha256_of_its_state_file(
    journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    assert (
        main(["replay", str(journal), "--state", str(state), "--events", str(tmp_path / "e")]) == 0
    )
    assert hashlib.sha256(state.read_bytes()).hexdigest() in capsys.readouterr().err


def test_what_is_not_a_snapshot_is_one_line(
    journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = next(s for s in list_snapshots(str(journal / "snapshots")) if s.journal_seq)
    damaged = tmp_path / Path(snap.path).name
    data = bytearray(Path(snap.path).read_bytes())
    data[-10] ^= 0x01
    damaged.write_bytes(bytes(data))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    cases = {
        str(tmp_path / "missing.snap"): "no such file",
        str(journal): "is a directory",
        str(text): "not a usable snapshot",
        str(damaged): "SHA-256 mismatch",
    }
    for path, said in cases.items():
        assert main(["snapshot", "show", path]) == 2, path
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err
