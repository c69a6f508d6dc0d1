"""Fund adequacy in the daemon: ``clearing risk`` on the committed state, every
``risk.interval_s``, in a forked child (``clearing.risk.start_adequacy_job_on_inputs``).

Off the commit path: the loop starts a child only between transactions (the engine then
holds exactly the committed state, as for the upkeep's check child), the child runs one
scenario at a time (one core at most), and the loop polls its pipe every
``_POLL_S`` from a task of its own. Off the hot path: the oracle history is fed once per
committed batch from the kinds the sequencer already recorded, so only oracle ticks (and
inputs of unknown kind) are looked at, and only to keep a reference to their bytes: the
child parses them (``start_adequacy_job_on_inputs``) and says how many fell out of the
window, which the loop then drops. Per committed input that costs one byte translated in
C; per oracle tick, one list append (one substring search first on the Python core).

After a restart the history starts with the journal tail replayed at recovery (the
records after the snapshot it started from); the ticks before that snapshot are read back
from the journal topic off the loop (``rebuild_history``, ``_oracle_backfill``) and
put in front of the history at the next start of a job (never while one runs: the
``stale`` count a job returns is an index into the history it was given), and that job
starts at once. Until they land the job runs on what it has: a daemon without one
horizon of ticks yet reports nothing, and counts each attempt as a failure.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Final

from clearing.engine import INPUT_KINDS, EngineCore
from clearing.kafka._oracle_backfill import OracleBackfill
from clearing.kafka._recovery import KafkaRecovery
from clearing.ops.config import Config, RiskConfig
from clearing.ops.fund_metrics import FundRiskMetrics
from clearing.risk import (
    AdequacyJob,
    AdequacyResult,
    OracleHistory,
    Settings,
    start_adequacy_job_on_inputs,
)
from clearing.risk._history import OracleTick

__all__ = ["FundRisk", "oracle_candidates", "settings_of"]

log = logging.getLogger("clearing.kafka")

_S: Final = 1_000_000_000
_POLL_S: Final = 0.5
# Input kinds that may be an oracle tick: parsed as one by the native core, or not parsed
# (0: the Python core, or an input the native core refused).
_ORACLE: Final = INPUT_KINDS.index("oracle")
_MAYBE_ORACLE: Final = bytes(1 if kind in (0, _ORACLE) else 0 for kind in range(256))


def settings_of(config: RiskConfig) -> Settings:
    """The ``clearing risk`` settings the configuration stands for."""
    return Settings(
        horizon_ns=config.horizon_s * _S,
        step_ns=None if config.step_s is None else config.step_s * _S,
        window_ns=config.window_s * _S,
        scale=Fraction(config.scale),
        limit=config.scenarios,
        seed=config.seed,
    )


def oracle_candidates(kinds: bytes) -> Iterable[int]:
    """Indexes (ascending) of the inputs of a batch that may be oracle ticks."""
    marked = kinds.translate(_MAYBE_ORACLE)
    index = marked.find(1)
    while index >= 0:
        yield index
        index = marked.find(1, index + 1)


class FundRisk:
    """The oracle history, the schedule, and at most one running adequacy child."""

    def __init__(
        self,
        config: RiskConfig,
        metrics: FundRiskMetrics,
        now_s: float,
        history: OracleHistory | None = None,
    ) -> None:
        """``history``: the ticks seen so far (recovery's), else an empty one."""
        self._interval_s = float(config.interval_s)
        self._settings = settings_of(config)
        self._window_ns = config.window_s * _S
        self._metrics = metrics
        # The ticks recovery parsed, then the raw oracle inputs committed since, in seq
        # order; the job trims the head that fell out of the window.
        self._ticks: collections.deque[OracleTick] = collections.deque(
            history.ticks() if history is not None else ()
        )
        self._payloads: collections.deque[bytes] = collections.deque()
        self._next_s = now_s + self._interval_s  # loop time of the next computation
        self._job: AdequacyJob | None = None
        self._task: asyncio.Task[None] | None = None
        self.last: AdequacyResult | None = None  # the last result, figures or error
        # Ticks read back from the journal after a restart, older than every one held,
        # waiting for the next start (``rebuild_history``); None: none pending.
        self._older: list[OracleTick] | None = None
        self._backfill = OracleBackfill(self._window_ns)

    def rebuild_history(self, config: Config, recovery: KafkaRecovery) -> None:
        """Read the ticks the recovered history lacks back from the journal topic, off the
        loop (``OracleBackfill``); the loop goes on and they land at the next start."""
        newest_ns = self._ticks[-1].ts_ns if self._ticks else None
        self._backfill.start(config, recovery, newest_ns, self._take_older)

    def _take_older(self, ticks: list[OracleTick]) -> None:
        self._older = ticks  # seqs before every tick held: they go in front
        self._next_s = -math.inf  # compute with the whole window at once

    def observe(self, applied: Sequence[tuple[str, bytes]], kinds: bytes) -> None:
        """Feed a committed batch: ``applied`` (topic, raw) and its kinds, in seq order."""
        keep = self._payloads.append
        for index in oracle_candidates(kinds):
            raw = applied[index][1]
            if kinds[index] == _ORACLE or b'"oracle"' in raw:
                keep(raw)

    def history(self) -> OracleHistory:
        """The ticks kept so far, parsed (for tests and tools; the loop never parses)."""
        history = OracleHistory(self._window_ns)
        for tick in self._ticks:
            history.observe_tick(tick)
        for raw in self._payloads:
            history.observe(raw)
        return history

    def due(self, now_s: float) -> bool:
        return self._job is None and now_s >= self._next_s

    def start(self, engine: EngineCore, now_s: float) -> None:
        """Fork the child; only between transactions (``engine`` = the committed state)."""
        self._next_s = now_s + self._interval_s
        if self._older is not None:  # no job runs: its stale count cannot be thrown off
            self._ticks.extendleft(reversed(self._older))
            self._older = None
        taken_ns = time.time_ns()
        try:
            job = start_adequacy_job_on_inputs(
                engine, list(self._ticks), list(self._payloads), self._window_ns, self._settings
            )
        except OSError as exc:  # no fork (memory, process limit): an optional figure, go on
            self._report(AdequacyResult(engine.seq, error=f"cannot fork: {exc}"), taken_ns)
            return
        self._job = job
        self._task = asyncio.create_task(self._watch(job, taken_ns), name="clearing-fund-risk")

    async def _watch(self, job: AdequacyJob, taken_ns: int) -> None:
        try:
            result = job.poll()
            while result is None:
                await asyncio.sleep(_POLL_S)
                result = job.poll()
        except Exception as exc:  # reaping or reading failed: a failed computation
            result = AdequacyResult(job.seq, error=f"lost track of the child: {exc!r}")
        finally:
            self._job = None
        self._report(result, taken_ns)

    def _report(self, result: AdequacyResult, taken_ns: int) -> None:
        self.last = result
        self._drop(result.stale)
        seq = result.seq
        if result.error is not None:
            self._metrics.observe_failure()
            log.warning(
                "fund adequacy at seq %d not computed: %s", seq, result.error, extra={"seq": seq}
            )
            return
        draws = result.expected_shortfall_e16["fund_draws"]
        self._metrics.observe(
            seq=seq,
            scenarios=result.scenarios,
            fund_draws_es_e16=draws,
            coverage_ratio=result.coverage_ratio,
            equity_coverage_ratio=result.equity_coverage_ratio,
            seconds=result.seconds,
            taken_ns=taken_ns,
        )
        log.info(
            "fund adequacy at seq %d: %d scenarios in %.1f s, coverage %s",
            seq,
            result.scenarios,
            result.seconds,
            result.coverage_ratio or "unbounded",
            extra={"seq": seq},
        )

    def _drop(self, stale: int) -> None:
        """Forget the ``stale`` oldest entries (parsed ticks first, then raw inputs):
        only appended to since the job started, so these are the ones it judged."""
        for held in (self._ticks, self._payloads):
            while stale and held:
                held.popleft()
                stale -= 1

    def kill(self) -> None:
        """Exiting: stop a running child, its result no longer matters."""
        self._backfill.stop()
        if self._job is not None:
            self._job.kill()
            self._job = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
