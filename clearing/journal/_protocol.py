"""The storage-agnostic journal interface.

Kept deliberately small and free of file concepts so that a Kafka-topic journal
can implement it too.  Semantics every implementation must honour:

* Records are numbered ``seq`` = 1, 2, 3, ... with no gaps; ``append`` rejects a
  record whose ``seq`` is not ``last_seq + 1`` (before writing anything).
* ``head_hash`` is the chain hash of record ``last_seq`` (32 zero bytes when
  empty), computed exactly as documented in ``clearing.journal._format`` so that
  two implementations holding the same records report the same head hash.
* When ``append`` returns, the records are visible to ``read`` and are as durable
  as the implementation's durability policy promises; ``sync`` makes everything
  appended so far durable regardless of that policy.
* If ``append`` raises, a prefix of the batch may have been stored; the journal is
  then unusable until reopened, and the caller learns what was kept from
  ``last_seq`` / ``last_record()`` after reopening.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from ._format import GENESIS_HASH, Record

__all__ = ["Journal", "JournalReader", "hash_at"]


@runtime_checkable
class JournalReader(Protocol):
    """The read side of a journal, as the replay loop (``clearing.sequencer.replay``)
    uses it: ``LocalJournal`` and the Kafka journal reader both satisfy it.

    A reader may also offer ``frame_windows(from_seq, until_seq)`` (raw frame windows
    for a verifier that checks frames itself, as ``LocalJournal`` does); the replay loop
    uses it where the engine can verify and apply frames. And it may say
    ``all_outputs_recorded`` (its writer recorded every input's outputs, so a record
    with none claims the input had none: the replay loop compares it too).
    """

    @property
    def last_seq(self) -> int:
        """Seq of the newest record; 0 when the journal is empty."""
        ...

    @property
    def head_hash(self) -> bytes:
        """Chain hash of the newest record (32 zero bytes when empty)."""
        ...

    @property
    def rules_version(self) -> int:
        """The clearing rules (SPEC §9 head) the ledger of this journal runs under: the
        engine a replay applies its records to must run the same."""
        ...

    def hash_at(self, seq: int) -> bytes:
        """Chain hash of record ``seq`` (``GENESIS_HASH`` for 0); ValueError outside."""
        ...

    def read(self, from_seq: int = 1, until_seq: int | None = None) -> Iterator[Record]:
        """Yield verified records ``from_seq..until_seq`` (inclusive), chain_hash set."""
        ...


@runtime_checkable
class Journal(JournalReader, Protocol):
    """A journal a writer appends to (the reader's side as ``JournalReader``)."""

    def append(self, records: Iterable[Record]) -> None:
        """Append one batch (group commit) of records with consecutive seqs."""
        ...

    def sync(self) -> None:
        """Make every record appended so far durable, whatever the policy."""
        ...

    def read(self, from_seq: int = 1, until_seq: int | None = None) -> Iterator[Record]:
        """Yield verified records ``from_seq..until_seq`` (inclusive), chain_hash set.

        The range is fixed when ``read`` is called: records appended while the
        iterator is live are not included.
        """
        ...

    def last_record(self) -> Record | None:
        """The newest record (e.g. to find where each input source stopped)."""
        ...

    def close(self) -> None: ...


def hash_at(journal: Journal, seq: int) -> bytes:
    """Chain hash of record ``seq`` (``GENESIS_HASH`` for 0).

    Use it to check that a snapshot's ``(journal_seq, journal_hash)`` belongs to
    this journal's history before replaying from ``journal_seq + 1``.  Raises
    ``ValueError`` when ``seq`` is beyond ``last_seq``.
    """
    if seq == 0:
        return GENESIS_HASH
    if not 0 < seq <= journal.last_seq:
        raise ValueError(f"seq {seq} is outside the journal (last seq {journal.last_seq})")
    for rec in journal.read(seq, seq):
        return rec.chain_hash
    raise ValueError(f"seq {seq} could not be read")  # pragma: no cover - read() contract
