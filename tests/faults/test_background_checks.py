"""The forked invariant check and snapshot (clearing/kafka/_background.py), no broker."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from clearing.engine import Engine, load_engine
from clearing.engine.persist import dump_state
from clearing.kafka._background import BackgroundResult, start_background_job


def _ledger() -> Engine:
    engine = Engine()
    for raw in (
        b'{"type":"market","market":"BTC","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}',
        b'{"type":"deposit","account":"a","amount":"100"}',
        b'{"type":"deposit","account":"b","amount":"1000"}',
        b'{"type":"oracle","market":"BTC","price":"100"}',
        b'{"type":"fill","fill_id":"f1","market":"BTC","price":"100","qty":"5",'
        b'"buyer":"a","seller":"b"}',
    ):
        engine.apply(raw)
    return engine


def test_a_clean_ledger_checks_out_and_the_child_writes_the_snapshot(tmp_path: Path) -> None:
    engine = _ledger()
    target = tmp_path / "state.bin"

    def write(state: Engine) -> str:
        target.write_bytes(dump_state(state))
        return str(target)

    result = asyncio.run(start_background_job(engine, write).wait())
    assert result.violation is None and result.error is None and result.snapshot_error is None
    assert result.snapshot_path == str(target) and result.seq == engine.seq
    # The child's copy is the parent's state at the fork, byte for byte.
    assert dump_state(load_engine(target.read_bytes())) == dump_state(engine)


def test_a_broken_ledger_is_reported_with_the_invariant_it_breaks() -> None:
    engine = _ledger()
    engine.ledger.accounts["a"].cash_e16 += 1  # money out of nowhere
    result = asyncio.run(start_background_job(engine, None).wait())
    assert result.violation is not None and "cash sums to" in result.violation
    assert result.snapshot_path is None


def test_a_failed_snapshot_write_is_not_a_violation() -> None:
    def write(_: Engine) -> str:
        raise OSError(28, "No space left on device")

    result = asyncio.run(start_background_job(_ledger(), write).wait())
    assert result.violation is None and result.error is None
    assert result.snapshot_error is not None and "No space left" in result.snapshot_error


def test_a_crash_in_the_child_is_an_error_not_silence() -> None:
    def write(_: Engine) -> str:
        raise RuntimeError("bug in the writer")

    result = asyncio.run(start_background_job(_ledger(), write).wait())
    assert result.error is not None and "bug in the writer" in result.error


def test_kill_reaps_a_running_child() -> None:
    def write(_: Engine) -> str:
        import time

        time.sleep(30)
        return "never"

    job = start_background_job(_ledger(), write)
    job.kill()
    with pytest.raises(ChildProcessError):
        os.waitpid(job.pid, 0)  # already reaped: no zombie left behind


def test_the_child_dies_with_the_daemon(tmp_path: Path) -> None:
    """A daemon killed with -9 must not leave a child finishing an old snapshot."""
    import subprocess
    import sys
    import textwrap
    import time

    script = textwrap.dedent(
        """
        import sys, time
        from clearing.engine import Engine
        from clearing.kafka._background import BackgroundResult, start_background_job

        def write(_):
            time.sleep(60)
            return "never"

        job = start_background_job(Engine(), write)
        print(job.pid, flush=True)
        time.sleep(60)
        """
    )
    daemon = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    child_pid = int(daemon.stdout.readline())
    daemon.kill()
    daemon.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        # A zombie reparented to init still answers kill(0) until reaped: read its state.
        try:
            with open(f"/proc/{child_pid}/stat") as stat:
                if stat.read().split(")")[-1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"child {child_pid} outlived its parent")


def test_a_child_ended_by_a_signal_is_interrupted_not_a_failure() -> None:
    """systemd's stop sends SIGTERM to the whole group; the OOM killer sends SIGKILL."""
    import signal
    import time

    def write(_: Engine) -> str:
        time.sleep(30)
        return "never"

    async def run() -> BackgroundResult:
        job = start_background_job(_ledger(), write)
        await asyncio.sleep(0.2)
        os.kill(job.pid, signal.SIGTERM)
        return await job.wait()

    result = asyncio.run(run())
    assert result.interrupted == "killed by SIGTERM"
    assert result.violation is None and result.error is None
