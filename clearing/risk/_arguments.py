"""The arguments of ``clearing stress`` and ``clearing risk``: ``clearing.cli`` hands its
subcommand table to ``add_risk_commands`` and dispatches to ``_command``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["add_risk_commands"]


def add_risk_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    cores: Sequence[str],
) -> None:
    """Add the two subcommands to ``commands`` (``clearing``'s subparsers)."""
    source_help = (
        "a journal directory (or a clearing demo DIR), the journal topic as "
        "kafka://HOST:PORT/TOPIC, or a snapshot file"
    )
    stress = commands.add_parser(
        "stress",
        help="what the loss waterfall would do if marks moved now (the ledger is not changed)",
        description=(
            "Move marks by the given shocks on a copy of the ledger at its head (or --until "
            "SEQ), through the real engine (the oracle guard's hold is confirmed, books as "
            "they are), and report liquidations, fund draws, clawbacks/ADL, bad debt and the "
            "fund's equity, per market and in total. Exit 2 on a bad argument."
        ),
    )
    stress.add_argument("source", metavar="SOURCE", help=source_help)
    stress.add_argument(
        "--shock",
        action="append",
        metavar="MARKET=PCT%",
        help="move MARKET's mark by PCT percent (above -100), e.g. BTC-PERP=-30%%; repeatable",
    )
    stress.add_argument(
        "--grid",
        action="store_true",
        help="instead of --shock: each market alone by -50/-30/-20/-10/+10/+20/+30/+50%%",
    )
    risk = commands.add_parser(
        "risk",
        help="is the insurance fund big enough? VaR and expected shortfall of fund draws",
        description=(
            "Historical simulation: every --horizon interval of the ledger's own oracle "
            "history (inside --window) gives one scenario, the joint move of all marks, "
            "scaled by --scale and run through the engine on a copy of the ledger. Reports "
            "VaR and expected shortfall at 99%% and 99.9%% of fund draws, clawbacks/ADL and "
            "bad debt, and the coverage ratio fund equity / ES 99.9%%. Deterministic for a "
            "given source and --seed. Exit 2 on a bad argument."
        ),
    )
    risk.add_argument(
        "source",
        metavar="SOURCE",
        help="a journal directory (or a clearing demo DIR) or the journal topic as "
        "kafka://HOST:PORT/TOPIC",
    )
    risk.add_argument("--horizon", required=True, metavar="DURATION", help="e.g. 30s, 5m, 1h, 1d")
    risk.add_argument(
        "--step", metavar="DURATION", help="between interval ends (default: the horizon)"
    )
    risk.add_argument(
        "--window", metavar="DURATION", help="history used, back from the last tick (default: all)"
    )
    risk.add_argument("--scale", default="1", help="multiply every return by this (default 1)")
    risk.add_argument(
        "--scenarios",
        type=int,
        default=1000,
        metavar="N",
        help="at most N intervals, a seeded sample when there are more (default 1000)",
    )
    risk.add_argument("--seed", type=int, default=1, help="sampling seed (default 1)")
    for command in (stress, risk):
        command.add_argument("--until", type=int, metavar="SEQ", help="the ledger at this seq")
        command.add_argument("--json", action="store_true", help="JSON instead of a table")
        command.add_argument(
            "--config",
            metavar="FILE",
            help="kafka:// sources: the TOML configuration of clearing run (CLEARING_* "
            "variables override it), for the security settings and the default servers "
            "and topic",
        )
        command.add_argument(
            "--core",
            choices=cores,
            default="auto",
            help="engine core (native, python, or auto: native when installed)",
        )
    stress.add_argument("--inputs", metavar="FILE.jsonl", help="write the engine inputs applied")
    stress.add_argument("--events", metavar="FILE.jsonl", help="write the output events")
    for command in (stress, risk):
        command.add_argument(
            "--jobs", type=int, metavar="N", help="scenarios run at once (default: CPU count)"
        )
