"""The ``clearing`` command. Thin: parses arguments and calls the packages that do the work."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence

from clearing.errors import UserError

__all__ = ["UserError", "main"]


# Exit codes of the audit and tool commands (docs/operations.md lists them with the
# daemon's): 0 done and verified, 1 the data failed a check (corrupt journal, diverged
# outputs), 2 the command cannot run as given (bad argument, not a journal, unreachable).
EXIT_USAGE = 2
# A person pressed Ctrl-C: the shell's convention, 128 + SIGINT.
EXIT_INTERRUPTED = 130

_SOURCE_HELP = (
    "a journal directory, or the journal topic as kafka://HOST:PORT/TOPIC (parts left out "
    "come from --config and the CLEARING_* variables, as for clearing run)"
)


def _version() -> str:
    try:
        return importlib.metadata.version("clearing")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def _seq(text: str) -> int:
    """A journal seq on the command line: a whole number, 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seq (a whole number, 1 or more)")
    return int(text)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="kafka:// sources: the TOML configuration of clearing run (CLEARING_* variables "
        "override it), for the security settings and the default servers and topic",
    )


def _build_parser() -> argparse.ArgumentParser:
    from clearing.engine import CORES
    from clearing.engine.rules_v2 import NEWEST_RULES, RULES_VERSIONS

    parser = argparse.ArgumentParser(
        prog="clearing",
        description="Event-sourced clearing ledger for a derivatives venue.",
    )
    parser.add_argument("--version", action="version", version=f"clearing {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    replay = commands.add_parser(
        "replay",
        help="re-run the engine over a .jsonl file of inputs and write outputs and state",
        description=(
            "Re-run the clearing engine over INPUT (a .jsonl file of input events, or a "
            "journal: a directory or kafka://HOST:PORT/TOPIC) and write the output events "
            "(one JSON object a line) and the final state. A journal is verified as it is "
            "read and every recorded output compared with the re-derived one. Exit codes: "
            "0 reproduced, 1 the journal is corrupt or its outputs diverge, 2 the command "
            "cannot run as given."
        ),
    )
    replay.add_argument(
        "input",
        metavar="INPUT",
        help="a .jsonl file of input events, a journal directory, or the journal topic as "
        "kafka://HOST:PORT/TOPIC",
    )
    _add_config(replay)
    replay.add_argument(
        "--until", type=_seq, metavar="SEQ", help="journal only: stop after this sequence number"
    )
    replay.add_argument(
        "--until-ts",
        metavar="TS",
        help="journal only: stop before the first input stamped later than TS "
        "(nanoseconds since the epoch, or ISO 8601 with a zone)",
    )
    replay.add_argument(
        "--no-verify-outputs",
        action="store_true",
        help="journal only: do not compare re-derived outputs with the recorded ones",
    )
    replay.add_argument(
        "--events",
        metavar="EVENTS.jsonl",
        help="write output events here; - for standard output (the default when it is not "
        "a terminal: on a terminal only the summary is printed)",
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
    replay.add_argument(
        "--core",
        choices=CORES,
        default="auto",
        help="engine core: native (Rust, fast), python (the reference), or auto "
        "(native when installed; default). Both give the same bytes",
    )
    replay.add_argument(
        "--rules",
        type=int,
        choices=RULES_VERSIONS,
        metavar="N",
        help=f"rules version for a .jsonl file (default: the newest, {NEWEST_RULES}); a "
        "journal replays under the version it recorded",
    )

    ingest = commands.add_parser(
        "ingest",
        help="append a .jsonl file of inputs to a local journal through the engine",
        description=(
            "Embedded mode without Kafka: apply INPUT's events through the engine and append "
            "them, with their outputs, to the local journal in --journal. Resumes after the "
            "last line of the same file that the journal already holds."
        ),
    )
    ingest.add_argument("input", metavar="INPUT", help="a .jsonl file of input events")
    ingest.add_argument("--journal", required=True, metavar="DIR", help="journal directory")
    ingest.add_argument(
        "--snapshots", metavar="DIR", help="snapshot directory (default: DIR/snapshots)"
    )
    ingest.add_argument(
        "--events",
        metavar="EVENTS.jsonl",
        help="append output events here; on start the file is first brought up to date "
        "from the journal's recorded outputs (so a crash loses none)",
    )
    ingest.add_argument("--batch", type=int, default=5_000, help="inputs per journal group commit")
    ingest.add_argument(
        "--fsync",
        choices=("batch", "always", "never"),
        default="batch",
        help="durability: fsync once per batch (default), per record, or never",
    )
    ingest.add_argument(
        "--snapshot-every", type=int, default=1_000_000, help="inputs between snapshots"
    )
    ingest.add_argument(
        "--core",
        choices=CORES,
        default="auto",
        help="engine core: native (Rust, fast), python (the reference), or auto "
        "(native when installed; default). Both give the same bytes",
    )
    ingest.add_argument(
        "--rules",
        type=int,
        choices=RULES_VERSIONS,
        metavar="N",
        help="rules version of a new journal (default 1; the native core implements 1 "
        "only); an existing journal keeps the version it recorded",
    )

    journal = commands.add_parser(
        "journal",
        help="verify, export or describe a journal (directory or Kafka topic)",
        description="Journal tools. Exit codes: 0 verified (or read), 1 the journal does not "
        "verify, 2 not a journal or cannot be read.",
    )
    journal_commands = journal.add_subparsers(dest="journal_command", metavar="SUBCOMMAND")
    journal_commands.required = True
    verify_cmd = journal_commands.add_parser(
        "verify", help="check every checksum and the hash chain; exit 1 on corruption"
    )
    verify_cmd.add_argument("journal", metavar="SOURCE", help=_SOURCE_HELP)
    _add_config(verify_cmd)
    verify_cmd.add_argument(
        "--repair-truncate",
        action="store_true",
        help="DESTRUCTIVE: cut the log at the first bad record (drops everything after it)",
    )
    export_cmd = journal_commands.add_parser("export", help="write the inputs out as .jsonl")
    export_cmd.add_argument("journal", metavar="SOURCE", help=_SOURCE_HELP)
    _add_config(export_cmd)
    export_cmd.add_argument("-o", "--output", metavar="OUT.jsonl", help="default: stdout")
    export_cmd.add_argument("--from-seq", type=_seq, default=1, metavar="SEQ", help="default 1")
    export_cmd.add_argument(
        "--until-seq", type=_seq, metavar="SEQ", help="default: the last record"
    )
    info_cmd = journal_commands.add_parser("info", help="segments, records, head hash, snapshots")
    info_cmd.add_argument("journal", metavar="SOURCE", help=_SOURCE_HELP)
    _add_config(info_cmd)

    run = commands.add_parser(
        "run",
        help="run the ledger daemon against Kafka (consume, journal, apply, emit)",
        description=(
            "Run the clearing daemon: the single writer of one ledger. Recovers from the "
            "journal topic (and local snapshots), then consumes the input topics and emits "
            "journal records, output events and DLQ records in one Kafka transaction per "
            "batch. Exit codes: 0 clean stop, 1 failure (restart it), 2 bad configuration, "
            "3 fenced by a newer instance, 4 refused to start (see the log), 5 shutdown "
            "bound exceeded."
        ),
    )
    run.add_argument(
        "--config", metavar="FILE", help="TOML configuration (CLEARING_* variables override it)"
    )
    run.add_argument(
        "--role",
        choices=("active", "standby"),
        default=None,
        help="active: take over now (fences the previous writer); standby: follow the "
        "journal with a warm engine and take over when Kafka's control group elects this "
        "process (default: daemon.role of the configuration)",
    )

    topics = commands.add_parser(
        "topics", help="manage the ledger's Kafka topics", description="Kafka topic tools."
    )
    topic_commands = topics.add_subparsers(dest="topics_command", metavar="SUBCOMMAND")
    topic_commands.required = True
    topics_create = topic_commands.add_parser(
        "create",
        help="create the journal, events, DLQ and input topics (idempotent)",
        description=(
            "Create the ledger's topics with the settings it relies on (journal: one "
            "partition, kept forever, never compacted); check the ones that exist."
        ),
    )
    topics_create.add_argument(
        "--config", metavar="FILE", help="TOML configuration (CLEARING_* variables override it)"
    )

    from clearing.risk import add_risk_commands

    add_risk_commands(commands, CORES)

    demo = commands.add_parser(
        "demo",
        help="simulate a venue with a black-swan crash through the real sequencer, then report",
        description=(
            "Run a seeded market simulation (thousands of accounts, three markets, a crash "
            "that goes through every layer of the loss waterfall) through the sequencer into "
            "a local journal, with a live view on a terminal; then replay the journal into an "
            "HTML audit report. The same seed gives the same journal."
        ),
    )
    demo.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    demo.add_argument("--accounts", type=int, default=5_000, help="traders (default 5000)")
    demo_length = demo.add_mutually_exclusive_group()
    demo_length.add_argument(
        "--duration", type=float, metavar="SECONDS", help="simulated seconds (default 3600)"
    )
    demo_length.add_argument("--events", type=int, metavar="N", help="stop after N inputs")
    demo.add_argument(
        "--dir",
        metavar="DIR",
        help="where the journal, snapshots and report go (default: ./clearing-demo-seed<N>)",
    )
    demo.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier run's journal and report in that directory (else: exit 2)",
    )
    demo.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus /metrics on 127.0.0.1:PORT while the demo runs",
    )
    demo.add_argument("--no-live", action="store_true", help="no live view, only the summary")
    demo.add_argument(
        "--fast",
        action="store_true",
        help="run at full speed (on a terminal the live view is paced to about 30 s)",
    )

    report = commands.add_parser(
        "report",
        help="replay a journal and write a self-contained HTML audit report",
        description=(
            "Replay JOURNAL_DIR from seq 1 (verifying every recorded output) and write an HTML "
            "report with its plots embedded: insurance fund, open interest, liquidations, "
            "clawbacks and bad debt over time, marks, and the largest liquidations."
        ),
    )
    report.add_argument(
        "journal", metavar="JOURNAL_DIR", help="a journal directory (or a clearing demo DIR)"
    )
    report.add_argument(
        "-o", "--output", default="report.html", metavar="FILE", help="default: report.html"
    )
    report.add_argument("--quiet", "-q", action="store_true", help="no summary line")
    report.add_argument(
        "--risk",
        action="store_true",
        help="add the fund risk section (loss distribution, coverage over time, the "
        "back-test at the largest fund loss, stress grid): a few thousand scenarios "
        "through the engine, tens of seconds of CPU (docs/fund-risk.md)",
    )
    report.add_argument(
        "--no-risk",
        dest="risk",
        action="store_false",
        help="no fund risk section: the default (kept for scripts that passed it)",
    )

    snapshot = commands.add_parser(
        "snapshot", help="inspect snapshot files", description="Snapshot tools."
    )
    snapshot_commands = snapshot.add_subparsers(dest="snapshot_command", metavar="SUBCOMMAND")
    snapshot_commands.required = True
    show = snapshot_commands.add_parser(
        "show",
        help="print a snapshot's ledger state (the JSON clearing replay --state writes)",
        description=(
            "Check a snapshot file (checksums, state hash) and print the ledger state it "
            "holds as the JSON `clearing replay --state` writes (SPEC section 8), or with "
            "--hash its seq and the SHA-256 of that JSON: equal to the state hash of a "
            "replay of the journal up to the same seq."
        ),
    )
    show.add_argument("path", metavar="SNAPSHOT", help="a snapshot-<seq>.snap file")
    show.add_argument(
        "--hash", action="store_true", help="print only the seq and the state's SHA-256"
    )
    _add_proof_parser(commands, CORES)
    _route_errors_to_subcommands(parser)
    return parser


def _route_errors_to_subcommands(parser: argparse.ArgumentParser) -> None:
    """Remember on every parser which one it is, so that an unknown option is reported
    with the usage of the subcommand it was given to, not the top-level usage."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _route_errors_to_subcommands(sub)


def _add_proof_parser(commands: argparse._SubParsersAction, cores: Sequence[str]) -> None:
    proof = commands.add_parser(
        "proof",
        help="proof of liabilities: build a Merkle sum tree, extract and verify proofs",
        description=(
            "Proof of liabilities (docs/proof-of-liabilities.md): a Merkle sum tree over every "
            "account's equity floored at 0, a statement to publish, one inclusion proof per "
            "account."
        ),
    )
    proof_commands = proof.add_subparsers(dest="proof_command", metavar="SUBCOMMAND")
    proof_commands.required = True
    build = proof_commands.add_parser(
        "build",
        help="build the tree and statement from a journal or a snapshot",
        description=(
            "Build the sum tree of SOURCE (a journal, replayed from seq 1 with every output "
            "checked, or a snapshot file) and write statement.json, tree.bin and "
            "leaves.jsonl into DIR. Exit codes: 0 built, 2 usage or file errors."
        ),
    )
    build.add_argument(
        "source",
        metavar="SOURCE",
        help="a journal directory, the journal topic as kafka://HOST:PORT/TOPIC, or a "
        "snapshot file",
    )
    build.add_argument(
        "--config",
        metavar="FILE",
        help="kafka:// sources: the TOML configuration of clearing run (CLEARING_* "
        "variables override it), for the security settings and the default servers and topic",
    )
    build.add_argument("-o", "--output", required=True, metavar="DIR", help="where to write")
    build.add_argument(
        "--seed-file",
        required=True,
        metavar="FILE",
        help="the operator's secret seed (>= 16 random bytes): each account's salt is "
        "derived from it and the id (HMAC-SHA256), so the same journal and seed give the "
        "same root",
    )
    build.add_argument(
        "--until", type=int, metavar="SEQ", help="journal only: the ledger as it was at SEQ"
    )
    build.add_argument(
        "--proofs",
        action="store_true",
        help="also write every account's proof to DIR/proofs.jsonl (about 2 KB an account "
        "at 1M accounts; `clearing proof extract` makes them one at a time instead)",
    )
    build.add_argument("--core", choices=cores, default="auto", help="engine core (default auto)")
    build.add_argument("--quiet", "-q", action="store_true", help="no summary line")
    extract = proof_commands.add_parser(
        "extract",
        help="write one account's proof (or all of them) from a build directory",
        description="Exit codes: 0 written, 2 usage or file errors (unknown account).",
    )
    extract.add_argument("directory", metavar="DIR", help="a `clearing proof build` directory")
    which = extract.add_mutually_exclusive_group(required=True)
    which.add_argument("--account", metavar="ID", help="the account whose proof to write")
    which.add_argument("--all", action="store_true", help="every account's, as JSON lines")
    extract.add_argument(
        "-o", "--output", metavar="FILE", help="default: stdout (--all: DIR/proofs.jsonl)"
    )
    verify = proof_commands.add_parser(
        "verify",
        help="check an account's proof against a published statement",
        description=(
            "Check PROOF.json against STATEMENT.json: the leaf, every sum on the path (never "
            "negative, each node binding both children's sums), the padding, the root and the "
            "total. Prints one line. Exit codes: 0 verified, 1 the proof does not verify, "
            "2 usage or file errors."
        ),
    )
    verify.add_argument("proof", metavar="PROOF.json")
    verify.add_argument("--statement", required=True, metavar="STATEMENT.json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if args.command == "replay":
            from clearing.audit.replay import replay_command

            return replay_command(args)
        if args.command == "ingest":
            from clearing.audit.journal_cli import ingest_command

            return ingest_command(args)
        if args.command == "journal":
            from clearing.audit.journal_commands import journal_command

            return journal_command(args)
        if args.command == "run":
            from clearing.kafka import run_command

            return run_command(args)
        if args.command == "topics":
            from clearing.kafka import topics_command

            return topics_command(args)
        if args.command in ("stress", "risk"):
            from clearing.risk import risk_command, stress_command

            return stress_command(args) if args.command == "stress" else risk_command(args)
        if args.command == "demo":
            from clearing.demo import demo_command

            return demo_command(args)
        if args.command == "proof":
            from clearing.proof import proof_command

            return proof_command(args)
        if args.command == "report":
            from clearing.report import report_command

            return report_command(args)
        if args.command == "snapshot":
            from clearing.audit.snapshot_show import snapshot_command

            return snapshot_command(args)
    except UserError as exc:
        print(f"clearing {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 1
    except OSError as exc:  # a file the command was pointed at (or told to write) failed
        where = f": {exc.filename}" if exc.filename else ""
        print(f"clearing {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"clearing {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    # Under `python -m clearing.cli` this file runs as __main__, a second copy of the
    # module: run the imported one, whose UserError is the class the commands raise.
    from clearing.cli import main as _main

    sys.exit(_main())
