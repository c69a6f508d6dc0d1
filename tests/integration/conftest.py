"""Fixtures for tests against a real single-node Apache Kafka (KRaft) broker, and the
scaffolding of the tests that run a daemon on it.

The broker comes from tools/kafka_local.py (jars fetched once with mvn and cached).
A broker that cannot start is a test ERROR, never a skip: CI must not go green
without having talked to Kafka. Deselect with `-m "not kafka"` if you must.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from clearing.journal import Record
from clearing.kafka import EXIT_OK, create_topics
from clearing.ops.config import Config, load_config

if TYPE_CHECKING:
    from tests.integration.test_daemon import Running

_HERE = Path(__file__).resolve().parent
_TOOL = _HERE.parents[1] / "tools" / "kafka_local.py"


def _load_kafka_local() -> ModuleType:
    # tools/ is not a package; load the script by path (and register it, so that
    # `import kafka_local` elsewhere in the session gets the same module object).
    if "kafka_local" in sys.modules:
        return sys.modules["kafka_local"]
    spec = importlib.util.spec_from_file_location("kafka_local", _TOOL)
    assert spec is not None and spec.loader is not None, _TOOL
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kafka_local"] = mod
    spec.loader.exec_module(mod)
    return mod


kafka_local = _load_kafka_local()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test in this directory needs the broker: tag it so `-m "not kafka"` works.
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[kafka_local.LocalKafka]:
    """The session's LocalKafka (use .restart()/.kill()/.start() in fault tests).

    A test that stops or kills the broker must leave it running again when done.
    """
    broker = kafka_local.LocalKafka()
    try:
        broker.start()
    except kafka_local.KafkaLocalError as exc:
        broker.stop()
        if not broker.log_dir.exists():  # failed before the JVM ran: nothing to keep
            broker.close()
        # Broker logs stay in broker.dir for the post-mortem. pytest.fail, never skip,
        # in CI and locally alike.
        where = "CI" if os.environ.get("CI") else "local run"
        pytest.fail(f"[{where}] local Kafka broker failed to start:\n{exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: kafka_local.LocalKafka) -> str:
    """The session broker's bootstrap string, "127.0.0.1:PORT"."""
    return str(kafka_broker.bootstrap)


# ------------------------------------------------------------ running a daemon in a test
# The helpers import the test modules they build on when called: those read kafka_local
# from sys.modules, registered above only once this module has loaded.

REPO = _HERE.parents[1]


def own_broker(what: str, **options: Any) -> Iterator[kafka_local.LocalKafka]:
    """A broker of a module's own (LocalKafka ``options``: listeners, users), closed when
    done; one that cannot start fails the test, naming ``what`` it was to be."""
    broker = kafka_local.LocalKafka(**options)
    try:
        broker.start()
    except kafka_local.KafkaLocalError as exc:
        broker.close()
        pytest.fail(f"{what} broker failed to start:\n{exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.close()


async def run_until_caught_up(
    config_path: Path,
    config: Config,
    *,
    env: dict[str, str],
    kwargs: dict[str, Any],
    timeout_s: float,
) -> tuple[int, str]:
    """Run ``clearing run`` on ``config_path`` (a subprocess with ``env``, its output in
    daemon.log beside the config) until the ledger's consumer group has committed every
    input produced so far, then stop it with SIGTERM: its exit code and its log. Fails
    with the log's tail if it exits first or is not caught up within ``timeout_s``."""
    from tests.integration.test_chaos import chaos

    log_path = config_path.parent / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clearing.cli", "run", "--config", str(config_path)],
            cwd=REPO, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    if await chaos.group_caught_up(config, kwargs=kwargs):
                        break
                except Exception:  # coordinator still loading
                    pass
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, log_path.read_text()


@dataclass
class Serving:
    """An in-process daemon on a fresh ledger (its topics created), ready, its HTTP
    server on ``port``."""

    config_path: Path
    config: Config
    run: Running
    port: int

    async def stop_at(self, last_seq: int) -> list[Record]:
        """Once ``last_seq`` is committed: stop the daemon (exit 0); the journal."""
        from tests.integration.test_daemon import journal_until

        await self.run.wait_seq(last_seq)
        assert await self.run.stop() == EXIT_OK
        return await journal_until(self.config, last_seq)


async def serve(tmp_path: Path, bootstrap: str, name: str) -> Serving:
    """A new ledger ``name`` and a daemon running it in this process (see Serving)."""
    from tests.integration.test_daemon import Running, write_config

    config_path = write_config(tmp_path, bootstrap, name, http={"listen": "127.0.0.1:0"})
    config = load_config(str(config_path), environ={})
    assert not (await create_topics(config)).problems
    run = Running(config)
    await run.wait_ready()
    port = run.daemon.http_port
    assert port is not None
    return Serving(config_path, config, run, port)


async def feed_slowly(config: Config, items: list[tuple[str, bytes, bytes | None]]) -> None:
    """Produce ``items`` 15 at a time with a short pause between: reads made meanwhile
    meet many committed seqs."""
    from tests.integration.test_daemon import produce

    for start in range(0, len(items), 15):
        await produce(config, items[start : start + 15])
        await asyncio.sleep(0.02)


@dataclass
class DaemonProcess:
    """``clearing run`` as a subprocess on a fresh ledger (its topics created), ready,
    its HTTP server (metrics) on ``port``."""

    config: Config
    port: int
    process: subprocess.Popen[bytes]


@pytest.fixture
def run_daemon(
    kafka_bootstrap: str, tmp_path: Path
) -> Iterator[Callable[..., Awaitable[DaemonProcess]]]:
    """``await run_daemon(name, **sections)``: a new ledger ``name`` (``sections`` added
    to its config) and a daemon running it (see DaemonProcess), stopped at teardown."""
    from tests.integration.test_daemon import wait_http, write_config
    from tests.ops.test_prometheus_real import _free_port

    started: list[subprocess.Popen[bytes]] = []

    async def start(name: str, **sections: Any) -> DaemonProcess:
        port = _free_port()
        config_path = write_config(
            tmp_path, kafka_bootstrap, name, http={"listen": f"127.0.0.1:{port}"}, **sections
        )
        config = load_config(str(config_path), environ={})
        assert not (await create_topics(config)).problems
        process = subprocess.Popen(
            [sys.executable, "-m", "clearing.cli", "run", "--config", str(config_path)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        started.append(process)
        await wait_http(f"http://127.0.0.1:{port}/readyz", 200, process)
        return DaemonProcess(config, port, process)

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


async def commit(config: Config, items: list[tuple[str, bytes, bytes | None]]) -> list[Record]:
    """Produce ``items``; the journal once it holds every one of them the daemon sequences."""
    from tests.integration.test_daemon import journal_until, produce, sequenced_count

    await produce(config, items)
    return await journal_until(config, sequenced_count(items))


async def start_prometheus(
    tmp_path: Path, target_port: int
) -> tuple[asyncio.subprocess.Process, str]:
    """A Prometheus scraping 127.0.0.1:``target_port`` every second (its log in
    prometheus.log): the process and its base URL."""
    from tests.ops.test_prometheus_real import _free_port
    from tests.ops.tools import require_binary

    prom_port = _free_port()
    prom_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "clearing", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(prom_config))
    with (tmp_path / "prometheus.log").open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            require_binary("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    return process, f"http://127.0.0.1:{prom_port}"
