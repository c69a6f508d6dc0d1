"""The daemon against a broker listener that requires SASL/PLAIN.

A second LocalKafka (module scope) gets a SASL_PLAINTEXT listener with one user; the
daemon authenticates with the username from its config file and the password from the
environment (CLEARING_KAFKA_SECURITY_SASL_PASSWORD), runs a stream end to end (checked
against ``clearing replay``), and never writes the password to its logs. A wrong
password fails at start with exit 2 (bad configuration) and a one-line message.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearing.kafka import EXIT_CONFIG
from clearing.ops.config import load_config
from tests.integration.conftest import own_broker, run_until_caught_up
from tests.integration.test_chaos import chaos  # tools/kafka_chaos.py, loaded by path

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
kafka_local = sys.modules["kafka_local"]  # loaded by conftest.py

USER = "clearing"
PASSWORD = "s3cret-Pa55-do-not-log"


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[Any]:
    yield from own_broker("SASL", sasl_plain_users={USER: PASSWORD, "admin": "admin-pw"})


def sasl_kwargs(bootstrap: str, password: str = PASSWORD) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": USER,
        "sasl_plain_password": password,
    }


def daemon_env(password: str) -> dict[str, str]:
    return {**os.environ, "CLEARING_LOG_JSON": "true",
            "CLEARING_KAFKA_SECURITY_SASL_PASSWORD": password}  # fmt: skip


def sasl_config(tmp_path: Path, bootstrap: str) -> Path:
    security = {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": USER}
    return chaos.write_config(tmp_path, bootstrap, "sasl", **{"kafka.security": security})


async def test_daemon_authenticates_with_sasl_plain_and_never_logs_the_password(
    sasl_broker: Any, tmp_path: Path
) -> None:
    bootstrap = sasl_broker.sasl_bootstrap
    path = sasl_config(tmp_path, bootstrap)
    assert PASSWORD not in path.read_text()
    env = daemon_env(PASSWORD)
    config = load_config(str(path), environ=env)
    kwargs = sasl_kwargs(bootstrap)
    topics = subprocess.run(
        [sys.executable, "-m", "clearing.cli", "topics", "create", "--config", str(path)],
        capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert topics.returncode == 0, topics.stdout + topics.stderr
    assert PASSWORD not in topics.stdout + topics.stderr
    acked = await chaos.produce(config, chaos.input_stream(1500, seed=21, accounts=50),
                                kwargs=kwargs)  # fmt: skip
    code, text = await run_until_caught_up(path, config, env=env, kwargs=kwargs, timeout_s=60)
    assert code == 0, text[-3000:]
    assert "\"sasl_username\": 'clearing'" in text or "'sasl_username': 'clearing'" in text
    assert PASSWORD not in text
    counts = await chaos.verify(config, tmp_path, acked, kwargs=kwargs)
    assert counts["journal"] == counts["inputs"] == 1500
    # The plaintext listener of the same broker still works (nothing else changed).
    assert kafka_local.probe("127.0.0.1", sasl_broker.port) >= 1


async def test_wrong_sasl_password_fails_at_start_with_a_clear_message(
    sasl_broker: Any, tmp_path: Path
) -> None:
    wrong = "wrong-Pa55-also-secret"
    path = sasl_config(tmp_path, sasl_broker.sasl_bootstrap)
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "clearing.cli", "run", "--config", str(path)],
        capture_output=True, text=True, cwd=REPO, env=daemon_env(wrong), check=False,
        timeout=90,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    print(f"\nwrong password: exit {proc.returncode}; last lines:\n{out[-1200:]}")
    # Exit 2 (bad configuration), not 1: a supervisor must not restart it forever.
    assert proc.returncode == EXIT_CONFIG, out[-3000:]
    assert "Traceback" not in out and "unexpected failure" not in out, out[-3000:]
    lines = [line for line in out.splitlines() if '"logger":"clearing.kafka"' in line]
    assert "authentication with the Kafka cluster" in lines[-1], out[-3000:]
    # What failed, and which settings to check.
    assert "SaslAuthenticationFailed" in lines[-1], lines[-1]
    for setting in ("sasl_mechanism (PLAIN)", "sasl_username ('clearing')", "sasl_password"):
        assert setting in lines[-1], lines[-1]
    assert wrong not in out and PASSWORD not in out
