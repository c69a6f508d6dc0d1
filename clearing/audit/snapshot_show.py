"""``clearing snapshot show PATH [--hash]``: a snapshot's ledger state, readable.

A snapshot stores the engine's internal msgpack layout; this loads it into an engine
(after the snapshot's own checks: header and metadata CRCs, size, the SHA-256 of the
stored bytes) and prints the SPEC §8 state exactly as ``clearing replay --state`` would
write it for the same seq, or with ``--hash`` only the seq and the state hash. So a
snapshot can be compared with a replay of the journal up to its seq, byte for byte or
by hash, without the Python API.
"""

from __future__ import annotations

import argparse
import sys

from clearing.engine import load_engine, state_file_bytes, state_sha256
from clearing.errors import StateFormatError, UserError
from clearing.snapshot import SnapshotError, read_snapshot

__all__ = ["snapshot_command"]


def snapshot_command(args: argparse.Namespace) -> int:
    try:
        snapshot = read_snapshot(args.path)
    except FileNotFoundError:
        raise UserError(f"{args.path}: no such file; pass a snapshot-<seq>.snap file") from None
    except IsADirectoryError:
        raise UserError(
            f"{args.path} is a directory; pass one snapshot-<seq>.snap file in it"
        ) from None
    except SnapshotError as exc:
        raise UserError(f"{args.path} is not a usable snapshot: {exc}") from None
    try:
        # Either core reads either core's bytes; the printed state is the same.
        engine = load_engine(snapshot.state, "auto")
    except StateFormatError as exc:
        raise UserError(f"{args.path}: the state inside cannot be read: {exc}") from None
    if args.hash:
        print(f"seq {snapshot.journal_seq} state sha256 {state_sha256(engine)}")
        return 0
    sys.stdout.buffer.write(state_file_bytes(engine))
    sys.stdout.flush()
    return 0
