"""The daemon's state hash on ``GET /state-hash``: consistent, and bounded in cost.

Consistent: the request goes through the daemon's one queue of committed reads
(``clearing.ops.reads``), answered by its loop at the next point where the engine equals
the committed state. The reply names the seq it is for:
``{"seq": N, "state_sha256": "...", "committed_seq": M}``, the hash equal to
``clearing replay --until N`` of the journal (``clearing.engine.state_sha256``).

Bounded: hashing serialises the whole state on the loop (1M accounts with a position
each: 59 MB of JSON, 1.5-2 s on a loaded 2-core machine), so it is cached per committed
seq and recomputed at most once per ``_COST_FACTOR`` times its last cost (and at most
once a ``_MIN_INTERVAL_S``): whatever the polling rate, at most a tenth of the loop's
time goes to it. Between recomputations a request gets the last hash with its own
(older) seq; ``committed_seq`` shows how far the ledger is.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from clearing.engine import EngineCore, state_sha256
from clearing.ops.reads import CommittedReads, CostBoundedCache

__all__ = ["CommittedStateHash", "StateHash"]

# Recompute only after this many times the last computation's duration has passed...
_COST_FACTOR: Final = 10.0
# ... and never more than once a second (small ledgers: cheap, but a busy loop anyway).
_MIN_INTERVAL_S: Final = 1.0


class StateHash(NamedTuple):
    seq: int
    state_sha256: str
    committed_seq: int  # the daemon's last committed seq when this was answered

    def as_json(self) -> dict[str, int | str]:
        return {
            "seq": self.seq,
            "state_sha256": self.state_sha256,
            "committed_seq": self.committed_seq,
        }


class CommittedStateHash:
    """Requests for the committed state's hash, answered through ``reads`` (a queue of
    its own when not given: then ``wanted`` and ``answer`` are the loop's to call)."""

    def __init__(self, reads: CommittedReads | None = None) -> None:
        self.reads = reads if reads is not None else CommittedReads()
        self._cache: CostBoundedCache[str] = CostBoundedCache(
            state_sha256, _COST_FACTOR, _MIN_INTERVAL_S
        )

    @property
    def last_cost_s(self) -> float:
        return self._cache.last_cost_s

    @property
    def wanted(self) -> bool:
        return self.reads.wanted

    def answer(self, engine: EngineCore) -> None:
        self.reads.answer(engine)

    async def get(self, committed_seq: int) -> StateHash:
        """The hash at ``committed_seq`` if known or too soon to recompute; else wait for
        the loop's next consistent point."""
        seq, digest = await self._cache.get(self.reads, committed_seq)
        return StateHash(seq, digest, max(seq, committed_seq))
