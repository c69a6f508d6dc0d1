"""Fixtures for tests against a real single-node Apache Kafka (KRaft) broker.

The broker comes from tools/kafka_local.py (jars fetched once with mvn and cached).
A broker that cannot start is a test ERROR, never a skip: CI must not go green
without having talked to Kafka. Deselect with `-m "not kafka"` if you must.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

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
