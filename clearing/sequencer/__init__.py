"""Source -> sequencer -> journal -> engine: numbering, journaling, replay, recovery."""

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
from clearing.sequencer._sequencer import Sequencer, SequencerBroken

__all__ = [
    "Divergence",
    "OutputDivergence",
    "RecoveryError",
    "RecoveryResult",
    "ReplayObserver",
    "ReplayResult",
    "Sequencer",
    "SequencerBroken",
    "encode_outputs",
    "join_outputs",
    "recover",
    "replay",
]
