"""A progress bar on standard error, for long reads of a journal on a terminal."""

from __future__ import annotations

__all__ = ["Progress"]


class Progress:
    """``rich`` progress bar labelled ``label`` counting up to ``total``; gone when closed."""

    def __init__(self, label: str, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            label, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=total)

    def update(self, done: int) -> None:
        self._bar.update(self._task, completed=done)

    def close(self) -> None:
        self._bar.stop()
