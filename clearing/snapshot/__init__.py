"""Atomic, checksummed snapshots of the engine state (format in ``_snapshot``)."""

from ._snapshot import (
    HEADER_BYTES,
    Snapshot,
    SnapshotError,
    SnapshotInfo,
    default_snapshot_dir,
    install_snapshot,
    list_snapshots,
    load_latest,
    parse_snapshot_header,
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
    "install_snapshot",
    "list_snapshots",
    "load_latest",
    "parse_snapshot_header",
    "prune",
    "read_snapshot",
    "snapshot_name",
    "write_snapshot",
]
