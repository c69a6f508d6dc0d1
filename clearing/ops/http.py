"""The ops HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on one small server.

Built on ``asyncio``'s server with a protocol of its own (no web framework: a few
read-only routes do not need one) and run on the daemon's own event loop, so a
response at all proves the loop turns.

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
  of the committed ledger; 503 until readable (``metrics.readable``: an active once
  ready, a standby once it follows the journal: a read replica, while its ``/readyz``
  stays 503), 404 on a server without one. Every answer says who gave it
  (``Clearing-Role``; a standby adds ``Clearing-Standby-Lag-Seconds``).

Bound to 127.0.0.1 by default: the endpoint has no authentication except the read
API's optional bearer token, so exposing it is a deliberate configuration choice (a
container sets its address to 0.0.0.0); off loopback the read API answers only with a
token configured. Each connection serves one request and closes, unless the request
says ``Connection: keep-alive`` (a read-API poller): then it serves the next one too,
and requests sent ahead (HTTP/1.1 pipelining) are answered in order.

Cheap per request, since the read API may be polled a thousand times a second on the
daemon's own thread: each connection is an ``asyncio.Protocol`` (no task, future or
timer per request), a read-API request is queued on the loop's reads with the pending
response itself as the waiter (``CommittedReads.submit``), and the responses a batch
boundary completes go out in one write per connection. Timeouts (idle connections,
reads the loop does not answer, clients that stop reading) are checked by one sweep a
second over the open connections.

Bounded against a careless or hostile client: a connection parses at most
``_MAX_PIPELINED`` requests ahead of their answers (the rest of a burst waits unparsed
and is taken a loop turn after answers leave), so one write of thousands of requests
neither holds the loop nor queues thousands of reads; a client that stops reading
pauses its parsing and is aborted, buffer and all, once its answers sit unread past the
timeouts; a request with a body (``Content-Length`` or ``Transfer-Encoding``) is
answered 400 and the connection closed, so a body is never taken for the next request;
beyond ``MAX_CONNECTIONS`` open connections a new one is answered 503 and closed; and
``/metrics`` is rendered at most once a second per format, so a burst of scrapes costs
one rendering.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Final

from prometheus_client.exposition import choose_encoder

from clearing.ops.metrics import Metrics
from clearing.ops.read_api import WAIT_S, ReadApi, ReadQuery, error_body, failed_reply
from clearing.ops.reads import Answer, ReadAborted
from clearing.ops.state_hash import StateHash

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MAX_CONNECTIONS", "OpsServer"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 9464
# A scraper sends a few hundred bytes of headers; anything bigger is not one of ours.
_MAX_HEADER_BYTES: Final = 16 * 1024
# A connection with no request in progress is closed after this long (a client that
# never sends its headers is gone or hostile: slowloris).
_READ_TIMEOUT_S: Final = 5.0
# A client that leaves our responses unread this long is dropped.
_WRITE_TIMEOUT_S: Final = 10.0
# A keep-alive connection is closed after this many requests (or when idle for
# _READ_TIMEOUT_S), so no client holds one forever.
_MAX_REQUESTS_PER_CONNECTION: Final = 10_000
# Requests sent ahead on one connection beyond this many unanswered ones are not parsed
# (they wait in the connection's buffer, reading pauses and the rest wait in the
# socket): one client queues at most this many reads, and one burst of its requests
# holds the loop for at most this many.
_MAX_PIPELINED: Final = 256
# Open connections beyond this many are answered 503 and closed at once, so a flood of
# connections cannot take the daemon's file descriptors and memory (a thousand pollers
# with a connection each fit).
MAX_CONNECTIONS: Final = 2048
# /metrics is rendered at most once per this long per format: a burst of scrapes (or a
# client pipelining them) is served from the last rendering.
_METRICS_CACHE_S: Final = 1.0
# How often the timeouts above are checked.
_SWEEP_INTERVAL_S: Final = 1.0
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
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.metrics = metrics
        self.max_connections = max_connections
        self._state_hash = state_hash
        self._read_api = read_api
        self.host = host
        self._requested_port = port
        self._stall_after_s = stall_after_s
        self._last_beat = time.monotonic()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # the sweep, state-hash requests
        # Per content type: (monotonic time rendered, the body).
        self._metrics_cache: dict[str, tuple[float, bytes]] = {}

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
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), self.host, self._requested_port
        )
        self._spawn(self._sweep())

    async def stop(self) -> None:
        """Stop listening and end the connections in flight. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        """Once a second: close idle connections and those whose client stopped
        reading, and fail the reads the loop has not answered in time."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL_S)
            now = loop.time()
            for connection in list(self._connections):
                connection.check_timeouts(now)

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- request handling ----------------------------------------------------------------

    def serve(self, connection: _Connection, head: bytes, last: bool) -> _Response:
        """The response to one request's head (request line and headers); ``last``: the
        connection closes after it, whatever the client asked."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _Response.now(HTTPStatus.BAD_REQUEST, _TEXT, b"bad request line\n", close=True)
        method, target, _version = parts
        headers = {}
        has_body = False
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                name, value = name.strip().lower(), value.strip()
                headers[name] = value
                if name == "transfer-encoding" or (name == "content-length" and value != "0"):
                    has_body = True
        path, _, query = target.partition("?")
        if method not in ("GET", "HEAD"):
            return _Response.now(
                HTTPStatus.METHOD_NOT_ALLOWED,
                _TEXT,
                b"only GET and HEAD\n",
                close=True,
                extra=b"Allow: GET, HEAD\r\n",
            )
        if has_body:
            # Never read as the next request: its body would be parsed as one.
            body = b"a GET or HEAD request takes no body (Content-Length or Transfer-Encoding)\n"
            return _Response.now(HTTPStatus.BAD_REQUEST, _TEXT, body, close=True)
        keep_alive = not last and headers.get("connection", "").lower() == "keep-alive"
        response = _Response(connection, head_only=method == "HEAD", keep_alive=keep_alive)
        if path.startswith("/v1/"):
            self._read_api_route(response, path, query, headers)
        elif path == "/state-hash":
            self._spawn(self._state_hash_route(response, connection))
        else:
            status, response.content_type, body = self._route(path, headers.get("accept", ""))
            response.finish(status, body)
        return response

    async def _state_hash_route(self, response: _Response, connection: _Connection) -> None:
        try:
            status, response.content_type, body = await self._state_hash_reply()
        except Exception as exc:  # a bug fails this request, never the connection's others
            response.content_type = _TEXT
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc!r}\n".encode()
        response.finish(status, body)
        connection.flush()

    async def _state_hash_reply(self) -> tuple[HTTPStatus, str, bytes]:
        if self._state_hash is None:
            return HTTPStatus.NOT_FOUND, _TEXT, b"no ledger state on this server\n"
        if not self.metrics.ready:
            reason = _not_ready(self.metrics)
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

    def _read_api_route(
        self, response: _Response, path: str, query: str, headers: dict[str, str]
    ) -> None:
        """Finish ``response`` now (an error, a cached list), or queue its read on the
        loop's reads with ``response`` as the waiter."""
        api = self._read_api
        if api is None:
            response.finish(HTTPStatus.NOT_FOUND, error_body("no ledger on this server"))
            return
        refused = api.authorize(headers.get("authorization", ""))
        if refused is not None:
            response.finish(*refused)
            return
        metrics = self.metrics
        if not metrics.readable:
            reason = _not_ready(metrics)
            response.finish(HTTPStatus.SERVICE_UNAVAILABLE, error_body(f"not ready: {reason}"))
            return
        response.extra = _role_headers(metrics)
        routed = api.route(path, query)
        if isinstance(routed, ReadQuery):
            response.read = routed
            response.queued_at_s = response.connection.active_at_s  # type: ignore[union-attr]
            api.reads.submit(routed.query, response)
        else:
            response.finish(*routed)

    def _metrics_reply(self, accept: str) -> tuple[HTTPStatus, str, bytes]:
        encoder, content_type = choose_encoder(accept)
        now_s = time.monotonic()
        cached = self._metrics_cache.get(content_type)
        if cached is not None and now_s - cached[0] < _METRICS_CACHE_S:
            return HTTPStatus.OK, content_type, cached[1]
        body = encoder(self.metrics.registry)
        self._metrics_cache[content_type] = (now_s, body)
        return HTTPStatus.OK, content_type, body

    def _route(self, path: str, accept: str) -> tuple[HTTPStatus, str, bytes]:
        if path == "/metrics":
            return self._metrics_reply(accept)
        if path == "/healthz":
            stalled_s = time.monotonic() - self._last_beat
            if self._stall_after_s is not None and stalled_s > self._stall_after_s:
                body = f"main loop stalled: no heartbeat for {stalled_s:.1f} s\n"
                return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, body.encode()
            return HTTPStatus.OK, _TEXT, b"ok\n"
        if path == "/readyz":
            if self.metrics.ready:
                return HTTPStatus.OK, _TEXT, b"ready\n"
            reason = _not_ready(self.metrics)
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


def _role_headers(metrics: Metrics) -> bytes:
    """The header lines saying who answers a read: ``Clearing-Role`` always, and on a
    standby (a read replica) its lag behind the journal's end as last measured."""
    if metrics.role != "standby":
        return b"Clearing-Role: active\r\n"
    return b"Clearing-Role: standby\r\nClearing-Standby-Lag-Seconds: %.3f\r\n" % (
        metrics.standby_lag_s
    )


def _not_ready(metrics: Metrics) -> str:
    """The not-ready reason as one short line, fit for a response body."""
    return metrics.not_ready_reason.replace("\n", " ")[:200]


class _Response:
    """One request's response, sent in the order its connection received the requests;
    for a read, also its ``Waiter`` on the loop's queue (``CommittedReads.submit``)."""

    __slots__ = (
        "connection",
        "content_type",
        "data",
        "extra",
        "head_only",
        "keep_alive",
        "queued_at_s",
        "read",
    )

    def __init__(
        self, connection: _Connection | None, *, head_only: bool = False, keep_alive: bool = False
    ) -> None:
        self.connection = connection
        self.content_type = _JSON
        self.head_only = head_only
        self.keep_alive = keep_alive
        self.extra = b""  # more header lines
        self.data: bytes | None = None  # the response on the wire, once finished
        self.read: ReadQuery | None = None  # the read it waits for, if any
        self.queued_at_s = 0.0  # loop time the read was queued

    @classmethod
    def now(
        cls, status: HTTPStatus, content_type: str, body: bytes, *, close: bool, extra: bytes = b""
    ) -> _Response:
        response = cls(None, keep_alive=not close)
        response.content_type = content_type
        response.extra = extra
        response.finish(status, body)
        return response

    def finish(self, status: HTTPStatus, body: bytes) -> None:
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
            status.value,
            status.phrase.encode(),
            self.content_type.encode(),
            len(body),
        )
        connection = b"keep-alive" if self.keep_alive else b"close"
        tail = b"Cache-Control: no-store\r\nConnection: %s\r\n%s\r\n" % (connection, self.extra)
        self.data = head + tail if self.head_only else head + tail + body

    # -- Waiter: the loop hands over the read's answer at a batch boundary --------------

    def done(self) -> bool:
        return self.data is not None

    def set_result(self, answer: Answer) -> None:
        assert self.read is not None
        try:
            reply = self.read.reply(answer)
        except Exception as exc:  # a bug fails this request, never the loop's delivery
            reply = failed_reply(exc)
        self.finish(*reply)
        if self.connection is not None:
            self.connection.ready()

    def set_exception(self, exception: BaseException) -> None:
        self.finish(*failed_reply(exception))
        if self.connection is not None:
            self.connection.ready()


class _Connection(asyncio.Protocol):
    """One client connection: parses the requests as they arrive, answers them in order.

    At most ``_MAX_PIPELINED`` requests are parsed ahead of their answers: bytes beyond
    those wait unparsed in the buffer (reading paused, so the buffer holds at most one
    socket read more) and are parsed a loop turn after answers leave, so one client's
    burst neither holds the loop nor queues thousands of reads ahead of the others."""

    def __init__(self, server: OpsServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._pending: deque[_Response] = deque()  # unanswered, in arrival order
        self._requests = 0
        self._closing = False  # a response closes the connection: read no more requests
        self._eof = False  # the client sent all it will: close once the answers are out
        self._backlog = False  # parsing stopped at _MAX_PIPELINED: the buffer holds more
        self._flush_due = False
        self._parse_due = False
        self._reading_paused = False
        self._writing_paused_at_s: float | None = None
        # Loop time of the last request or response: an idle connection is closed.
        self.active_at_s = self._loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        connections = self._server._connections
        if len(connections) >= self._server.max_connections:
            self._closing = True  # refused: one answer, then closed, never tracked
            transport.write(_too_many_connections(self._server.max_connections))
            transport.close()
            return
        connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._closing = True
        self._backlog = False
        for response in self._pending:
            if response.data is None:
                response.data = b""  # done: the reads queue skips it
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buffer += data
        self._parse()
        self.flush()
        self._update_reading()

    def _parse(self) -> None:
        """Turn the buffered requests into pending responses, up to _MAX_PIPELINED."""
        buffer, pending = self._buffer, self._pending
        self._backlog = False
        while not self._closing:
            if len(pending) >= _MAX_PIPELINED:
                self._backlog = bool(buffer)
                break
            end = buffer.find(b"\r\n\r\n")
            if end < 0 or end > _MAX_HEADER_BYTES:
                if end >= 0 or len(buffer) > _MAX_HEADER_BYTES:
                    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
                    self._push(_Response.now(status, _TEXT, b"", close=True))
                break
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            self._requests += 1
            self.active_at_s = self._loop.time()
            last = self._requests >= _MAX_REQUESTS_PER_CONNECTION
            self._push(self._server.serve(self, head, last))

    def _parse_backlog(self) -> None:
        """Parse the requests left in the buffer, a loop turn after answers left."""
        self._parse_due = False
        transport = self._transport
        if transport is None or transport.is_closing() or self._writing_paused_at_s is not None:
            return  # resume_writing schedules it again
        self._parse()
        self.flush()
        self._update_reading()

    def _schedule_parse(self) -> None:
        if self._backlog and not self._parse_due and len(self._pending) < _MAX_PIPELINED:
            self._parse_due = True
            self._loop.call_soon(self._parse_backlog)

    def eof_received(self) -> bool:
        """The client shut its side: answer what it sent, then close (True keeps the
        transport open for those answers)."""
        self._eof = True
        return bool(self._pending) or self._backlog

    def _push(self, response: _Response) -> None:
        self._pending.append(response)
        if not response.keep_alive:
            self._closing = True

    def ready(self) -> None:
        """A response finished out of turn: send what can go, once per loop turn, so the
        answers of one batch boundary leave in one write."""
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send the finished responses at the head of the line, in one write."""
        self._flush_due = False
        pending, transport = self._pending, self._transport
        if transport is None or transport.is_closing():
            return
        out: list[bytes] = []
        close = False
        while pending and pending[0].data is not None:
            response = pending.popleft()
            out.append(response.data)  # type: ignore[arg-type]
            if not response.keep_alive:
                close = True
                break
        if out:
            transport.write(b"".join(out))
            self.active_at_s = self._loop.time()
        if close or (self._eof and not pending and not self._backlog):
            transport.close()
        elif out:
            if self._writing_paused_at_s is None:
                self._schedule_parse()
            if self._reading_paused:
                self._update_reading()

    def _update_reading(self) -> None:
        """Read the socket only while there is room: no backlog, writing flows, fewer
        than _MAX_PIPELINED pending (half of it to resume, so it does not flap)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        held = self._backlog or self._writing_paused_at_s is not None
        if self._reading_paused:
            if not (held or self._eof) and len(self._pending) < _MAX_PIPELINED // 2:
                transport.resume_reading()
                self._reading_paused = False
        elif held or len(self._pending) >= _MAX_PIPELINED:
            transport.pause_reading()
            self._reading_paused = True

    def pause_writing(self) -> None:
        # The client is not reading our responses: stop reading its requests meanwhile.
        self._writing_paused_at_s = self._loop.time()
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused_at_s = None
        self._schedule_parse()
        self._update_reading()

    def check_timeouts(self, now_s: float) -> None:
        transport = self._transport
        if transport is None:
            return
        # Checked before is_closing(): a closing transport still waits to send its
        # buffer, and a client that never reads would hold it (and the buffer) forever.
        paused_at_s = self._writing_paused_at_s
        if transport.get_write_buffer_size() and (
            now_s - self.active_at_s > _WRITE_TIMEOUT_S
            or (paused_at_s is not None and now_s - paused_at_s > _WRITE_TIMEOUT_S)
        ):
            transport.abort()
            return
        if transport.is_closing():
            return
        if not self._pending and not self._backlog and now_s - self.active_at_s > _READ_TIMEOUT_S:
            if transport.get_write_buffer_size():
                transport.abort()  # idle with answers unread: close() would wait on them
            else:
                transport.close()  # idle, or its headers never came
            return
        for response in self._pending:
            if response.read is not None and response.data is None:
                if now_s - response.queued_at_s <= WAIT_S:
                    break  # queued in order: the rest is younger
                response.set_exception(TimeoutError())

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _too_many_connections(limit: int) -> bytes:
    """The answer to a connection over the server's cap."""
    body = b"too many open connections (the limit is %d); retry later\n" % limit
    response = _Response.now(HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, body, close=True)
    return response.data or b""
