"""``clearing replay JOURNAL_DIR``: rebuild the ledger from a journal, as an auditor would.

Starts from an empty engine (snapshots are not trusted here), verifies every record's
checksum and the hash chain while reading, re-derives every output and compares it with
the outputs the journal recorded, and can stop at a seq (``--until``) or at the first
input stamped later than a timestamp (``--until-ts``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import datetime

import msgspec

from clearing.audit.events_out import open_events
from clearing.audit.progress import Progress
from clearing.audit.replay import engine_for
from clearing.audit.sources import SourceError, open_journal, source_config
from clearing.engine import state_file_bytes, state_sha256
from clearing.engine.native import NativeEngine, RefusedRecord, ReplayedBatch
from clearing.errors import UserError
from clearing.heap import HeapSettler
from clearing.journal import JournalCorrupt, JournalError, LocalJournal
from clearing.journal._format import batch_scanner, native_scan_available
from clearing.sequencer import join_outputs

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
    try:
        events = open_events(args.events)
    except UserError:
        journal.close()
        raise
    events_out = events.stream
    engine = engine_for(args.core)
    apply_encoded = engine.apply_encoded
    divergences = 0
    first_divergence = ""
    inputs = outputs = 0
    total = journal.last_seq if args.until is None else min(args.until, journal.last_seq)
    progress = Progress("replay", total) if sys.stderr.isatty() and not args.quiet else None
    heap = HeapSettler()
    verify = not args.no_verify_outputs
    # The native core verifies and applies whole batches of frames in one call unless a
    # record needs Python per input (--until-ts reads each input's ts; --check-invariants).
    native = (
        isinstance(journal, LocalJournal)
        and isinstance(engine, NativeEngine)
        and engine.replays_frames
        and native_scan_available()
        and until_ts_ns is None
        and not args.check_invariants
    )
    scanning = (
        batch_scanner(engine.frame_replayer(verify))  # type: ignore[union-attr]
        if native
        else contextlib.nullcontext()
    )
    try:
        with scanning:
            for item in journal.read(1, total):
                if type(item) is ReplayedBatch:
                    inputs += item.inputs
                    outputs += item.events
                    heap.add(item.inputs)
                    if item.derived and events_out is not None:
                        events_out.write(item.derived)
                    if item.divergences:
                        divergences += item.divergences
                        if not first_divergence:
                            first_divergence = _divergence(*item.first_divergence)  # type: ignore[misc]
                    if progress is not None:
                        progress.update(inputs)
                    continue
                if type(item) is RefusedRecord:
                    record = item.record
                    produced = engine.finish_refusal(record.payload, item.code)  # type: ignore[union-attr]
                else:
                    record = item
                    if until_ts_ns is not None:
                        stamp = _input_ts(record.payload)
                        if stamp is not None and stamp > until_ts_ns:
                            break
                    produced = apply_encoded(record.payload)
                heap.add()
                inputs += 1
                outputs += len(produced)
                derived = join_outputs(produced)
                if produced and events_out is not None:
                    events_out.write(derived)
                if args.check_invariants:
                    engine.check_invariants()
                if record.outputs and verify and derived != record.outputs:
                    divergences += 1
                    if not first_divergence:
                        first_divergence = _divergence(
                            record.seq, record.source, record.outputs, derived
                        )
                if progress is not None and inputs % 4096 == 0:
                    progress.update(inputs)
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
            else f"{inputs} journal records (seq 1..{engine.seq}): {outputs} output events"
        )
        print(f"replayed {what}; state sha256 {state_sha256(engine)}", file=sys.stderr)
    events.explain_held_back(outputs)
    if divergences:
        print(
            f"DIVERGED: {divergences} record(s) re-derived different outputs from the ones "
            f"recorded; {first_divergence}",
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


def _divergence(seq: int, source: str, recorded: bytes, derived: bytes) -> str:
    return (
        f"first divergence at seq {seq} ({source}):\n"
        f"  recorded: {recorded[:400]!r}\n"
        f"  derived:  {derived[:400]!r}"
    )
