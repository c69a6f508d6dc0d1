"""``clearing replay JOURNAL_DIR``: rebuild the ledger from a journal, as an auditor would.

Starts from an empty engine (snapshots are not trusted here), verifies every record's
checksum and the hash chain while reading, re-derives every output and compares it with
the outputs the journal recorded, and can stop at a seq (``--until``) or at the first
input stamped later than a timestamp (``--until-ts``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

import msgspec

from clearing.audit.events_out import open_events
from clearing.audit.progress import Progress
from clearing.audit.replay import engine_for
from clearing.audit.sources import SourceError, open_journal, source_config
from clearing.engine import EngineCore, state_file_bytes, state_sha256
from clearing.errors import UserError
from clearing.journal import JournalCorrupt, JournalError, Record
from clearing.sequencer import Divergence, ReplayObserver, replay

__all__ = ["parse_until_ts", "replay_journal_command"]


class _Stamp(msgspec.Struct):
    ts: int | None = None


_stamp_decoder = msgspec.json.Decoder(_Stamp)


def _input_ts(payload: bytes) -> int | None:
    try:
        return _stamp_decoder.decode(payload).ts
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def parse_until_ts(text: str) -> int:
    """Nanoseconds since the epoch, from an integer or an ISO 8601 time with a zone."""
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("give a time zone, e.g. 2026-11-24T10:00:00Z")
    whole = int(moment.timestamp())
    return whole * 10**9 + moment.microsecond * 1000


def replay_journal_command(args: argparse.Namespace) -> int:
    until_ts_ns = None
    if args.until_ts is not None:
        try:
            until_ts_ns = parse_until_ts(args.until_ts)
        except ValueError as exc:
            raise UserError(f"--until-ts {args.until_ts!r}: {exc}") from exc
    try:
        journal = open_journal(args.input, source_config(args.input, args.config))
    except SourceError as exc:
        raise UserError(str(exc)) from exc
    except JournalCorrupt as exc:
        return _corrupt(exc)
    except JournalError as exc:
        raise UserError(f"cannot open journal {args.input}: {exc}") from exc
    rules = getattr(args, "rules", None)
    if rules is not None and rules != journal.rules_version:
        journal.close()
        raise UserError(
            f"journal {args.input} records rules version {journal.rules_version}; it replays "
            f"under that version (drop --rules {rules})"
        )
    try:
        events = open_events(args.events)
    except UserError:
        journal.close()
        raise
    events_out = events.stream
    engine = engine_for(args.core, journal.rules_version)
    total = journal.last_seq if args.until is None else min(args.until, journal.last_seq)
    progress = Progress("replay", total) if sys.stderr.isatty() and not args.quiet else None
    # Per-record needs (--until-ts reads each input's ts; --check-invariants) make the
    # replay go record by record; without them the native core takes whole windows of a
    # local journal (the loop decides, from what the engine and the journal offer).
    observer = (
        _PerRecord(engine, until_ts_ns, args.check_invariants)
        if until_ts_ns is not None or args.check_invariants
        else None
    )
    try:
        done = replay(
            journal,
            engine,
            until_seq=total,
            verify=not args.no_verify_outputs,
            stop_at_divergence=False,
            observer=observer,
            on_events=None if events_out is None else events_out.write,
            progress=None if progress is None else progress.update,
        )
    except JournalError as exc:  # a bad frame, a broken chain, a gap in the seqs
        return _corrupt(exc)
    finally:
        if progress is not None:
            progress.close()
        journal.close()
        events.close()
    engine.check_invariants()
    if args.state:
        with open(args.state, "wb") as state_out:
            state_out.write(state_file_bytes(engine))
    if not args.quiet:
        what = (
            "0 journal records: the journal is EMPTY"
            if total == 0
            else f"{done.inputs} journal records (seq 1..{engine.seq}): {done.events} output events"
        )
        print(f"replayed {what}; state sha256 {state_sha256(engine)}", file=sys.stderr)
    events.explain_held_back(done.events)
    if done.first_divergence is not None:
        print(
            f"DIVERGED: {done.divergences} record(s) re-derived different outputs from the "
            f"ones recorded; {_divergence(done.first_divergence)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _corrupt(exc: JournalError) -> int:
    print(
        f"clearing replay: CORRUPT: the journal is corrupt: {exc}. Run clearing journal "
        f"verify on it; restore it from a replica or backup",
        file=sys.stderr,
    )
    return 1


def _divergence(first: Divergence) -> str:
    return (
        f"first divergence at seq {first.seq} ({first.source}):\n"
        f"  recorded: {first.recorded[:400]!r}\n"
        f"  derived:  {first.derived[:400]!r}"
    )


class _PerRecord(ReplayObserver):
    """Stops before the first input stamped after ``until_ts_ns``; checks the ledger's
    invariants after every input with ``check_invariants``."""

    def __init__(self, engine: EngineCore, until_ts_ns: int | None, check_invariants: bool) -> None:
        self._engine = engine
        self._until_ts_ns = until_ts_ns
        self._check_invariants = check_invariants

    def before(self, record: Record) -> bool:
        if self._until_ts_ns is None:
            return True
        stamp = _input_ts(record.payload)
        return stamp is None or stamp <= self._until_ts_ns

    def after(self, record: Record, events: list[bytes], derived: bytes) -> None:
        if self._check_invariants:
            self._engine.check_invariants()
