"""The ``clearing`` command. Thin: parses arguments and calls the packages that do the work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


class UserError(Exception):
    """A problem the person at the terminal can fix; printed without a traceback."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clearing",
        description="Event-sourced clearing ledger for a derivatives venue.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    replay = commands.add_parser(
        "replay",
        help="re-run the engine over a .jsonl file of inputs and write outputs and state",
        description=(
            "Re-run the clearing engine over INPUT (a .jsonl file of input events) and write "
            "the output events (one JSON object a line) and the final state."
        ),
    )
    replay.add_argument("input", metavar="INPUT", help="a .jsonl file of input events")
    replay.add_argument(
        "--events", metavar="EVENTS.jsonl", help="write output events here (default: stdout)"
    )
    replay.add_argument("--state", metavar="STATE.json", help="write the final state here")
    replay.add_argument(
        "--check-invariants",
        action="store_true",
        help="check both ledger invariants after every input (slower; always done at the end)",
    )
    replay.add_argument(
        "--quiet", "-q", action="store_true", help="no summary line on standard error"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "replay":
            from clearing.audit.replay import replay_command

            return replay_command(args)
    except UserError as exc:
        print(f"clearing {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
