"""The ops HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on one small server.

Built on ``asyncio.start_server`` (no web framework: three read-only routes do not need
one) and run on the daemon's own event loop, so a response at all proves the loop turns.

* ``/metrics``: the ``Metrics`` registry in the Prometheus text format (OpenMetrics when
  the scraper asks for it).
* ``/healthz``: liveness. 200 while the loop serves; 503 when the daemon reports
  heartbeats (``beat()``) and the last one is older than ``stall_after_s``, which
  catches a main task stuck on an await while the loop itself still runs.
* ``/readyz``: readiness. 200 only after ``metrics.set_ready(True)`` (recovery caught
  up); 503 with the reason as the body otherwise.
* ``/state-hash``: ``{"seq": N, "state_sha256": "...", "committed_seq": M}``, the hash
  of the ledger state as of committed seq N (see ``clearing.ops.state_hash``); 503
  until ready, 404 on a server without a ledger (``state_hash`` not given).
* ``/v1/...``: the read API (``clearing.ops.read_api``, docs/read-api.yaml): JSON views
  of the committed ledger; 503 until ready, 404 on a server without one.

Bound to 127.0.0.1 by default: the endpoint has no authentication except the read
API's optional bearer token, so exposing it is a deliberate configuration choice (a
container sets its address to 0.0.0.0); off loopback the read API answers only with a
token configured. Each connection serves one request and closes, unless the request
says ``Connection: keep-alive`` (a read-API poller): then it serves the next one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Final

from prometheus_client.exposition import choose_encoder

from clearing.ops.metrics import Metrics
from clearing.ops.read_api import ReadApi, error_body
from clearing.ops.reads import ReadAborted
from clearing.ops.state_hash import StateHash

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "OpsServer"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 9464
# A scraper sends a few hundred bytes of headers; anything bigger is not one of ours.
_MAX_HEADER_BYTES: Final = 16 * 1024
# A client that has not sent its headers by then is gone or hostile (slowloris).
_READ_TIMEOUT_S: Final = 5.0
_WRITE_TIMEOUT_S: Final = 10.0
# A keep-alive connection is closed after this many requests (or when idle for
# _READ_TIMEOUT_S), so no client holds one forever.
_MAX_REQUESTS_PER_CONNECTION: Final = 10_000
_TEXT: Final = "text/plain; charset=utf-8"
_JSON: Final = "application/json"
# A state-hash request waits for the daemon's loop to reach a batch boundary; a commit
# takes well under this, so running out means the loop is stuck or stopping.
_STATE_HASH_WAIT_S: Final = 30.0


class OpsServer:
    """Serves one ``Metrics`` registry plus health and readiness over HTTP/1.1.

    Usage from the daemon::

        server = OpsServer(metrics, host, port, stall_after_s=30.0)
        await server.start()          # before recovery: /readyz answers 503 meanwhile
        ...                           # metrics.set_ready(True) once caught up
        await server.stop()           # on shutdown

    or ``async with OpsServer(...) as server:``. ``port=0`` picks a free port, readable
    from ``server.port`` after ``start()``.
    """

    def __init__(
        self,
        metrics: Metrics,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        stall_after_s: float | None = None,
        state_hash: Callable[[], Awaitable[StateHash]] | None = None,
        read_api: ReadApi | None = None,
    ) -> None:
        self.metrics = metrics
        self._state_hash = state_hash
        self._read_api = read_api
        self.host = host
        self._requested_port = port
        self._stall_after_s = stall_after_s
        self._last_beat = time.monotonic()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with ``port=0``)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def beat(self) -> None:
        """Heartbeat from the daemon's main loop; only matters with ``stall_after_s``."""
        self._last_beat = time.monotonic()

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("OpsServer already started")
        self._last_beat = time.monotonic()
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self._requested_port, limit=_MAX_HEADER_BYTES
        )

    async def stop(self) -> None:
        """Stop listening and end the connections in flight. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- request handling ----------------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            # Keep-alive only when asked for: a poller of the read API saves a connection
            # per request (most of a request's cost); probes and scrapers are unchanged.
            for _ in range(_MAX_REQUESTS_PER_CONNECTION):
                if not await self._serve_one(reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or stalled: nothing to answer
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; True if the client asked to keep the connection open."""
        try:
            # asyncio.timeout, not wait_for: no task per request (the read API's rate).
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await _respond(writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, _TEXT, b"")
            return False
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await _respond(writer, HTTPStatus.BAD_REQUEST, _TEXT, b"bad request line\n")
            return False
        method, target, _version = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        path, _, query = target.partition("?")
        if method not in ("GET", "HEAD"):
            await _respond(
                writer,
                HTTPStatus.METHOD_NOT_ALLOWED,
                _TEXT,
                b"only GET and HEAD\n",
                extra_headers={"Allow": "GET, HEAD"},
            )
            return False
        if path == "/state-hash":
            status, content_type, body = await self._state_hash_route()
        elif path.startswith("/v1/"):
            content_type = _JSON
            status, body = await self._read_api_route(path, query, headers)
        else:
            status, content_type, body = self._route(path, headers.get("accept", ""))
        keep_alive = headers.get("connection", "").lower() == "keep-alive"
        await _respond(
            writer, status, content_type, body, head_only=method == "HEAD", keep_alive=keep_alive
        )
        return keep_alive

    async def _state_hash_route(self) -> tuple[HTTPStatus, str, bytes]:
        if self._state_hash is None:
            return HTTPStatus.NOT_FOUND, _TEXT, b"no ledger state on this server\n"
        if not self.metrics.ready:
            reason = self.metrics.not_ready_reason.replace("\n", " ")[:200]
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, f"not ready: {reason}\n".encode()
        try:
            answer = await asyncio.wait_for(self._state_hash(), _STATE_HASH_WAIT_S)
        except TimeoutError:
            body = b"the daemon did not reach a batch boundary in time; retry\n"
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, body
        except ReadAborted:
            body = b"the batch before this read did not commit; retry\n"
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, body
        return HTTPStatus.OK, _JSON, json.dumps(answer.as_json()).encode() + b"\n"

    async def _read_api_route(
        self, path: str, query: str, headers: dict[str, str]
    ) -> tuple[HTTPStatus, bytes]:
        api = self._read_api
        if api is None:
            return HTTPStatus.NOT_FOUND, error_body("no ledger on this server")
        refused = api.authorize(headers.get("authorization", ""))
        if refused is not None:
            return refused
        if not self.metrics.ready:
            reason = self.metrics.not_ready_reason.replace("\n", " ")[:200]
            return HTTPStatus.SERVICE_UNAVAILABLE, error_body(f"not ready: {reason}")
        return await api.handle(path, query)

    def _route(self, path: str, accept: str) -> tuple[HTTPStatus, str, bytes]:
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept)
            return HTTPStatus.OK, content_type, encoder(self.metrics.registry)
        if path == "/healthz":
            stalled_s = time.monotonic() - self._last_beat
            if self._stall_after_s is not None and stalled_s > self._stall_after_s:
                body = f"main loop stalled: no heartbeat for {stalled_s:.1f} s\n"
                return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, body.encode()
            return HTTPStatus.OK, _TEXT, b"ok\n"
        if path == "/readyz":
            if self.metrics.ready:
                return HTTPStatus.OK, _TEXT, b"ready\n"
            reason = self.metrics.not_ready_reason.replace("\n", " ")[:200]
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, f"not ready: {reason}\n".encode()
        if path == "/":
            return (
                HTTPStatus.OK,
                _TEXT,
                b"clearing ops: /metrics /healthz /readyz /state-hash /v1/ (read API)\n",
            )
        return (
            HTTPStatus.NOT_FOUND,
            _TEXT,
            b"not found: try /metrics, /healthz, /readyz or /state-hash\n",
        )


async def _respond(
    writer: asyncio.StreamWriter,
    status: HTTPStatus,
    content_type: str,
    body: bytes,
    *,
    head_only: bool = False,
    extra_headers: dict[str, str] | None = None,
    keep_alive: bool = False,
) -> None:
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        "Connection": "keep-alive" if keep_alive else "close",
        **(extra_headers or {}),
    }
    head = f"HTTP/1.1 {status.value} {status.phrase}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    writer.write(head.encode("latin-1") + b"\r\n" + (b"" if head_only else body))
    async with asyncio.timeout(_WRITE_TIMEOUT_S):
        await writer.drain()
