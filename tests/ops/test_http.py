"""The ops HTTP server over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from clearing.ops.http import OpsServer
from clearing.ops.metrics import Metrics
from tests.ops.http_client import request
from tests.ops.scenario import run_scenario


# The project runs async fixtures on the session loop by default; this one must share the
# test's own loop, since the server it starts serves only while that loop runs.
@pytest_asyncio.fixture(loop_scope="function")
async def server() -> AsyncIterator[OpsServer]:
    metrics = Metrics()
    run_scenario(metrics)
    async with OpsServer(metrics, port=0) as ops:
        yield ops


async def test_binds_loopback_by_default(server: OpsServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


async def test_metrics_text_format(server: OpsServer) -> None:
    response = await request(server.port, "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(response.headers["content-length"]) == len(response.body)
    text = response.body.decode()
    assert "# TYPE clearing_insurance_fund_equity_quote gauge" in text
    assert "clearing_insurance_fund_equity_quote 80.0" in text
    assert 'clearing_open_interest_notional_quote{market="BTC-PERP"} 750.0' in text
    assert "clearing_invariant_violation 0.0" in text


async def test_metrics_openmetrics_when_asked(server: OpsServer) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = await request(server.port, "/metrics", headers={"Accept": accept})
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.body.endswith(b"# EOF\n")


async def test_healthz_and_stall_detection() -> None:
    async with OpsServer(Metrics(), port=0, stall_after_s=0.05) as ops:
        assert (await request(ops.port, "/healthz")).status == 200
        await asyncio.sleep(0.1)
        stalled = await request(ops.port, "/healthz")
        assert stalled.status == 503
        assert stalled.body.startswith(b"main loop stalled")
        ops.beat()
        assert (await request(ops.port, "/healthz")).body == b"ok\n"


async def test_readyz_follows_set_ready(server: OpsServer) -> None:
    server.metrics.set_ready(False, "replaying journal: seq 10 of 20")
    response = await request(server.port, "/readyz")
    assert (response.status, response.body) == (
        503,
        b"not ready: replaying journal: seq 10 of 20\n",
    )
    server.metrics.set_ready(True)
    response = await request(server.port, "/readyz?verbose=1")
    assert (response.status, response.body) == (200, b"ready\n")


async def test_head_returns_headers_only(server: OpsServer) -> None:
    response = await request(server.port, "/metrics", method="HEAD")
    assert response.status == 200
    assert int(response.headers["content-length"]) > 1000
    assert response.body == b""


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"hello\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    ],
)
async def test_bad_requests(server: OpsServer, raw: bytes, status: int) -> None:
    response = await request(server.port, "", raw=raw)
    assert response.status == status
    if status == 405:
        assert response.headers["allow"] == "GET, HEAD"


async def test_stop_ends_idle_connections_and_closes_the_port() -> None:
    ops = OpsServer(Metrics(), port=0)
    await ops.start()
    port = ops.port
    # A client that connects and never sends a request must not hold up shutdown.
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(ops.stop(), 2.0)
    await ops.stop()  # idempotent
    writer.close()
    with pytest.raises(OSError):
        await request(port, "/healthz")


async def test_start_twice_is_an_error() -> None:
    async with OpsServer(Metrics(), port=0) as ops:
        with pytest.raises(RuntimeError):
            await ops.start()
