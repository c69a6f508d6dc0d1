"""The daemon over TLS: a broker with SSL and SASL_SSL listeners whose certificate is
signed by a CA the test generates (tools/kafka_local.py, ``tls=True``).

The daemon runs a stream end to end over each (checked against ``clearing replay`` by
kafka_chaos.verify), and a CA that did not sign the broker's certificate fails at start
with exit 2 and one line, without waiting out kafka.connect_timeout_s.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.helpers import create_ssl_context

from clearing.kafka import EXIT_CONFIG, EXIT_UNREACHABLE
from clearing.kafka._connect import ConnectError, wait_for_cluster
from clearing.ops.config import Config, KafkaConfig, KafkaSecurity, load_config
from tests.integration.conftest import own_broker, run_until_caught_up
from tests.integration.test_chaos import chaos  # tools/kafka_chaos.py, loaded by path

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
kafka_local = sys.modules["kafka_local"]  # loaded by conftest.py

USER = "clearing"
PASSWORD = "tls-Pa55-do-not-log"


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[Any]:
    yield from own_broker("TLS", tls=True, sasl_plain_users={USER: PASSWORD})


def _security(protocol: str, cafile: Path) -> dict[str, str]:
    security = {"protocol": protocol, "ssl_cafile": str(cafile)}
    if protocol == "SASL_SSL":
        security |= {"sasl_mechanism": "PLAIN", "sasl_username": USER}
    return security


def _client_kwargs(protocol: str, bootstrap: str, cafile: Path) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": protocol,
        "ssl_context": create_ssl_context(cafile=str(cafile)),
    }
    if protocol == "SASL_SSL":
        kwargs |= {"sasl_mechanism": "PLAIN", "sasl_plain_username": USER,
                   "sasl_plain_password": PASSWORD}  # fmt: skip
    return kwargs


def _env() -> dict[str, str]:
    return {**os.environ, "CLEARING_LOG_JSON": "true",
            "CLEARING_KAFKA_SECURITY_SASL_PASSWORD": PASSWORD}  # fmt: skip


def _cli(*args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clearing.cli", *args],
        capture_output=True, text=True, cwd=REPO, env=_env(), check=False, timeout=timeout_s,
    )  # fmt: skip


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
async def test_daemon_runs_end_to_end_over_tls(
    tls_broker: Any, tmp_path: Path, protocol: str
) -> None:
    bootstrap = tls_broker.ssl_bootstrap if protocol == "SSL" else tls_broker.sasl_ssl_bootstrap
    security = _security(protocol, tls_broker.ca_file)
    path = chaos.write_config(tmp_path, bootstrap, protocol.lower(),
                              **{"kafka.security": security})  # fmt: skip
    config = load_config(str(path), environ=_env())
    kwargs = _client_kwargs(protocol, bootstrap, tls_broker.ca_file)
    topics = await asyncio.to_thread(_cli, "topics", "create", "--config", str(path))
    assert topics.returncode == 0, topics.stdout + topics.stderr
    acked = await chaos.produce(config, chaos.input_stream(800, seed=33, accounts=40),
                                kwargs=kwargs)  # fmt: skip
    code, text = await run_until_caught_up(path, config, env=_env(), kwargs=kwargs, timeout_s=90)
    assert code == 0, text[-3000:]
    assert PASSWORD not in text
    counts = await chaos.verify(config, tmp_path, acked, kwargs=kwargs)
    assert counts["journal"] == counts["inputs"] == 800


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
async def test_a_wrong_ca_fails_at_start_with_one_line_and_exit_2(
    tls_broker: Any, tmp_path: Path, protocol: str
) -> None:
    other_ca = await asyncio.to_thread(kafka_local.make_ca, tmp_path / "other", "other-ca")
    bootstrap = tls_broker.ssl_bootstrap if protocol == "SSL" else tls_broker.sasl_ssl_bootstrap
    security = _security(protocol, other_ca)
    path = chaos.write_config(tmp_path, bootstrap, "wrong-ca", **{"kafka.security": security})
    for command in (("run",), ("topics", "create")):
        started = time.monotonic()
        proc = await asyncio.to_thread(_cli, *command, "--config", str(path))
        elapsed_s = time.monotonic() - started
        out = proc.stdout + proc.stderr
        assert proc.returncode == EXIT_CONFIG, out[-3000:]
        assert "Traceback" not in out and "unexpected failure" not in out, out[-3000:]
        # Not waited out: a wrong CA is no outage (connect_timeout_s is 30 s by default).
        assert elapsed_s < 25, elapsed_s
        errors = [
            line for line in out.splitlines()
            if '"level":"error"' in line or '"level":"critical"' in line or "error:" in line
        ]  # fmt: skip
        assert len(errors) == 1, out[-3000:]
        assert bootstrap in errors[0] and str(other_ca) in errors[0], errors[0]
        assert "does not trust" in errors[0] and "certificate" in errors[0], errors[0]


async def test_a_protocol_that_does_not_match_the_listener_is_named(tls_broker: Any) -> None:
    """PLAINTEXT against the TLS listener, and SSL against the plaintext one: exit 6 with
    what the listener did (a broker is there, so it may be a listener being switched)."""
    cases = (
        ("PLAINTEXT", tls_broker.ssl_bootstrap, "answered in TLS (first bytes 15 03"),
        ("SSL", tls_broker.bootstrap, "failed the TLS handshake ("),
    )
    for protocol, server, expected in cases:
        security = KafkaSecurity(protocol=protocol, ssl_cafile=str(tls_broker.ca_file))
        kafka = KafkaConfig(bootstrap_servers=[server], connect_timeout_s=1.0, security=security)
        with pytest.raises(ConnectError) as caught:
            await wait_for_cluster(Config(ledger_id="mismatch", kafka=kafka))
        assert caught.value.code == EXIT_UNREACHABLE
        assert f"{server} {expected}" in caught.value.message, caught.value.message
