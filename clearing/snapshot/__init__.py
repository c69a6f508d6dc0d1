"""Atomic, checksummed snapshots of the engine state (format in ``_snapshot``)."""

from ._snapshot import (
    HEADER_BYTES,
    Snapshot,
    SnapshotError,
    SnapshotInfo,
    default_snapshot_dir,
    list_snapshots,
    load_latest,
    prune,
    read_snapshot,
    snapshot_name,
    write_snapshot,
)

__all__ = [
    "HEADER_BYTES",
    "Snapshot",
    "SnapshotError",
    "SnapshotInfo",
    "default_snapshot_dir",
    "list_snapshots",
    "load_latest",
    "prune",
    "read_snapshot",
    "snapshot_name",
    "write_snapshot",
]
