"""Source -> sequencer -> journal -> engine: numbering, journaling, upkeep, replay,
recovery."""

from clearing.sequencer._recovery import RecoveryResult, recover
from clearing.sequencer._replay import (
    Divergence,
    OutputDivergence,
    RecoveryError,
    ReplayObserver,
    ReplayResult,
    encode_outputs,
    join_outputs,
    replay,
)
from clearing.sequencer._schedule import Due, UpkeepSchedule
from clearing.sequencer._sequencer import Sequencer, SequencerBroken
from clearing.sequencer._step import JournalChain, Step, decode_record, encode_record, sequence

__all__ = [
    "Divergence",
    "Due",
    "JournalChain",
    "OutputDivergence",
    "RecoveryError",
    "RecoveryResult",
    "ReplayObserver",
    "ReplayResult",
    "Sequencer",
    "SequencerBroken",
    "Step",
    "UpkeepSchedule",
    "decode_record",
    "encode_outputs",
    "encode_record",
    "join_outputs",
    "recover",
    "replay",
    "sequence",
]
