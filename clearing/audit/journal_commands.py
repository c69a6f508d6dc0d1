"""``clearing journal verify|info|export``: the operator's tools over a journal, read from
a directory or from the journal topic (``kafka://HOST:PORT/TOPIC``).

Exit codes: 0 the journal verified (or, for ``info``/``export``, was read); 1 it does not
verify (corrupt, forged, truncated); 2 the source is not a journal or cannot be read.
An empty journal (a directory with only the writer's ``LOCK`` file, or an existing
journal topic without records) is a valid empty ledger: exit 0, and the output says
"EMPTY" rather than claiming anything was checked.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from clearing.audit.journal_cli import default_snapshot_dir
from clearing.audit.progress import Progress
from clearing.audit.sources import (
    SourceError,
    check_journal_dir,
    kafka_label,
    open_kafka_reader,
    source_config,
)
from clearing.errors import UserError
from clearing.journal import JournalError, LocalJournal, info, repair_truncate, verify
from clearing.ops.config import Config
from clearing.snapshot import list_snapshots

if TYPE_CHECKING:
    from clearing.kafka import KafkaJournalReader

__all__ = ["journal_command"]

EXIT_OK = 0
EXIT_CORRUPT = 1  # the journal does not verify
EXIT_USAGE = 2  # not a journal, cannot be read, or a bad argument


def journal_command(args: argparse.Namespace) -> int:
    try:
        config = source_config(args.journal, args.config)
        if config is not None:
            return _kafka_command(args, config)
        check_journal_dir(args.journal)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    if args.journal_command == "verify":
        return _verify_dir(args.journal, args.repair_truncate)
    if args.journal_command == "export":
        return _export(args, lambda: LocalJournal(args.journal, readonly=True, scan_mode="tail"))
    return _info_dir(args.journal)


def _hex(digest: bytes) -> str:
    return digest.hex()


def _verify_dir(directory: str, repair: bool) -> int:
    if repair:
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
        return EXIT_OK
    result = verify(directory)
    print(
        f"{directory}: {result.records} records (seq {result.first_seq}..{result.last_seq}) "
        f"in {result.segments} segment(s), {result.size_bytes} bytes; "
        f"head hash {_hex(result.head_hash)}"
    )
    if result.problem is None:
        if result.records == 0:
            print("EMPTY: the journal holds no records; there was nothing to verify")
        else:
            print("OK: every frame checksum and the whole hash chain verify")
        return EXIT_OK
    problem = result.problem
    where = f"{os.path.basename(problem.segment)} at byte offset {problem.offset}"
    if problem.torn:
        print(f"torn tail in {where} ({problem.reason}): the next open truncates it")
        return EXIT_OK
    print(
        f"CORRUPT: {where}: {problem.reason}\n"
        f"The log cannot be trusted past this point. Restore the journal from a replica "
        f"or backup; or, accepting the loss of every record from there on, run\n"
        f"  clearing journal verify --repair-truncate {directory}",
        file=sys.stderr,
    )
    return EXIT_CORRUPT


def _info_dir(directory: str) -> int:
    summary = info(directory)
    print(f"journal {directory}{' (EMPTY)' if summary.records == 0 else ''}")
    print(f"  records {summary.records}, last seq {summary.last_seq}, {summary.size_bytes} bytes")
    print(f"  head hash {_hex(summary.head_hash)}")
    for segment in summary.segments:
        print(
            f"  segment {segment.name}: seq {segment.first_seq}..{segment.last_seq}, "
            f"{segment.size_bytes} bytes"
        )
    if summary.problem is not None:
        print(f"  problem: {summary.problem.reason} (run clearing journal verify)")
    _print_snapshots(default_snapshot_dir(directory))
    return EXIT_OK


def _print_snapshots(snapshot_dir: str | None) -> None:
    if snapshot_dir is None or not os.path.isdir(snapshot_dir):
        return
    for snap in list_snapshots(snapshot_dir):
        state = "ok" if snap.problem is None else f"UNUSABLE: {snap.problem}"
        print(
            f"  snapshot {os.path.basename(snap.path)}: seq {snap.journal_seq}, "
            f"{snap.size_bytes} bytes, {state}"
        )


def _export(
    args: argparse.Namespace, opener: Callable[[], LocalJournal | KafkaJournalReader]
) -> int:
    """Write the inputs from ``--from-seq`` to ``--until-seq`` as .jsonl (one payload a
    line), verifying the chain while reading; works on any reader."""
    out: BinaryIO
    try:
        out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror}") from None
    count = 0
    journal = opener()
    try:
        _check_range(args.from_seq, args.until_seq, journal.last_seq)
        for record in journal.read(args.from_seq, args.until_seq):
            if b"\n" in record.payload:
                raise UserError(
                    f"the input of seq {record.seq} contains a newline; it cannot be "
                    f"exported as one .jsonl line"
                )
            out.write(record.payload + b"\n")
            count += 1
    except JournalError as exc:
        print(f"CORRUPT: {exc}", file=sys.stderr)
        return EXIT_CORRUPT
    finally:
        journal.close()
        if args.output:
            out.close()
        else:
            out.flush()
    print(f"exported {count} inputs", file=sys.stderr)
    return EXIT_OK


def _check_range(from_seq: int, until_seq: int | None, last_seq: int) -> None:
    if until_seq is not None and until_seq < from_seq:
        raise UserError(f"--until-seq {until_seq} is before --from-seq {from_seq}")
    if last_seq and from_seq > last_seq:
        raise UserError(f"--from-seq {from_seq} is past the journal's last seq {last_seq}")


# -- the journal topic -----------------------------------------------------------------


def _kafka_command(args: argparse.Namespace, config: Config) -> int:
    if args.journal_command == "verify" and args.repair_truncate:
        raise SourceError(
            "--repair-truncate works on a journal directory only: a Kafka topic is "
            "append-only (restore a damaged journal topic from a replica or backup)"
        )
    reader = open_kafka_reader(config)
    if args.journal_command == "export":
        return _export(args, lambda: reader)
    try:
        if args.journal_command == "verify":
            return _verify_topic(reader, config)
        return _info_topic(reader, config)
    finally:
        reader.close()


def _verify_topic(reader: KafkaJournalReader, config: Config) -> int:
    label = kafka_label(config)
    total = reader.last_seq
    records = 0
    progress = Progress("verify", total) if sys.stderr.isatty() else None
    try:
        for _record in reader.read(1, total):
            records += 1
            if progress is not None and records % 4096 == 0:
                progress.update(records)
    except JournalError as exc:
        print(f"{label}: {records} records verified before the problem", file=sys.stdout)
        print(
            f"CORRUPT: {exc}\nThe journal cannot be trusted past this point: restore the "
            f"topic from a replica or backup, and keep this one for the post-mortem.",
            file=sys.stderr,
        )
        return EXIT_CORRUPT
    finally:
        if progress is not None:
            progress.close()
    tail = reader.tail()
    print(
        f"{label}: {records} records (seq {1 if records else 0}..{total}) at offsets "
        f"{tail.begin_offset}..{tail.end_offset}; head hash {_hex(reader.head_hash)}"
    )
    if records == 0:
        print("EMPTY: the journal topic holds no records; there was nothing to verify")
    else:
        print("OK: every seq and the whole hash chain verify")
    return EXIT_OK


def _info_topic(reader: KafkaJournalReader, config: Config) -> int:
    tail = reader.tail()
    print(f"journal {kafka_label(config)}{' (EMPTY)' if tail.last is None else ''}")
    print(
        f"  last seq {reader.last_seq}, offsets "
        f"{tail.begin_offset}..{tail.end_offset} (last record at {tail.last_offset})"
    )
    print(f"  head hash {_hex(reader.head_hash)} (as stored; verify checks the chain)")
    if tail.rules_version is None:
        print("  rules version: none yet (the first daemon sets it from engine.rules_version)")
    else:
        print(f"  rules version {tail.rules_version} (as the newest record carries it)")
    _print_snapshots(config.snapshot_dir)
    return EXIT_OK
