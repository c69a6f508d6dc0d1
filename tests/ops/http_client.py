"""A minimal asyncio HTTP/1.1 client for the tests: no dependency, exact bytes on the wire."""

from __future__ import annotations

import asyncio
from typing import NamedTuple


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


async def request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    host: str = "127.0.0.1",
    timeout_s: float = 5.0,
) -> Response:
    """Send one request (or ``raw`` bytes as they are) and read the response to EOF."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if raw is None:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
            lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return Response(int(status_line.split(" ")[1]), parsed, body)
