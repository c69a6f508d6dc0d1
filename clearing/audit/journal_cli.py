"""``clearing ingest``: the embedded mode (a .jsonl file through the sequencer into a
local journal). The journal tools are in ``journal_commands``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO, Final

import msgspec

from clearing.audit.replay import iter_numbered_inputs
from clearing.audit.sources import SourceError, check_journal_dir
from clearing.engine import encode_output
from clearing.errors import UserError
from clearing.journal import JournalError, LocalJournal
from clearing.sequencer import RecoveryError, Sequencer
from clearing.snapshot import default_snapshot_dir

__all__ = ["default_snapshot_dir", "ingest_command", "parse_file_source"]

# Inputs per journal group commit in ingest: large enough to amortise the fsync.
INGEST_BATCH_INPUTS: Final = 5_000


def parse_file_source(source: str) -> tuple[str, int] | None:
    """``file:<path>:<line>`` -> (path, line); None for other sources."""
    if not source.startswith("file:"):
        return None
    path, _, line = source[5:].rpartition(":")
    return (path, int(line)) if line.isdigit() else None


def _resume_line(journal: LocalJournal, path: str) -> int:
    """The last line of ``path`` already in the journal (0 if none)."""
    last = journal.last_record()
    if last is None:
        return 0
    parsed = parse_file_source(last.source)
    if parsed is not None and parsed[0] == path:
        return parsed[1]
    done = 0
    for record in journal.read():  # a different file was ingested last: look further back
        parsed = parse_file_source(record.source)
        if parsed is not None and parsed[0] == path:
            done = max(done, parsed[1])
    return done


class _SeqOnly(msgspec.Struct):
    seq: int


def _catch_up_events_file(path: str, journal: LocalJournal) -> None:
    """Bring the events file up to the journal: drop a torn last line, then append the
    recorded outputs of every journal record after the last seq the file holds.

    The journal commits a batch before its events reach the file, so a crash in between
    would otherwise lose them; the journal's recorded outputs are the exact same bytes.
    """
    last_seq = 0
    if os.path.exists(path):
        with open(path, "rb+") as events:
            data = events.read()
            keep = data.rfind(b"\n") + 1
            if keep != len(data):
                events.truncate(keep)
            if keep:
                start = data.rfind(b"\n", 0, keep - 1) + 1
                try:
                    last_seq = msgspec.json.decode(data[start : keep - 1], type=_SeqOnly).seq
                except msgspec.DecodeError:
                    last_seq = 0
    if last_seq >= journal.last_seq:
        return
    with open(path, "ab") as events:
        for record in journal.read(last_seq + 1):
            if record.outputs:
                events.write(record.outputs)


def _check_new_or_journal(path: str) -> None:
    """Ingest creates a journal in a new or empty directory, or appends to one; it does
    not scatter segments into a folder that holds something else (a demo folder, a
    home directory)."""
    if os.path.isdir(path) and os.listdir(path):
        try:
            check_journal_dir(path)
        except SourceError as exc:
            raise UserError(f"{exc}; or pass a new directory to start a journal") from None


def ingest_command(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.input)
    if not os.path.isfile(path):
        raise UserError(f"{args.input}: no such file; pass a .jsonl file of input events")
    _check_new_or_journal(args.journal)
    snapshot_dir = args.snapshots or default_snapshot_dir(args.journal)
    try:
        sequencer, recovery = Sequencer.open_local(
            args.journal,
            snapshot_dir,
            fsync=args.fsync,
            core=args.core,
            rules_version=getattr(args, "rules", None),
            snapshot_every_inputs=args.snapshot_every,
        )
    except (RuntimeError, ValueError) as exc:  # a core not installed, rules not kept
        raise UserError(str(exc)) from exc
    except (JournalError, RecoveryError, OSError) as exc:
        raise UserError(f"cannot open journal {args.journal}: {exc}") from exc
    events_out: BinaryIO | None = None
    try:
        resume_after = _resume_line(sequencer.journal, path)  # type: ignore[arg-type]
        if args.events:
            _catch_up_events_file(args.events, sequencer.journal)  # type: ignore[arg-type]
            events_out = open(args.events, "ab")  # noqa: SIM115 - closed below
        applied = outputs = 0
        batch: list[tuple[str, bytes]] = []

        def submit() -> None:
            nonlocal applied, outputs
            produced = sequencer.submit(batch)
            applied, outputs = applied + len(batch), outputs + len(produced)
            if events_out is not None:
                events_out.write(b"".join(encode_output(e) + b"\n" for e in produced))
            batch.clear()

        with open(path, "rb") as stream:
            for line_no, line in iter_numbered_inputs(stream, resume_after):
                batch.append((f"file:{path}:{line_no}", line))
                if len(batch) >= args.batch:
                    submit()
            if batch:
                submit()
    finally:
        if events_out is not None:
            events_out.close()
        sequencer.close()
    print(
        f"ingested {applied} inputs from {args.input} (resumed after line {resume_after}; "
        f"recovered seq {recovery.snapshot_seq}+{recovery.replayed}): {outputs} output events; "
        f"journal at seq {sequencer.engine.seq}",
        file=sys.stderr,
    )
    return 0
