"""Source -> sequencer -> journal -> engine: numbering, journaling, upkeep, recovery."""

from clearing.sequencer._recovery import (
    OutputDivergence,
    RecoveryError,
    RecoveryResult,
    encode_outputs,
    join_outputs,
    recover,
)
from clearing.sequencer._schedule import Due, UpkeepSchedule
from clearing.sequencer._sequencer import Sequencer, SequencerBroken
from clearing.sequencer._step import JournalChain, Step, decode_record, encode_record, sequence

__all__ = [
    "Due",
    "JournalChain",
    "OutputDivergence",
    "RecoveryError",
    "RecoveryResult",
    "Sequencer",
    "SequencerBroken",
    "Step",
    "UpkeepSchedule",
    "decode_record",
    "encode_outputs",
    "encode_record",
    "join_outputs",
    "recover",
    "sequence",
]
