"""Network mistakes at start: one line, a distinct exit code, no traceback, a bounded wait.

Each case is a real loopback socket (or a name that cannot resolve): a closed port, a
listener that accepts and never answers, one that answers garbage, one that answers in
TLS. ``clearing run`` runs as a subprocess, as systemd would start it; the bound is
checked in-process, where start-up time does not blur it.
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clearing.kafka import EXIT_CONFIG, EXIT_UNREACHABLE
from clearing.kafka._connect import ConnectError, wait_for_cluster
from clearing.ops.config import Config, KafkaConfig, load_config

REPO = Path(__file__).resolve().parents[2]
BOUND_S = 1.5
# Slack for the last probe's minimum timeout and the event loop under a loaded machine.
SLACK_S = 1.0


class _Handler(socketserver.BaseRequestHandler):
    answer: Callable[[socket.socket], None]

    def handle(self) -> None:
        type(self).answer(self.request)


def _silent(sock: socket.socket) -> None:
    sock.recv(1024)
    time.sleep(BOUND_S + 5)  # accepts, reads the request, never answers


def _http(sock: socket.socket) -> None:
    sock.recv(1024)
    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def _tls_alert(sock: socket.socket) -> None:
    sock.recv(1024)
    sock.sendall(bytes.fromhex("15 03 03 00 02 02 50"))  # what a TLS server says to plaintext


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # bound, never listening: connecting is refused


async def _api_versions_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal Kafka broker: answers ApiVersions v0 (error 0, an empty list)."""
    request = await reader.read(1024)
    correlation = request[8:12]  # after size, api key and version
    body = correlation + bytes(2) + bytes(4)
    writer.write(len(body).to_bytes(4, "big") + body)
    await writer.drain()
    writer.close()


@pytest.fixture
def listener(request: pytest.FixtureRequest) -> Iterator[str]:
    """A loopback server behaving as ``request.param`` says; yields "127.0.0.1:PORT"."""
    handler = type("Handler", (_Handler,), {"answer": staticmethod(request.param)})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _config_file(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "clearing.toml"
    path.write_text(
        f'ledger_id = "connect"\n[kafka]\nbootstrap_servers = ["{server}"]\n'
        f"connect_timeout_s = {BOUND_S}\nrequest_timeout_ms = 10000\n"
        f'[http]\nlisten = ""\n'
    )
    return path


def _check(tmp_path: Path, server: str, expected: str) -> None:
    """``clearing run`` exits EXIT_UNREACHABLE with one error line naming the server and
    ``expected``; ``wait_for_cluster`` gives up within the bound."""
    path = _config_file(tmp_path, server)
    proc = subprocess.run(
        [sys.executable, "-m", "clearing.cli", "run", "--config", str(path)],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=60,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_UNREACHABLE, out
    assert "Traceback" not in out and "unexpected failure" not in out, out
    errors = [line for line in out.splitlines() if " ERROR " in line or " CRITICAL " in line]
    assert len(errors) == 1, out
    assert server in errors[0] and expected in errors[0], errors[0]
    assert "kafka.bootstrap_servers" in errors[0] and "ApiVersions" in errors[0], errors[0]
    config = load_config(str(path))
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        asyncio.run(wait_for_cluster(config))
    elapsed_s = time.monotonic() - started
    assert caught.value.code == EXIT_UNREACHABLE
    assert BOUND_S <= elapsed_s < BOUND_S + SLACK_S, elapsed_s


def test_closed_port(tmp_path: Path) -> None:
    _check(tmp_path, f"127.0.0.1:{_closed_port()}", "refused the connection")


def test_unresolvable_host(tmp_path: Path) -> None:
    _check(tmp_path, "no-such-host.invalid:9092", "does not resolve")


@pytest.mark.parametrize("listener", [_silent], indirect=True)
def test_listener_that_never_answers(tmp_path: Path, listener: str) -> None:
    _check(tmp_path, listener, "accepted the connection but sent no Kafka answer")


@pytest.mark.parametrize("listener", [_http], indirect=True)
def test_listener_that_answers_garbage(tmp_path: Path, listener: str) -> None:
    _check(tmp_path, listener, "not in the Kafka protocol (first bytes 48 54 54 50")


@pytest.mark.parametrize("listener", [_tls_alert], indirect=True)
def test_tls_listener_reached_in_plaintext_says_so(tmp_path: Path, listener: str) -> None:
    _check(tmp_path, listener, "answered in TLS (first bytes 15 03 03 00 02 02 50")


async def test_a_broker_that_comes_up_within_the_bound_is_waited_for() -> None:
    """A broker restarting (refusing, then answering ApiVersions) is not an error."""
    port = _closed_port()
    kafka = KafkaConfig(bootstrap_servers=[f"127.0.0.1:{port}"], connect_timeout_s=10.0)
    config = Config(ledger_id="connect", kafka=kafka)

    async def start_later() -> asyncio.Server:
        await asyncio.sleep(0.8)
        return await asyncio.start_server(_api_versions_answer, "127.0.0.1", port)

    later = asyncio.create_task(start_later())
    started = time.monotonic()
    await wait_for_cluster(config)
    assert 0.8 <= time.monotonic() - started < 5.0
    server = await later
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("listener", [_silent], indirect=True)
async def test_a_silent_server_does_not_hold_up_one_that_answers(listener: str) -> None:
    """Bootstrap servers are probed together: the answering one ends the wait at once."""

    server = await asyncio.start_server(_api_versions_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    kafka = KafkaConfig(bootstrap_servers=[listener, f"127.0.0.1:{port}"], connect_timeout_s=20.0)
    started = time.monotonic()
    try:
        await wait_for_cluster(Config(ledger_id="connect", kafka=kafka))
    finally:
        server.close()
        await server.wait_closed()
    assert time.monotonic() - started < 2.0


def test_a_ca_file_that_is_no_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    """Exit 2 at once, not a wait for a broker (the configuration checks the file exists)."""
    path = _config_file(tmp_path, f"127.0.0.1:{_closed_port()}")
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    path.write_text(
        path.read_text() + f'[kafka.security]\nprotocol = "SSL"\nssl_cafile = "{bad}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "clearing.cli", "run", "--config", str(path)],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=60,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_CONFIG, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if " ERROR " in line or " CRITICAL " in line]
    assert len(errors) == 1 and f"ssl_cafile ({bad})" in errors[0], out
    assert "kafka.security cannot be loaded" in errors[0], out
