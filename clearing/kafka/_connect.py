"""Reaching the Kafka cluster at start: a bounded wait, then one line saying why not.

aiokafka's bootstrap reports every network mistake the same way ("Unable to bootstrap",
or a hang of ``request_timeout_ms`` on a listener that never answers). Before any client
starts, each bootstrap server is probed step by step, exactly as a client would reach it:

    DNS lookup -> TCP connect -> TLS handshake (SSL, SASL_SSL) -> Kafka ApiVersions

until one answers as a Kafka broker or ``kafka.connect_timeout_s`` has passed. The first
step that failed names the cause per server ("refused the connection", "host name does
not resolve", "accepted the connection but sent no Kafka answer", "answered, but not in
the Kafka protocol"). ApiVersions is the one request a broker answers before SASL
authentication, so the probe needs no credentials; a rejected login is told apart
afterwards (``probe_authentication``).

Exit codes: an unreachable cluster is ``EXIT_UNREACHABLE`` (6): it may be a typo, or a
broker that is restarting, so a supervisor may retry (docs/operations.md). A TLS
certificate the configured CA does not trust cannot fix itself: ``EXIT_CONFIG`` (2) at
once, without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import time
from typing import Final, NamedTuple

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from clearing.kafka._clients import admin_client, client_kwargs, probe_authentication
from clearing.ops.config import Config

__all__ = ["EXIT_UNREACHABLE", "ConnectError", "start_admin", "wait_for_cluster"]

log = logging.getLogger("clearing.kafka")

EXIT_UNREACHABLE: Final = 6  # no bootstrap server answered within kafka.connect_timeout_s
_EXIT_CONFIG: Final = 2  # the same code as _daemon.EXIT_CONFIG (imported there, not here)

_API_VERSIONS_KEY: Final = 18
_CORRELATION_ID: Final = 0x434C  # any value; the answer must echo it
# An ApiVersions v0 answer is a few hundred bytes; a "size" beyond this is not Kafka.
_MAX_ANSWER_BYTES: Final = 1024 * 1024
_TLS_RECORD_TYPES: Final = (0x15, 0x16)  # alert, handshake: a TLS peer's first byte
_MIN_PROBE_TIMEOUT_S: Final = 0.2
_FIRST_RETRY_S: Final = 0.25
_MAX_RETRY_S: Final = 2.0


class ConnectError(Exception):
    """The cluster cannot be used; ``code`` is the exit code, ``message`` one line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Finding(NamedTuple):
    server: str
    what: str  # reads after the server's address: "127.0.0.1:1 refused the connection"
    needs_a_person: bool  # no wait can fix it (an untrusted TLS certificate)


def _split(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


def _api_versions_request(client_id: bytes) -> bytes:
    header = struct.pack(">hhih", _API_VERSIONS_KEY, 0, _CORRELATION_ID, len(client_id))
    message = header + client_id
    return struct.pack(">i", len(message)) + message


def _not_kafka(first: bytes, protocol: str) -> str:
    shown = first[:8].hex(" ")
    if first[:1] and first[0] in _TLS_RECORD_TYPES and "SSL" not in protocol:
        return (
            f"answered in TLS (first bytes {shown}), but kafka.security.protocol is "
            f"{protocol}: use SSL or SASL_SSL for this listener"
        )
    return f"answered, but not in the Kafka protocol (first bytes {shown}): not a Kafka listener"


async def _open(
    host: str, port: int, tls: ssl.SSLContext | None, timeout_s: float, server: str, cafile: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | _Finding:
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
            timeout_s,
        )
    except socket.gaierror as exc:
        return _Finding(server, f"does not resolve ({exc.strerror})", False)
    except TimeoutError:
        return _Finding(server, f"does not resolve within {timeout_s:.1f} s", False)
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None),
            timeout_s,
        )
    except ssl.SSLCertVerificationError as exc:
        return _Finding(
            server,
            f"presented a TLS certificate that kafka.security.ssl_cafile ({cafile}) does not "
            f"trust ({exc.verify_message})",
            True,
        )
    except (ssl.SSLError, ConnectionResetError) as exc:
        if tls is None:
            return _Finding(server, f"reset the connection ({exc})", False)
        why = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        return _Finding(server, f"failed the TLS handshake ({why}; not a TLS listener?)", False)
    except ConnectionRefusedError:
        return _Finding(server, "refused the connection (nothing listens on that port)", False)
    except TimeoutError:
        step = "TCP connection and TLS handshake" if tls else "TCP connection"
        return _Finding(server, f"did not complete a {step} within {timeout_s:.1f} s", False)
    except OSError as exc:
        return _Finding(server, f"cannot be connected to ({exc.strerror or exc})", False)


async def _ask_api_versions(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float, config: Config
) -> str | None:
    """None if the peer answered ApiVersions as a Kafka broker; else what it did."""
    protocol = config.kafka.security.protocol
    writer.write(_api_versions_request(config.kafka.client_id.encode()))
    try:
        async with asyncio.timeout(timeout_s):
            await writer.drain()
            first = await reader.read(4)
            while first and len(first) < 4:
                more = await reader.read(4 - len(first))
                if not more:
                    break
                first += more
            if not first:
                return "accepted the connection and closed it without a Kafka answer"
            if len(first) < 4:
                return _not_kafka(first, protocol)
            (size,) = struct.unpack(">i", first)
            if not 6 <= size <= _MAX_ANSWER_BYTES:
                return _not_kafka(first + await reader.read(4), protocol)
            body = await reader.readexactly(size)
    except TimeoutError:
        return (
            f"accepted the connection but sent no Kafka answer within {timeout_s:.1f} s "
            f"(not a Kafka listener, or a TLS one while kafka.security.protocol is {protocol}?)"
        )
    except asyncio.IncompleteReadError as exc:
        return _not_kafka(first + exc.partial, protocol)
    except OSError as exc:
        return f"broke the connection before a Kafka answer ({exc})"
    if struct.unpack(">i", body[:4])[0] != _CORRELATION_ID:
        return _not_kafka(first + body, protocol)
    return None


async def _probe(
    server: str, config: Config, tls: ssl.SSLContext | None, timeout_s: float
) -> _Finding | None:
    """None if ``server`` answers as a Kafka broker; else what went wrong there."""
    try:
        return await _probe_steps(server, config, tls, timeout_s)
    except Exception as exc:  # a diagnosis must not crash the start: report it instead
        return _Finding(server, f"could not be probed ({exc!r})", False)


async def _probe_steps(
    server: str, config: Config, tls: ssl.SSLContext | None, timeout_s: float
) -> _Finding | None:
    try:
        host, port = _split(server)
    except ValueError:
        return _Finding(server, "is not HOST:PORT", True)
    cafile = config.kafka.security.ssl_cafile or "the system's CAs"
    opened = await _open(host, port, tls, timeout_s, server, cafile)
    if isinstance(opened, _Finding):
        return opened
    reader, writer = opened
    try:
        what = await _ask_api_versions(reader, writer, timeout_s, config)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), _MIN_PROBE_TIMEOUT_S)
    return None if what is None else _Finding(server, what, False)


def _steps(config: Config) -> str:
    tls = "SSL" in config.kafka.security.protocol
    return "DNS lookup, TCP connect, " + ("TLS handshake, " if tls else "") + "Kafka ApiVersions"


def _tls_context(config: Config) -> ssl.SSLContext | None:
    """The clients' SSL context; files that cannot be loaded are a configuration error."""
    try:
        context: ssl.SSLContext | None = client_kwargs(config, "probe")["ssl_context"]
    except (OSError, ssl.SSLError) as exc:
        security = config.kafka.security
        raise ConnectError(
            _EXIT_CONFIG,
            f"the TLS files of kafka.security cannot be loaded ({exc}): check ssl_cafile "
            f"({security.ssl_cafile}), ssl_certfile ({security.ssl_certfile}), ssl_keyfile "
            f"({security.ssl_keyfile}) and ssl_password",
        ) from exc
    return context


async def _probe_all(
    config: Config, tls: ssl.SSLContext | None, timeout_s: float
) -> str | list[_Finding]:
    """All bootstrap servers at once (a silent one must not hold up the others): the
    first that answers as a Kafka broker, or what went wrong at each, in config order."""
    servers = config.kafka.bootstrap_servers
    tasks = {asyncio.create_task(_probe(s, config, tls, timeout_s)): s for s in servers}
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.result() is None:
                    return tasks[task]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [finding for task in tasks if (finding := task.result()) is not None]


async def wait_for_cluster(config: Config) -> None:
    """Return once a bootstrap server answers as a Kafka broker; raise ``ConnectError``
    after ``kafka.connect_timeout_s`` (or at once for an untrusted TLS certificate)."""
    kafka = config.kafka
    tls = _tls_context(config)
    started = time.monotonic()
    deadline = started + kafka.connect_timeout_s
    retry_s = _FIRST_RETRY_S
    attempts = 0
    while True:
        attempts += 1
        timeout_s = max(
            _MIN_PROBE_TIMEOUT_S, min(deadline - time.monotonic(), kafka.request_timeout_ms / 1000)
        )
        found = await _probe_all(config, tls, timeout_s)
        if isinstance(found, str):
            if attempts > 1:
                log.info("Kafka broker %s answers after %.1f s", found, time.monotonic() - started)
            return
        details = "; ".join(f"{f.server} {f.what}" for f in found)
        if any(f.needs_a_person for f in found):
            raise ConnectError(
                _EXIT_CONFIG,
                f"cannot use the Kafka cluster: {details}. Fix kafka.security in the "
                f"configuration (a restart cannot fix this)",
            )
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise ConnectError(
                EXIT_UNREACHABLE,
                f"cannot reach the Kafka cluster within {kafka.connect_timeout_s:g} s "
                f"(kafka.connect_timeout_s; tried {attempts} times: {_steps(config)}): "
                f"{details}. Check kafka.bootstrap_servers and kafka.security.protocol "
                f"({kafka.security.protocol}), and that the brokers are up",
            )
        if attempts == 1:
            log.warning(
                "Kafka cluster not reachable yet (%s); retrying for up to %.1f s",
                details,
                remaining_s,
            )
        await asyncio.sleep(min(retry_s, remaining_s))
        retry_s = min(2 * retry_s, _MAX_RETRY_S)


async def start_admin(config: Config) -> AIOKafkaAdminClient:
    """A started admin client, after ``wait_for_cluster``. A rejected login raises the
    access error (see ``ACCESS_ERRORS``); a cluster that answers the probe but not the
    bootstrap raises ``ConnectError(EXIT_UNREACHABLE)``."""
    await wait_for_cluster(config)
    admin = admin_client(config)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        with contextlib.suppress(Exception):
            await admin.close()
        # aiokafka reports a rejected login as "Unable to bootstrap": find out which.
        denied = await probe_authentication(config)
        if denied is not None:
            raise denied from exc
        raise ConnectError(
            EXIT_UNREACHABLE,
            f"the Kafka cluster at {', '.join(config.kafka.bootstrap_servers)} answers, but "
            f"its metadata could not be read ({exc}). Check kafka.security.protocol "
            f"({config.kafka.security.protocol}) against the listener, and the brokers' "
            f"advertised.listeners",
        ) from exc
    return admin
