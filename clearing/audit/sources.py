"""Where an audit command reads a journal from: a journal directory or a Kafka topic.

``clearing journal ...`` and ``clearing replay`` take a SOURCE that is either a journal
directory or ``kafka://HOST:PORT/TOPIC`` (host, port and topic each optional: what is left
out comes from ``--config FILE`` and the ``CLEARING_*`` variables, as for ``clearing run``).

A directory is accepted as a journal only when it holds segment files (``*.seg``) or the
writer's ``LOCK`` file: an empty folder, a folder of notes or the folder *around* a
journal must not verify as an empty ledger. A journal directory with a ``LOCK`` file and
no segment is a genuine journal with zero records (a writer opened it and appended
nothing); the commands accept it and say that it is empty.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec

from clearing.journal import LocalJournal
from clearing.journal._format import parse_segment_name
from clearing.journal._local import LOCK_NAME
from clearing.ops.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from clearing.kafka import KafkaJournalReader

__all__ = [
    "KAFKA_SCHEME",
    "KafkaSource",
    "SourceError",
    "check_journal_dir",
    "is_kafka_source",
    "kafka_config",
    "kafka_label",
    "open_journal",
    "open_kafka_reader",
    "parse_kafka_source",
    "source_config",
]

KAFKA_SCHEME: Final = "kafka:"
# kafka://[HOST:PORT[,HOST:PORT...]][/TOPIC]; everything after the scheme is optional.
_KAFKA_RE: Final = re.compile(r"^kafka:(?://(?P<servers>[^/]*))?(?:/(?P<topic>[^/]*))?$")
# How many of a folder's names an error message lists before "...".
_NAMES_SHOWN: Final = 3
_AUDIT_LEDGER_ID: Final = "audit"


class SourceError(ValueError):
    """The source cannot be read as a journal (not one, missing, unreachable); the
    message says what is there and what was expected. The CLI exits 2 on it."""


def is_kafka_source(source: str) -> bool:
    return source.startswith(KAFKA_SCHEME)


def check_journal_dir(path: str) -> bool:
    """Raise ``SourceError`` unless ``path`` is a journal directory; True when it holds
    at least one segment, False for a genuine journal with zero records."""
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such directory; expected a journal directory")
    if not os.path.isdir(path):
        raise SourceError(f"{path} is a file; expected a journal directory (of *.seg files)")
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise SourceError(f"{path}: cannot list it ({exc.strerror})") from None
    if any(parse_segment_name(name) is not None for name in names):
        return True
    if LOCK_NAME in names:
        return False
    raise SourceError(f"{path} is not a journal: {_describe(path, names)}")


def _describe(path: str, names: list[str]) -> str:
    if not names:
        held = "it is empty"
    else:
        shown = ", ".join(names[:_NAMES_SHOWN]) + (", ..." if len(names) > _NAMES_SHOWN else "")
        entries = "entry" if len(names) == 1 else "entries"
        held = f"it holds {len(names)} {entries} ({shown}) and no segment file"
    expected = "expected a journal directory of segment files (00000000000000000001.seg, ...)"
    inner = os.path.join(path, "journal")
    if os.path.isdir(inner):
        return f"{held}; {expected}: did you mean {inner}?"
    return f"{held}; {expected}"


class KafkaSource(NamedTuple):
    servers: list[str]  # empty: from the configuration
    topic: str | None  # None: the configured journal topic


def parse_kafka_source(source: str) -> KafkaSource:
    match = _KAFKA_RE.match(source)
    if match is None:
        raise SourceError(
            f"{source!r}: expected kafka://HOST:PORT/TOPIC (each part optional; what is "
            f"left out comes from --config and the CLEARING_* variables)"
        )
    servers = [s for s in (match.group("servers") or "").split(",") if s]
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not (sep and host and port.isdigit()):
            raise SourceError(f"{source!r}: {server!r} is not HOST:PORT")
    return KafkaSource(servers, match.group("topic") or None)


def kafka_config(source: KafkaSource, config_path: str | None) -> Config:
    """The configuration ``clearing run`` would use, with the source's servers and topic."""
    environ = dict(os.environ)
    if config_path is None:
        # Reading needs no ledger id (it only names the client); run's config has one.
        environ.setdefault("CLEARING_LEDGER_ID", _AUDIT_LEDGER_ID)
    try:
        config = load_config(config_path, environ)
    except ConfigError as exc:
        raise SourceError(str(exc)) from None
    kafka = config.kafka
    if source.servers:
        kafka = msgspec.structs.replace(kafka, bootstrap_servers=source.servers)
    topics = config.topics
    if source.topic is not None:
        topics = msgspec.structs.replace(topics, journal=source.topic)
    return msgspec.structs.replace(config, kafka=kafka, topics=topics)


def kafka_label(config: Config) -> str:
    """The journal topic as a source string, for messages."""
    return f"kafka://{','.join(config.kafka.bootstrap_servers)}/{config.topics.journal}"


def source_config(source: str, config_path: str | None) -> Config | None:
    """The Kafka configuration for a ``kafka://`` source; None for a directory."""
    if is_kafka_source(source):
        return kafka_config(parse_kafka_source(source), config_path)
    if config_path is not None:
        raise SourceError(f"--config applies to kafka:// sources only, not to {source}")
    return None


def open_journal(source: str, config: Config | None) -> LocalJournal | KafkaJournalReader:
    """A read-only reader of ``source``, opened: the journal topic named by ``config``
    (from ``source_config``) or else the journal directory ``source``.

    Raises ``SourceError`` when the source is not a journal or cannot be reached, and
    ``JournalCorrupt`` / ``KafkaJournalError`` when it is one that does not verify.
    """
    if config is not None:
        return open_kafka_reader(config)
    check_journal_dir(source)
    # Open checks only the segment headers and the last segment: reading verifies every
    # record's CRC and the whole hash chain anyway (scanning twice cost a third of a replay).
    return LocalJournal(source, readonly=True, scan_mode="tail")


def open_kafka_reader(config: Config) -> KafkaJournalReader:
    from aiokafka.errors import KafkaError

    from clearing.kafka import KafkaJournalError, KafkaJournalReader
    from clearing.kafka._clients import ACCESS_ERRORS, access_error_message

    # aiokafka logs every failed connection attempt; the one-line error below says it all.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    reader = KafkaJournalReader(config)
    label = kafka_label(config)
    try:
        try:
            reader.open()
        except KafkaJournalError as exc:  # no such topic, or not one partition
            raise SourceError(f"{label}: {exc}") from None
        reader.tail()  # find the end now, so that an unreachable broker fails here
    except ACCESS_ERRORS as exc:
        reader.close()
        raise SourceError(access_error_message(config, exc)) from None
    except (KafkaError, OSError) as exc:
        reader.close()
        denied = _login_refused(config)
        if denied is not None:
            raise SourceError(access_error_message(config, denied)) from None
        raise SourceError(
            f"cannot read the journal topic at {label}: {exc}. Check the address "
            f"(kafka://HOST:PORT/TOPIC, or kafka.bootstrap_servers in --config) and that "
            f"the broker is up"
        ) from None
    except BaseException:
        reader.close()
        raise
    return reader


def _login_refused(config: Config) -> BaseException | None:
    """The broker's refusal of our login, if that is why connecting failed (aiokafka
    reports it as "Unable to bootstrap", like an unreachable broker)."""
    import asyncio

    from clearing.kafka._clients import probe_authentication

    if config.kafka.security.protocol in ("PLAINTEXT", "SSL"):
        return None  # no login to refuse
    try:
        return asyncio.run(probe_authentication(config))
    except Exception:  # only a diagnosis: the caller reports the connection failure
        return None
