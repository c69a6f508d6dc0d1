"""Source -> sequencer -> journal -> engine: numbering, journaling, recovery."""

from clearing.sequencer._recovery import (
    OutputDivergence,
    RecoveryError,
    RecoveryResult,
    encode_outputs,
    join_outputs,
    recover,
)
from clearing.sequencer._sequencer import Sequencer, SequencerBroken

__all__ = [
    "OutputDivergence",
    "RecoveryError",
    "RecoveryResult",
    "Sequencer",
    "SequencerBroken",
    "encode_outputs",
    "join_outputs",
    "recover",
]
