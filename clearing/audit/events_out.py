"""Where ``clearing replay`` writes the output events.

A file with ``--events FILE``; standard output with ``--events -`` or when standard
output is a pipe or a file (so ``clearing replay J | wc -l`` works as before). On a
terminal without ``--events``, the events are not written at all: a journal of the demo
holds some 80,000 of them (9 MB), which scrolls the summary off the screen and helps no
one; the summary then says how to get them.
"""

from __future__ import annotations

import sys
from typing import BinaryIO, Final

from clearing.errors import UserError

__all__ = ["EventsOut", "open_events"]

STDOUT: Final = "-"


class EventsOut:
    """The stream to write events to (None: held back on a terminal)."""

    def __init__(self, stream: BinaryIO | None, owned: bool) -> None:
        self.stream = stream
        self._owned = owned

    @property
    def held_back(self) -> bool:
        return self.stream is None

    def close(self) -> None:
        if self.stream is None:
            return
        if self._owned:
            self.stream.close()
        else:
            self.stream.flush()

    def explain_held_back(self, events: int) -> None:
        """On a terminal: say where the events went (nowhere) and how to get them."""
        if self.held_back and events:
            print(
                f"{events} output events not shown on a terminal: write them with "
                f"--events FILE, or --events - for standard output",
                file=sys.stderr,
            )


def open_events(path: str | None) -> EventsOut:
    """Open ``--events``; raises ``UserError`` when the file cannot be written."""
    if path == STDOUT:
        return EventsOut(sys.stdout.buffer, owned=False)
    if path is None:
        if sys.stdout.isatty():
            return EventsOut(None, owned=False)
        return EventsOut(sys.stdout.buffer, owned=False)
    try:
        return EventsOut(open(path, "wb"), owned=True)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from exc
