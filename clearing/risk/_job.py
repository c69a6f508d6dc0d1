"""Fund adequacy in the background: what a long-running process (the daemon) needs to
recompute ``clearing risk`` every few minutes without stalling.

- ``OracleHistory`` keeps the stamped oracle ticks of the inputs the process has
  committed, the newest ``window`` of them (feed it each committed input's raw bytes).
- ``start_adequacy_job`` forks a child from the committed state, exactly as the daemon's
  snapshot child is forked: the child runs ``assess`` (its scenarios one at a time, each in
  a grandchild, so it takes one core at most) and sends back an ``AdequacyResult``; the
  parent polls it without blocking. The parent's engine is never touched.

Not wired into the daemon yet (docs/fund-risk.md says how); the metrics it would feed are
``clearing_fund_expected_shortfall``, ``clearing_fund_coverage_ratio`` and the scenario
count and age.
"""

from __future__ import annotations

import collections
import gc
import os
import signal
import time
from typing import Final

import msgspec

from clearing.engine import EngineCore
from clearing.errors import ScenarioFailed
from clearing.risk._adequacy import LOSSES, Settings, assess
from clearing.risk._history import OracleTick, oracle_tick
from clearing.risk._render import ratio_text

__all__ = ["AdequacyJob", "AdequacyResult", "OracleHistory", "start_adequacy_job"]

_READ_BYTES: Final = 1 << 16
_EXIT_FAILED: Final = 70


class OracleHistory:
    """The stamped oracle ticks observed, at most ``window_ns`` older than the newest."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self._ticks: collections.deque[OracleTick] = collections.deque()

    def observe(self, raw: bytes) -> None:
        """Look at one committed input (cheap for anything but a stamped oracle tick)."""
        tick = oracle_tick(raw)
        if tick is None:
            return
        self._ticks.append(tick)
        oldest_ns = tick.ts_ns - self.window_ns
        while self._ticks and self._ticks[0].ts_ns < oldest_ns:
            self._ticks.popleft()

    def ticks(self) -> list[OracleTick]:
        return list(self._ticks)


class AdequacyResult(msgspec.Struct, frozen=True):
    """One background assessment: exact e16 amounts, ratios as decimal strings (None:
    unbounded, no scenario lost anything), or ``error`` when it could not run."""

    seq: int
    scenarios: int = 0
    fund_equity_e16: int = 0
    # loss name (``LOSSES``) -> [ES 99%, ES 99.9%]
    expected_shortfall_e16: dict[str, list[int]] = {}
    coverage_ratio: str | None = None
    equity_coverage_ratio: str | None = None
    seconds: float = 0.0
    error: str | None = None


class AdequacyJob:
    """A running child; ``poll()`` returns its result once it has finished (else None)."""

    def __init__(self, pid: int, read_fd: int, seq: int) -> None:
        self.pid, self.seq = pid, seq
        self._read_fd = read_fd
        self._chunks: list[bytes] = []
        self._started = time.perf_counter()
        os.set_blocking(read_fd, False)

    def poll(self) -> AdequacyResult | None:
        self._drain()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        return self._result(status)

    def wait(self) -> AdequacyResult:
        _, status = os.waitpid(self.pid, 0)
        return self._result(status)

    def kill(self) -> None:
        """Stop the child now (shutdown) and reap it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        self._close()

    def _drain(self) -> None:
        while self._read_fd >= 0:
            try:
                chunk = os.read(self._read_fd, _READ_BYTES)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def _result(self, status: int) -> AdequacyResult:
        self._drain()
        self._close()
        payload = b"".join(self._chunks)
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            return msgspec.json.decode(payload, type=AdequacyResult)
        detail = payload.decode(errors="replace").strip() or f"exit status {code}"
        return AdequacyResult(self.seq, seconds=time.perf_counter() - self._started, error=detail)

    def _close(self) -> None:
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1


def start_adequacy_job(
    engine: EngineCore, ticks: list[OracleTick], settings: Settings
) -> AdequacyJob:
    """Fork a child that assesses ``engine`` as it is now. Call it only when the engine
    holds exactly the committed state (between batches)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(engine, ticks, settings, write_fd)
    os.close(write_fd)
    return AdequacyJob(pid, read_fd, engine.seq)


def _child(engine: EngineCore, ticks: list[OracleTick], settings: Settings, write_fd: int) -> None:
    code, payload = _EXIT_FAILED, b""
    try:
        signal.set_wakeup_fd(-1)  # the parent's event loop is not ours to wake
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        gc.disable()
        started = time.perf_counter()
        payload = msgspec.json.encode(_assess(engine, ticks, settings, started))
        code = 0
    except BaseException as exc:  # reported to the parent as the result's error
        payload = repr(exc).encode()
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
    finally:
        os._exit(code)


def _assess(
    engine: EngineCore, ticks: list[OracleTick], settings: Settings, started: float
) -> AdequacyResult:
    try:
        adequacy = assess(engine, ticks, settings, jobs=1)
    except ScenarioFailed as exc:
        return AdequacyResult(engine.seq, error=str(exc))
    if adequacy is None:
        return AdequacyResult(engine.seq, error="the oracle history is shorter than one horizon")
    return AdequacyResult(
        seq=engine.seq,
        scenarios=len(adequacy.outcomes),
        fund_equity_e16=adequacy.fund_equity_e16,
        expected_shortfall_e16={name: [t.es for t in adequacy.tails(name)] for name in LOSSES},
        coverage_ratio=ratio_text(adequacy.coverage("fund_draws")),
        equity_coverage_ratio=ratio_text(adequacy.coverage("fund_equity_loss")),
        seconds=time.perf_counter() - started,
    )
