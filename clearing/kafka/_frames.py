"""Decoded journal-topic records handed to a frame verifier as journal frames.

The journal topic's messages hold ``Record`` s in the body layout of a local journal frame
(``clearing.kafka._batch``). Readers of the topic decode them (to check what a message
holds) and then either check and yield them one by one, or frame them here
(``encode_frames``) so that an engine that verifies and applies frames itself (the native
core's ``replay_window``) checks and applies a batch of them per call, with no Python
step per record after the decoding.

Both ways make the same checks: a frame the verifier refuses is its record failing the seq
or the chain check (the frames are the records', re-encoded), and ``read_record`` then
makes the reader's own check of that record, which raises the reader's own error. The
standby's fetched records (``FetchedJournal``) and the journal topic read back for
recovery and the audit (``KafkaJournalReader``) share this one window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from clearing.journal import FrameWindow, Record, encode_frames

__all__ = ["RecordCheck", "RecordsWindow"]

# (index of the record in the window, the record, the seq it must have, the chain hash
# before it) -> its chain hash once checked; raises the reader's error when it fails.
RecordCheck = Callable[[int, Record, int, bytes], bytes]


class RecordsWindow(FrameWindow):
    """``records`` (to be seqs ``first_seq..``, chained to ``prev_hash``, none asked for
    after ``stop_seq``) as one window of journal frames; ``check`` is the reader's check
    of one record, made where the verifier refuses a frame."""

    __slots__ = ("_check", "_ends", "_first_seq", "_records")

    def __init__(
        self,
        where: str,
        records: Sequence[Record],
        first_seq: int,
        prev_hash: bytes,
        stop_seq: int,
        check: RecordCheck,
    ) -> None:
        buf, self._ends = encode_frames(records)  # and each frame's end offset
        super().__init__(where, where, buf, 0, len(buf), first_seq, prev_hash, stop_seq)
        self._records = records
        self._first_seq = first_seq
        self._check = check

    def read_record(self) -> Record:
        index = self.seq - self._first_seq
        record = self._records[index]
        self.prev_hash = self._check(index, record, self.seq, self.prev_hash)
        self.offset = self._ends[index]
        self.seq += 1
        return record
