"""Journal records edited for damage tests: a field changed, or the whole chain
recomputed so that only re-deriving the outputs can find the change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clearing.journal import Record
from clearing.sequencer import JournalChain

__all__ = ["rechained", "with_fields"]


def rechained(records: list[Record], edit: Callable[[Record], Record]) -> list[Record]:
    """``records`` with ``edit`` applied to each and the chain recomputed: damage that
    only re-deriving the outputs can find."""
    chain = JournalChain()
    out = []
    for record in records:
        r = edit(record)
        out.append(chain.append(r.seq, r.source, r.payload, r.outputs))
    return out


def with_fields(record: Record, **fields: Any) -> Record:
    """``record`` with ``fields`` replaced (its chain hash left as it was)."""
    values = {name: getattr(record, name) for name in Record.__struct_fields__}
    return Record(**{**values, **fields})
