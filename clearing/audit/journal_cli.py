"""``clearing ingest`` and ``clearing journal verify|export|info``: the embedded mode and
the operator's tools over a local journal directory."""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO, Final

import msgspec

from clearing.audit.replay import iter_numbered_inputs
from clearing.engine import encode_output
from clearing.errors import UserError
from clearing.journal import (
    JournalCorrupt,
    JournalError,
    LocalJournal,
    export_jsonl,
    info,
    repair_truncate,
    verify,
)
from clearing.sequencer import RecoveryError, Sequencer
from clearing.snapshot import default_snapshot_dir, list_snapshots

__all__ = ["default_snapshot_dir", "ingest_command", "journal_command", "parse_file_source"]

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


def ingest_command(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.input)
    if not os.path.isfile(path):
        raise UserError(f"{args.input}: no such file; pass a .jsonl file of input events")
    snapshot_dir = args.snapshots or default_snapshot_dir(args.journal)
    try:
        sequencer, recovery = Sequencer.open_local(
            args.journal,
            snapshot_dir,
            fsync=args.fsync,
            core=args.core,
            snapshot_every_inputs=args.snapshot_every,
        )
    except RuntimeError as exc:  # the native core asked for but not installed
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


def _hex(digest: bytes) -> str:
    return digest.hex()


def journal_command(args: argparse.Namespace) -> int:
    directory = args.journal
    if not os.path.isdir(directory):
        raise UserError(f"{directory}: no such journal directory")
    if args.journal_command == "verify":
        if args.repair_truncate:
            report = repair_truncate(directory)
            if report.problem is None:
                print(f"{directory}: nothing to repair; last seq {report.last_seq}")
            else:
                print(
                    f"{directory}: cut at {os.path.basename(report.problem.segment)} offset "
                    f"{report.problem.offset} ({report.problem.reason}); dropped "
                    f"{report.bytes_dropped} bytes, deleted {len(report.deleted_segments)} "
                    f"segment(s); journal now ends at seq {report.last_seq}"
                )
            return 0
        result = verify(directory)
        print(
            f"{directory}: {result.records} records (seq {result.first_seq}..{result.last_seq}) "
            f"in {result.segments} segment(s), {result.size_bytes} bytes; "
            f"head hash {_hex(result.head_hash)}"
        )
        if result.problem is None:
            print("OK: every frame checksum and the whole hash chain verify")
            return 0
        problem = result.problem
        where = f"{os.path.basename(problem.segment)} at byte offset {problem.offset}"
        if problem.torn:
            print(f"torn tail in {where} ({problem.reason}): the next open truncates it")
            return 0
        print(
            f"CORRUPT: {where}: {problem.reason}\n"
            f"The log cannot be trusted past this point. Restore the journal from a replica "
            f"or backup; or, accepting the loss of every record from there on, run\n"
            f"  clearing journal verify --repair-truncate {directory}",
            file=sys.stderr,
        )
        return 1
    if args.journal_command == "export":
        out: BinaryIO
        out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
        try:
            count = export_jsonl(directory, out, args.from_seq, args.until_seq)
        except (JournalCorrupt, ValueError) as exc:
            raise UserError(str(exc)) from exc
        finally:
            if args.output:
                out.close()
        print(f"exported {count} inputs", file=sys.stderr)
        return 0
    summary = info(directory)
    print(f"journal {directory}")
    print(f"  records {summary.records}, last seq {summary.last_seq}, {summary.size_bytes} bytes")
    print(f"  head hash {_hex(summary.head_hash)}")
    for segment in summary.segments:
        print(
            f"  segment {segment.name}: seq {segment.first_seq}..{segment.last_seq}, "
            f"{segment.size_bytes} bytes"
        )
    if summary.problem is not None:
        print(f"  problem: {summary.problem.reason} (run clearing journal verify)")
    snapshot_dir = default_snapshot_dir(directory)
    if os.path.isdir(snapshot_dir):
        for snap in list_snapshots(snapshot_dir):
            state = "ok" if snap.problem is None else f"UNUSABLE: {snap.problem}"
            print(
                f"  snapshot {os.path.basename(snap.path)}: seq {snap.journal_seq}, "
                f"{snap.size_bytes} bytes, {state}"
            )
    return 0
