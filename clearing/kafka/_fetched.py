"""Journal records a standby has just fetched, as a journal reader for the replay loop.

The standby applies the journal topic as the active commits it, through the same replay
loop as recovery and the audit (``clearing.sequencer.replay``). That loop reads from a
``JournalReader``; ``FetchedJournal`` is one over the records of a few fetched journal
messages, chained from where the follower stands (its last seq and chain hash).

It offers both ways through the loop: ``read`` checks each record (its seq follows the
one before, its chain hash recomputes) before the loop applies it; ``frame_windows``
hands the records out as journal frames, for an engine that verifies and applies frames
itself (the native core) at a fraction of the per-record cost (``RecordsWindow``). A
frame that engine refuses is read back by the window's ``read_record``, which makes the
checks ``read`` makes and raises the same error. The daemon records every input's
outputs, so the loop holds a record that recorded none to re-deriving none
(``all_outputs_recorded``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from clearing.errors import KafkaJournalError
from clearing.journal import FrameWindow, Record, chain_hash
from clearing.kafka._frames import RecordsWindow

__all__ = ["FetchedJournal"]


class FetchedJournal:
    """The records of fetched journal messages after seq ``last_seq`` (whose chain hash
    is ``head_hash``): a ``JournalReader`` over ``last_seq + 1 ..`` for one replay.

    ``records`` are decoded, not yet verified: both ways of reading verify them as the
    loop goes, so a damaged record stops the replay after the records before it are
    applied.
    """

    # The daemon writes every input's outputs into its record (an empty one: none).
    all_outputs_recorded: Final = True

    def __init__(
        self, records: Sequence[Record], last_seq: int, head_hash: bytes, rules_version: int
    ) -> None:
        self._records = records
        self._from_seq = last_seq + 1
        self._prev_hash = head_hash
        self._rules_version = rules_version

    @property
    def last_seq(self) -> int:
        """The seq the records end at, if they follow on (reading checks that they do)."""
        return self._from_seq - 1 + len(self._records)

    @property
    def head_hash(self) -> bytes:
        """The chain hash the last record claims (reading checks it)."""
        return self._records[-1].chain_hash if self._records else self._prev_hash

    @property
    def rules_version(self) -> int:
        """The follower's engine's: the journal topic records no other (see
        ``KafkaJournalReader.rules_version``)."""
        return self._rules_version

    def hash_at(self, seq: int) -> bytes:
        if seq == self._from_seq - 1:
            return self._prev_hash
        if not self._from_seq <= seq <= self.last_seq:
            raise ValueError(f"seq {seq} is not among the fetched journal records")
        return self._records[seq - self._from_seq].chain_hash

    def read(self, from_seq: int = 1, until_seq: int | None = None) -> Iterator[Record]:
        """The records ``from_seq..until_seq`` (from the first fetched one only), each
        checked before it is yielded."""
        stop = self._stop(from_seq, until_seq)
        seq, prev = from_seq, self._prev_hash
        for record in self._records[: stop - from_seq + 1]:
            prev = _checked(record, seq, prev)
            yield record
            seq += 1

    def frame_windows(
        self, from_seq: int = 1, until_seq: int | None = None
    ) -> Iterator[FrameWindow]:
        """The records ``from_seq..until_seq`` as one window of journal frames."""
        stop = self._stop(from_seq, until_seq)
        where = f"fetched journal records {from_seq}..{stop}"
        records = self._records[: stop - from_seq + 1]
        yield RecordsWindow(where, records, from_seq, self._prev_hash, stop, _check_at)

    def _stop(self, from_seq: int, until_seq: int | None) -> int:
        if from_seq != self._from_seq:
            raise ValueError(f"fetched journal records start at seq {self._from_seq}")
        return self.last_seq if until_seq is None else min(until_seq, self.last_seq)


def _checked(record: Record, seq: int, prev_hash: bytes) -> bytes:
    """``record``'s chain hash once it is checked to be record ``seq`` chained to
    ``prev_hash``; KafkaJournalError (the standby stops) if it is not."""
    if record.seq != seq:
        raise KafkaJournalError(f"journal seq {record.seq} where {seq} was expected")
    digest = chain_hash(
        prev_hash, record.seq, record.source.encode(), record.payload, record.outputs
    )
    if digest != record.chain_hash:
        raise KafkaJournalError(f"hash chain break at journal seq {record.seq}")
    return digest


def _check_at(index: int, record: Record, seq: int, prev_hash: bytes) -> bytes:
    """``_checked`` as a window's check of a frame the verifier refused: the frames are
    the records', so the refusal is the record failing the seq or chain check."""
    return _checked(record, seq, prev_hash)
