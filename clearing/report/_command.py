"""``clearing report JOURNAL_DIR [-o report.html]``: the command around collect and render."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from clearing.errors import ScenarioFailed, UserError
from clearing.journal import JournalError
from clearing.report._collect import ReportData, collect_journal, parse_scaled
from clearing.report._numbers import display_e16
from clearing.report._render import render_html, summary
from clearing.report._risk import RiskSection, collect_risk, read_history
from clearing.sequencer import OutputDivergence

__all__ = ["report_command", "resolve_journal_dir", "save_report", "write_report"]


def resolve_journal_dir(path: str) -> str:
    """The journal directory itself, or the ``journal/`` inside a ``clearing demo`` directory."""
    inner = os.path.join(path, "journal")
    if os.path.isdir(inner) and not any(name.endswith(".seg") for name in os.listdir(path)):
        return inner
    return path


def save_report(data: ReportData, out_path: str, risk: RiskSection | None = None) -> None:
    """Render ``data`` (and the fund risk section, if given) to ``out_path``, written
    beside it and renamed, so a reader never sees half a report."""
    page = render_html(data, risk)
    partial = f"{out_path}.partial"
    with open(partial, "w", encoding="utf-8") as out:
        out.write(page)
    os.replace(partial, out_path)


def write_report(
    journal_dir: str,
    out_path: str,
    progress: Callable[[int, int], None] | None = None,
    with_risk: bool = False,
) -> dict[str, Any]:
    """Replay ``journal_dir``, write the HTML report to ``out_path``; the headline numbers.
    ``with_risk``: add the fund risk section (a read of the oracle history first, whose
    horizon the first replay uses to find the back-test's episode; then a second replay
    plus the scenarios)."""
    history = read_history(journal_dir) if with_risk else None
    horizon_ns = (
        None if history is None or history.settings is None else history.settings.horizon_ns
    )
    data = collect_journal(journal_dir, progress, episode_horizon_ns=horizon_ns)
    risk = None
    if history is not None:
        risk = collect_risk(journal_dir, history=history, episode=data.fund_loss_episode)
    save_report(data, out_path, risk)
    return summary(data)


def report_command(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError(
            "the report draws its plots with matplotlib: pip install 'clearing[report]'"
        )
    journal_dir = resolve_journal_dir(args.journal)
    if not os.path.isdir(journal_dir):
        raise UserError(f"{args.journal}: no such directory; pass a journal directory")
    if not any(name.endswith(".seg") for name in os.listdir(journal_dir)):
        raise UserError(f"{journal_dir} holds no journal segments (*.seg)")
    progress = _Progress() if sys.stderr.isatty() and not args.quiet else None
    started = time.perf_counter()
    try:
        numbers = write_report(journal_dir, args.output, progress, with_risk=args.risk)
    except OutputDivergence as exc:
        raise UserError(
            f"the journal does not replay to the outputs it recorded, so no report was "
            f"written: {exc}"
        ) from exc
    except JournalError as exc:
        raise UserError(f"cannot read journal {journal_dir}: {exc}") from exc
    except ScenarioFailed as exc:
        # A bug, not a bad argument (as for clearing risk): one line, exit 1, no report.
        print(
            f"clearing report: the fund risk section failed, so no report was written: {exc} "
            f"(without --risk the report leaves the section out)",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror}") from exc
    finally:
        if progress is not None:
            progress.close()
    if not args.quiet:
        elapsed_s = time.perf_counter() - started
        print(summary_line(args.output, numbers, elapsed_s), file=sys.stderr)
    return 0


def summary_line(out_path: str, numbers: dict[str, Any], elapsed_s: float) -> str:
    """The one line the command prints: amounts rounded as on the page."""
    bad_debt = display_e16(parse_scaled(numbers["bad_debt"]["amount"], 16))
    return (
        f"report {out_path}: {numbers['inputs']['total']:,} inputs replayed and verified, "
        f"{numbers['liquidations']['events']:,} liquidations, bad debt {bad_debt} "
        f"({elapsed_s:.1f} s)"
    )


class _Progress:
    """A progress bar on standard error while a long journal replays."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress(
            "replay", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
        )
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("replay", total=total)
        self._bar.update(self._task, completed=done)

    def close(self) -> None:
        if self._task is not None:
            self._bar.stop()
