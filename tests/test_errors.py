"""One exception tree (``clearing.errors``), re-exported where each error is raised."""

from __future__ import annotations

from pathlib import Path

import pytest

import clearing.errors as errors
from clearing.cli import main


def test_every_error_descends_from_the_root() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.ClearingError), name


def test_the_raising_packages_re_export_the_same_classes() -> None:
    from clearing import cli, engine, journal, kafka, ops, sequencer, snapshot
    from clearing.engine import persist
    from clearing.ops import config

    assert cli.UserError is errors.UserError
    assert engine.InvariantViolation is errors.InvariantViolation
    assert persist.StateFormatError is errors.StateFormatError
    assert journal.JournalError is errors.JournalError
    assert journal.JournalCorrupt is errors.JournalCorrupt
    assert kafka.KafkaJournalError is errors.KafkaJournalError
    assert config.ConfigError is errors.ConfigError
    assert sequencer.RecoveryError is errors.RecoveryError
    assert sequencer.OutputDivergence is errors.OutputDivergence
    assert sequencer.SequencerBroken is errors.SequencerBroken
    assert snapshot.SnapshotError is errors.SnapshotError
    assert ops is not None


def test_old_except_clauses_still_catch_them() -> None:
    """Errors that stood for a built-in before the tree still are one."""
    assert issubclass(errors.InvariantViolation, AssertionError)
    assert issubclass(errors.StateFormatError, ValueError)
    assert issubclass(errors.CoreUnavailable, RuntimeError)
    assert issubclass(errors.SequencerBroken, RuntimeError)
    assert issubclass(errors.OutputDivergence, errors.RecoveryError)
    assert issubclass(errors.KafkaJournalError, errors.JournalError)


def test_a_user_error_is_one_line_and_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "no-such-input.jsonl")
    assert main(["replay", missing]) == errors.UserError.exit_code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("clearing replay: error: ")
    assert "no such file or directory" in err
