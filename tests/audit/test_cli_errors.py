"""Issue 17: the audit commands never claim success on something that is not a journal;
the CLI's own errors (unknown options, --version, a terminal) behave as documented."""

from __future__ import annotations

import importlib.metadata
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from clearing.cli import main

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from clearing.cli import main; sys.exit(main())"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
EXAMPLE = ROOT / "docs/examples/worked-example.jsonl"

COMMANDS = [
    ["journal", "verify"],
    ["journal", "verify", "--repair-truncate"],
    ["journal", "info"],
    ["journal", "export"],
    ["replay"],
]


def _not_journals(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, what the error must say about it)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "text"
    text.mkdir()
    (text / "notes.txt").write_text("not a journal\n")
    demo = tmp_path / "clearing-demo-seed1"
    (demo / "journal").mkdir(parents=True)
    (demo / "journal" / "LOCK").write_bytes(b"")
    return {
        "empty": (empty, "it is empty"),
        "text": (text, "notes.txt"),
        "demo parent": (demo, f"did you mean {demo / 'journal'}?"),
        "missing": (tmp_path / "missing", "no such"),
    }


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_path_that_is_not_a_journal_is_an_error_not_an_empty_ledger(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (path, said) in _not_journals(tmp_path).items():
        before = sorted(os.listdir(path)) if path.exists() else None
        assert main([*command, str(path)]) == 2, name
        out, err = capsys.readouterr()
        assert "OK" not in out and "replayed" not in err and "exported" not in err, name
        assert err.count("\n") == 1 and said in err, (name, err)
        assert "journal" in err, (name, err)  # says what was expected
        after = sorted(os.listdir(path)) if path.exists() else None
        assert after == before, f"{name}: the command changed the directory"


def test_report_refuses_a_folder_without_a_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (path, _) in _not_journals(tmp_path).items():
        if name == "demo parent":
            continue  # report accepts a demo folder on purpose (it reads DIR/journal)
        assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 2, name
        assert capsys.readouterr().err.count("\n") == 1


def test_ingest_does_not_scatter_segments_into_a_folder_of_other_things(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (path, said) in _not_journals(tmp_path).items():
        if name in ("empty", "missing"):
            continue  # a new journal starts there
        before = sorted(os.listdir(path))
        assert main(["ingest", str(EXAMPLE), "--journal", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err and "new directory" in err, err
        assert sorted(os.listdir(path)) == before
    assert main(["ingest", str(EXAMPLE), "--journal", str(tmp_path / "empty")]) == 0


def test_a_genuine_empty_journal_says_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clearing.journal import LocalJournal

    journal = tmp_path / "journal"
    LocalJournal(str(journal)).close()  # a writer opened it and appended nothing
    assert main(["journal", "verify", str(journal)]) == 0
    out = capsys.readouterr().out
    assert "EMPTY" in out and "OK" not in out
    assert main(["journal", "info", str(journal)]) == 0
    assert "(EMPTY)" in capsys.readouterr().out
    assert main(["replay", str(journal), "--events", str(tmp_path / "e")]) == 0
    assert "the journal is EMPTY" in capsys.readouterr().err


def test_a_file_is_not_a_journal_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["journal", "verify", str(EXAMPLE)]) == 2
    assert "is a file; expected a journal directory" in capsys.readouterr().err


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"clearing {importlib.metadata.version('clearing')}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["journal", "verify", "--bogus", "x"],
        ["replay", "x.jsonl", "--bogus"],
        ["snapshot", "show", "--bogus", "x"],
    ],
)
def test_an_unknown_option_shows_the_subcommands_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    command = " ".join(word for word in argv if not word.startswith("-") and word != "x")
    command = command.removesuffix(" x.jsonl")
    assert err.startswith(f"usage: clearing {command} ")
    assert f"clearing {command}: error: unrecognized arguments: --bogus" in err


def test_other_usage_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(EXAMPLE), "--events", str(tmp_path / "no" / "such" / "e")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["replay", str(EXAMPLE), "--until", "3"]) == 2
    assert "apply to journals only" in capsys.readouterr().err
    assert main(["journal", "info", str(tmp_path), "--config", "x.toml"]) == 2
    assert "kafka:// sources only" in capsys.readouterr().err


def test_seq_ranges_are_checked(journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--from-seq", "0"], ["--until-seq", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["journal", "export", str(journal), *argv])
        assert exit_info.value.code == 2
        assert "is not a seq" in capsys.readouterr().err
    for argv, said in (
        (["--from-seq", "5", "--until-seq", "2"], "--until-seq 2 is before --from-seq 5"),
        (["--from-seq", "50"], "--from-seq 50 is past the journal's last seq 7"),
    ):
        assert main(["journal", "export", str(journal), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err


# -- replay on a terminal ----------------------------------------------------------------


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tty") / "journal"
    assert main(["ingest", str(EXAMPLE), "--journal", str(path)]) == 0
    return path


def _run_on_a_terminal(argv: list[str]) -> str:
    """Run the CLI with standard output and error on a pseudo-terminal; what it showed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*CLI, *argv],
        stdout=follower,
        stderr=follower,
        stdin=subprocess.DEVNULL,
        env=ENV,
        cwd=ROOT,
    )
    os.close(follower)
    shown = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert process.wait(60) == 0, shown
    return shown.decode()


@pytest.mark.parametrize("source", ["journal", "file"])
def test_on_a_terminal_replay_prints_the_summary_and_says_how_to_get_events(
    source: str, journal: Path
) -> None:
    shown = _run_on_a_terminal(["replay", str(journal if source == "journal" else EXAMPLE)])
    assert '"type"' not in shown
    assert "replayed 7" in shown
    assert "3 output events not shown on a terminal" in shown and "--events -" in shown


def test_on_a_terminal_events_dash_writes_them(journal: Path) -> None:
    shown = _run_on_a_terminal(["replay", str(journal), "--events", "-"])
    assert shown.count('{"type"') == 3 and "not shown" not in shown


def test_piped_replay_streams_the_events(journal: Path) -> None:
    piped = subprocess.run([*CLI, "replay", str(journal)], capture_output=True, env=ENV, check=True)
    assert piped.stdout.count(b"\n") == 3 and piped.stdout.startswith(b'{"type"')
    assert b"not shown" not in piped.stderr
