"""aiokafka clients built from the configuration (connection, security, transactions).

Every client is created inside a running event loop (aiokafka binds to it on creation).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    DelegationTokenAuthorizationFailed,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from clearing.ops.config import Config

__all__ = [
    "ACCESS_ERRORS",
    "access_error_message",
    "admin_client",
    "client_kwargs",
    "journal_reader_consumer",
    "make_consumer",
    "make_producer",
    "probe_authentication",
    "stop_consumer",
]

# Authentication and authorization failures: the credentials or the ACLs are wrong, and a
# restart cannot fix that (exit 2, not 1, so that a supervisor does not loop on it).
ACCESS_ERRORS: Final[tuple[type[Exception], ...]] = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    DelegationTokenAuthorizationFailed,
)
_AUTHORIZATION_ERRORS: Final[tuple[type[Exception], ...]] = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    DelegationTokenAuthorizationFailed,
)

# The journal topic holds whole records (input + outputs): fetch up to one maximal record
# per partition request so that a large one is never split across many round trips.
_FETCH_MIN_PARTITION_BYTES: Final = 1024 * 1024


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    security = config.kafka.security
    if security.protocol not in ("SSL", "SASL_SSL"):
        return None
    return create_ssl_context(
        cafile=security.ssl_cafile,
        certfile=security.ssl_certfile,
        keyfile=security.ssl_keyfile,
        password=security.ssl_password.get() if security.ssl_password else None,
    )


def client_kwargs(config: Config, suffix: str) -> dict[str, Any]:
    """Connection and security keyword arguments shared by every aiokafka client."""
    security = config.kafka.security
    kwargs: dict[str, Any] = {
        "bootstrap_servers": list(config.kafka.bootstrap_servers),
        "client_id": f"{config.kafka.client_id}-{config.ledger_id}-{suffix}",
        "request_timeout_ms": config.kafka.request_timeout_ms,
        "security_protocol": security.protocol,
        "ssl_context": _ssl_context(config),
    }
    if security.protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = security.sasl_mechanism
        kwargs["sasl_plain_username"] = security.sasl_username
        kwargs["sasl_plain_password"] = (
            security.sasl_password.get() if security.sasl_password else None
        )
    return kwargs


def make_producer(config: Config) -> AIOKafkaProducer:
    """The ledger's transactional producer: ``transactional_id`` = ``clearing-<ledger_id>``.

    Starting it runs InitProducerId, which fences any older instance with the same id and
    waits until that instance's open transaction is aborted or completed.
    """
    return AIOKafkaProducer(
        **client_kwargs(config, "producer"),
        transactional_id=config.transactional_id,
        transaction_timeout_ms=config.kafka.transaction_timeout_ms,
        acks="all",
        enable_idempotence=True,
        # A journal record can be as large as max_journal_record_bytes (plus framing).
        max_request_size=config.limits.max_journal_record_bytes + 64 * 1024,
        max_batch_size=256 * 1024,
        linger_ms=0,
    )


def make_consumer(config: Config) -> AIOKafkaConsumer:
    """The input consumer: manual assignment (no rebalances), offsets committed only in
    the producer's transactions, and only committed input is read."""
    per_partition = max(_FETCH_MIN_PARTITION_BYTES, config.limits.max_message_bytes + 64 * 1024)
    return AIOKafkaConsumer(
        **client_kwargs(config, "consumer"),
        group_id=config.group_id,
        enable_auto_commit=False,
        # "none": a position below the log start (retention, delete-records) must raise
        # OffsetOutOfRangeError, never silently skip the inputs in between.
        auto_offset_reset="none",
        isolation_level="read_committed",
        max_partition_fetch_bytes=per_partition,
        fetch_max_bytes=max(config.batch.max_bytes, per_partition),
        fetch_max_wait_ms=min(500, config.batch.poll_timeout_ms),
    )


def journal_reader_consumer(config: Config) -> AIOKafkaConsumer:
    """A group-less read_committed consumer for reading the journal topic."""
    per_partition = max(_FETCH_MIN_PARTITION_BYTES, config.limits.max_journal_record_bytes)
    return AIOKafkaConsumer(
        **client_kwargs(config, "journal-reader"),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=per_partition,
        fetch_max_bytes=per_partition,
        fetch_max_wait_ms=100,
    )


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, minus an aiokafka quirk: stopped right after it started, a
    consumer raises the cancellation of an internal task of its own that never ran.
    Only a cancellation of the calling task is passed on."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def admin_client(config: Config) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_kwargs(config, "admin"))


def access_error_message(config: Config, exc: BaseException) -> str:
    """One line: what was refused and which settings to check (never the secrets)."""
    security = config.kafka.security
    servers = ", ".join(config.kafka.bootstrap_servers)
    name = type(exc).__name__
    what = str(exc) if name in str(exc) else f"{name}: {exc}"
    if isinstance(exc, _AUTHORIZATION_ERRORS):
        return (
            f"not authorized by the Kafka cluster at {servers} as user "
            f"{security.sasl_username!r} ({what}). Check the ACLs of "
            f"that principal: it needs the ledger's topics (kafka topics.*), consumer group "
            f"{config.group_id!r} and transactional id {config.transactional_id!r}"
        )
    return (
        f"authentication with the Kafka cluster at {servers} failed: "
        f"{what}. Check kafka.security.protocol "
        f"({security.protocol}), sasl_mechanism ({security.sasl_mechanism}), sasl_username "
        f"({security.sasl_username!r}) and sasl_password / sasl_password_file "
        f"(CLEARING_KAFKA_SECURITY_SASL_PASSWORD)"
    )


async def probe_authentication(config: Config) -> BaseException | None:
    """The authentication error of a bootstrap server, if that is why connecting failed.

    aiokafka's bootstrap only logs a rejected login and then raises a bare "Unable to
    bootstrap" KafkaConnectionError, which looks like an unreachable broker (transient).
    One direct connection per server tells the two apart. None: no access error seen.
    """
    kwargs = client_kwargs(config, "probe")
    for server in config.kafka.bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"),
                    int(port),
                    client_id=kwargs["client_id"],
                    request_timeout_ms=kwargs["request_timeout_ms"],
                    ssl_context=kwargs["ssl_context"],
                    security_protocol=kwargs["security_protocol"],
                    sasl_mechanism=kwargs.get("sasl_mechanism"),
                    sasl_plain_username=kwargs.get("sasl_plain_username"),
                    sasl_plain_password=kwargs.get("sasl_plain_password"),
                ),
                config.kafka.request_timeout_ms / 1000,
            )
        except ACCESS_ERRORS as exc:
            return exc
        except Exception:  # unreachable, TLS, timeout: not an access error; next server
            continue
        conn.close()
    return None
