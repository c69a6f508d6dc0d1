"""The ops HTTP server against hostile or careless clients: pipelined floods, clients
that stop reading, requests with a body, and more connections than the cap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from clearing.ops import http
from clearing.ops.http import OpsServer
from clearing.ops.metrics import Metrics
from clearing.ops.read_api import ReadApi
from clearing.ops.reads import CommittedReads
from tests.ops.scenario import run_scenario
from tests.ops.test_read_api import ledger

_KEEP_ALIVE = b"GET %s HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"


@pytest_asyncio.fixture(loop_scope="function")
async def server() -> AsyncIterator[OpsServer]:
    metrics = Metrics()
    run_scenario(metrics)
    async with OpsServer(metrics, port=0) as ops:
        yield ops


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response off the wire: (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return int(head.split(b" ")[1]), await reader.readexactly(length)


async def _read_all(reader: asyncio.StreamReader, count: int) -> list[int]:
    return [(await _read_response(reader))[0] for _ in range(count)]


async def _until_no_connections(server: OpsServer, within_s: float) -> None:
    """Wait (polling every 0.1 s, at most ``within_s``) until ``server`` holds no
    connection, then assert it: the aborted connections' buffers are freed."""
    for _ in range(round(within_s / 0.1)):
        await asyncio.sleep(0.1)
        if not server._connections:
            break
    assert not server._connections


def _serves_per_turn(ops: OpsServer, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the requests ``ops`` parses in each loop turn; returns the largest so far."""
    loop = asyncio.get_running_loop()
    serve = ops.serve
    counts = [0]
    largest = [0]

    def counting_serve(*args: Any) -> Any:
        counts[0] += 1
        largest[0] = max(largest[0], counts[0])
        return serve(*args)

    def turn() -> None:
        counts[0] = 0
        loop.call_soon(turn)

    monkeypatch.setattr(ops, "serve", counting_serve)
    loop.call_soon(turn)
    return lambda: largest[0]


async def test_a_pipelined_flood_is_parsed_a_bounded_chunk_per_loop_turn(
    server: OpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    largest = _serves_per_turn(server, monkeypatch)
    count = 3 * http._MAX_PIPELINED + 17
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_KEEP_ALIVE % b"/healthz" * count)  # one write, one socket read
        statuses = await asyncio.wait_for(_read_all(reader, count), 30)
    finally:
        writer.close()
    assert statuses == [200] * count
    assert 0 < largest() <= http._MAX_PIPELINED


async def test_one_client_queues_at_most_max_pipelined_reads() -> None:
    engine = ledger("python")
    reads = CommittedReads()
    metrics = Metrics()
    metrics.set_ready(True, "")
    api = ReadApi(reads, lambda: engine.seq)
    count = 4 * http._MAX_PIPELINED
    async with OpsServer(metrics, port=0, read_api=api) as ops:
        reader, writer = await asyncio.open_connection("127.0.0.1", ops.port)
        try:
            writer.write(_KEEP_ALIVE % b"/v1/system" * count)
            await asyncio.sleep(0.3)  # no batch boundary meanwhile: nothing is answered
            assert len(reads._queue) == http._MAX_PIPELINED
            statuses: list[int] = []
            while len(statuses) < count:  # the loop's batch boundaries
                reads.answer(engine)
                assert len(reads._queue) <= http._MAX_PIPELINED
                with contextlib.suppress(TimeoutError):
                    while True:
                        statuses.append((await asyncio.wait_for(_read_response(reader), 0.05))[0])
        finally:
            writer.close()
    assert statuses == [200] * count


async def test_a_metrics_burst_renders_the_registry_once(
    server: OpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = []
    choose = http.choose_encoder

    def counting_choose(accept: str) -> Any:
        encoder, content_type = choose(accept)

        def counting_encoder(registry: Any) -> bytes:
            rendered.append(content_type)
            return encoder(registry)

        return counting_encoder, content_type

    monkeypatch.setattr(http, "choose_encoder", counting_choose)
    count = 2 * http._MAX_PIPELINED
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_KEEP_ALIVE % b"/metrics" * count)
        bodies = {(await _read_response(reader))[1] for _ in range(count)}
    finally:
        writer.close()
    assert len(rendered) == 1 and len(bodies) == 1
    assert b"clearing_insurance_fund_equity_quote 80.0" in bodies.pop()
    monkeypatch.setattr(http, "_METRICS_CACHE_S", 0.0)  # stale: rendered anew
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_KEEP_ALIVE % b"/metrics" * 2)
        await _read_all(reader, 2)
    finally:
        writer.close()
    assert len(rendered) == 3


async def test_a_client_that_stops_reading_pauses_then_resumes(server: OpsServer) -> None:
    count = 2_000  # megabytes of /metrics: more than the socket buffers take
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_KEEP_ALIVE % b"/metrics" * count)
        await asyncio.sleep(0.5)
        [connection] = server._connections
        assert connection._writing_paused_at_s is not None
        assert connection._reading_paused and connection._backlog
        assert len(connection._pending) <= http._MAX_PIPELINED
        served_while_paused = connection._requests
        await asyncio.sleep(0.2)
        assert connection._requests == served_while_paused  # nothing parsed meanwhile
        statuses = await asyncio.wait_for(_read_all(reader, count), 60)
    finally:
        writer.close()
    assert statuses == [200] * count


async def test_a_client_that_never_reads_is_dropped(
    server: OpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "_READ_TIMEOUT_S", 0.3)
    monkeypatch.setattr(http, "_WRITE_TIMEOUT_S", 0.6)
    monkeypatch.setattr(http, "_SWEEP_INTERVAL_S", 0.05)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_KEEP_ALIVE % b"/metrics" * 5_000)
        await asyncio.sleep(0.2)
        assert server._connections  # held while within the timeouts
        await _until_no_connections(server, within_s=6)
    finally:
        writer.close()


async def test_a_closing_connection_whose_answer_is_never_read_is_aborted(
    server: OpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not keep-alive: the server closes after its answers, and close() would wait for
    # the client to take them forever.
    monkeypatch.setattr(http, "_WRITE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(http, "_SWEEP_INTERVAL_S", 0.05)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_KEEP_ALIVE % b"/metrics" * 1_000 + b"GET /metrics HTTP/1.1\r\n\r\n")
        await _until_no_connections(server, within_s=10)
    finally:
        writer.close()


async def test_requests_sent_before_the_clients_eof_are_all_answered(server: OpsServer) -> None:
    count = 2 * http._MAX_PIPELINED + 3
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_KEEP_ALIVE % b"/healthz" * count)
        writer.write_eof()
        statuses = await asyncio.wait_for(_read_all(reader, count), 30)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed
    finally:
        writer.close()
    assert statuses == [200] * count


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: %d\r\n", b"Transfer-Encoding: chunked\r\n", b"content-length : %d\r\n"],
)
async def test_a_request_with_a_body_is_refused_and_closed(
    server: OpsServer, framing: bytes
) -> None:
    smuggled = b"GET /metrics HTTP/1.1\r\n\r\n"
    if b"%d" in framing:
        framing = framing % len(smuggled)
    head = b"GET /healthz HTTP/1.1\r\nConnection: keep-alive\r\n" + framing + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head + smuggled)
        status, body = await _read_response(reader)
        rest = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert (status, rest) == (400, b"")  # one answer, then closed: the body never parsed
    assert b"takes no body" in body


async def test_content_length_zero_is_fine(server: OpsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert (await _read_response(reader))[0] == 200
    finally:
        writer.close()


async def test_connections_over_the_cap_get_503_and_are_closed() -> None:
    async with OpsServer(Metrics(), port=0, max_connections=2) as ops:
        held = [await asyncio.open_connection("127.0.0.1", ops.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", ops.port)
        status, body = await asyncio.wait_for(_read_response(reader), 5)
        assert (status, await asyncio.wait_for(reader.read(), 5)) == (503, b"")
        assert b"too many open connections (the limit is 2)" in body
        writer.close()
        assert len(ops._connections) == 2
        held.pop()[1].close()  # one leaves: a new client gets in
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", ops.port)
        writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (await asyncio.wait_for(_read_response(reader), 5))[0] == 200
        writer.close()
        for _, held_writer in held:
            held_writer.close()


async def test_an_idle_connection_with_answers_unread_is_aborted_not_closed(
    server: OpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every request answered, the answers stuck in the send buffer: close() would wait
    # on them forever, so the idle timeout aborts (well before the write timeout).
    monkeypatch.setattr(http, "_READ_TIMEOUT_S", 0.3)
    monkeypatch.setattr(http, "_WRITE_TIMEOUT_S", 60.0)
    monkeypatch.setattr(http, "_SWEEP_INTERVAL_S", 0.05)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_KEEP_ALIVE % b"/metrics" * http._MAX_PIPELINED)
        await asyncio.sleep(0.1)
        [connection] = server._connections
        assert connection._transport is not None
        assert connection._transport.get_write_buffer_size() > 0 and not connection._pending
        await _until_no_connections(server, within_s=5)
    finally:
        writer.close()
