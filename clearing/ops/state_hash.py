"""The daemon's state hash on ``GET /state-hash``: consistent, and bounded in cost.

Consistent: the engine runs ahead of the committed journal while a batch is planned or
in flight, so the hash is never taken on request. The request waits; the daemon's loop,
at its next point where the engine equals the committed state (no transaction open,
the same point where snapshots fork), calls ``answer(engine)``. The reply names the seq
it is for: ``{"seq": N, "state_sha256": "...", "committed_seq": M}``, the hash equal to
``clearing replay --until N`` of the journal (``clearing.engine.state_sha256``).

Bounded: hashing serialises the whole state on the loop (1M accounts with a position
each: 59 MB of JSON, 1.5-2 s on a loaded 2-core machine), so it is cached per committed
seq and recomputed at most once per ``_COST_FACTOR`` times its last cost (and at most
once a ``_MIN_INTERVAL_S``): whatever the polling rate, at most a tenth of the loop's
time goes to it. Between recomputations a request gets the last hash with its own
(older) seq; ``committed_seq`` shows how far the ledger is.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final, NamedTuple

from clearing.engine import EngineCore, state_sha256

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
    """Requests for the committed state's hash, answered by the daemon's loop."""

    def __init__(self) -> None:
        self._cached: StateHash | None = None
        self._next_allowed_s = 0.0  # monotonic time before which the cache is served
        self._waiters: list[asyncio.Future[StateHash]] = []
        self.last_cost_s = 0.0

    @property
    def wanted(self) -> bool:
        """True when a request waits: the loop should settle and call ``answer``."""
        # A request that timed out (its future cancelled) no longer needs a hash.
        self._waiters = [waiter for waiter in self._waiters if not waiter.done()]
        return bool(self._waiters)

    async def get(self, committed_seq: int) -> StateHash:
        """The hash at ``committed_seq`` if known or too soon to recompute; else wait for
        the loop's next consistent point."""
        cached = self._cached
        if cached is not None and (
            cached.seq == committed_seq or time.monotonic() < self._next_allowed_s
        ):
            return cached._replace(committed_seq=committed_seq)
        waiter: asyncio.Future[StateHash] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def answer(self, engine: EngineCore) -> None:
        """Called by the loop while ``engine`` is exactly the committed state."""
        seq = engine.seq
        if self._cached is None or self._cached.seq != seq:
            started = time.monotonic()
            self._cached = StateHash(seq, state_sha256(engine), seq)
            self.last_cost_s = time.monotonic() - started
            self._next_allowed_s = started + max(_MIN_INTERVAL_S, _COST_FACTOR * self.last_cost_s)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(self._cached._replace(committed_seq=seq))
