"""Logging setup for the daemon: JSON lines (or plain text) on stderr, secrets redacted.

``configure_logging(level, json)`` installs one stderr handler on the root logger. The JSON
formatter writes one object per line with ``ts`` (UTC, RFC 3339, microseconds), ``level``,
``logger`` and ``msg``, then the input position when the caller passed it with
``extra={"seq": 42, "source": "fills/0@1234"}``, then any other ``extra=`` field, then
``exc`` (the formatted traceback) if there is one.

The redaction filter sits on the handler, so it sees every record that reaches it,
whichever logger emitted it (aiokafka's included). It blanks out:

* values of ``key=value`` / ``key: value`` pairs whose key names a password or secret
  (``sasl_plain_password``, ``ssl_key_password``, ``sasl.password``, ...), in the message,
  its arguments and the traceback text;
* ``extra=`` fields whose name is such a key;
* every literal secret registered with ``register_secret`` (the daemon registers the
  configured SASL and SSL key passwords at startup), wherever it appears.

Why both: the patterns catch a config dict or a client repr that is logged by accident;
the literals catch a password echoed back inside some library's error message.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, Final

import msgspec

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "RedactSecretsFilter",
    "configure_logging",
    "redact",
    "register_secret",
]

REDACTED: Final = "***"

# Key names whose values are secrets: anything that says password/passwd/secret, plus the
# SASL/SSL spellings of librdkafka, aiokafka and Java clients (sasl.jaas.config carries
# the password inline).
_SECRET_KEY: Final = r"[\w.-]*(?:password|passwd|secret|jaas[._]config)[\w.-]*"
_SECRET_KEY_RE: Final = re.compile(rf"^{_SECRET_KEY}$", re.IGNORECASE)
# key, then = or : with optional quotes around either side, then the value up to a quote,
# whitespace or separator. Quoted values may hold spaces, so they end at the quote.
_PAIR_RE: Final = re.compile(
    rf"""(?P<key>{_SECRET_KEY})(?P<sep>["']?\s*[:=]\s*)"""
    r"""(?:(?P<q>["'])(?P<quoted>.*?)(?P=q)|(?P<bare>[^\s"',;}&)\]]+))""",
    re.IGNORECASE,
)
# Shorter literal secrets would redact ordinary words; a real password is longer.
_MIN_SECRET_LEN: Final = 4

_secrets_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_FIELDS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def register_secret(value: str | None) -> None:
    """Redact this literal value from every log line from now on (None is ignored)."""
    global _secrets
    if value is None or len(value) < _MIN_SECRET_LEN:
        return
    with _secrets_lock:
        _secrets = _secrets | {value}


def _redact_pair(match: re.Match[str]) -> str:
    quote = match.group("q") or ""
    return f"{match.group('key')}{match.group('sep')}{quote}{REDACTED}{quote}"


def redact(text: str) -> str:
    """``text`` with secret-looking pairs and registered secrets replaced by ``***``."""
    # Longest first, so a secret containing another is replaced whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _PAIR_RE.sub(_redact_pair, text)


class RedactSecretsFilter(logging.Filter):
    """Rewrites a record in place so no handler can print a secret. Never drops records."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Format the message once, with its args, then redact the result: a secret may
        # only become visible after %-formatting (a dict passed as an argument).
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the raw text, still redacted
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key in _RECORD_FIELDS:
                continue
            if _SECRET_KEY_RE.match(key):
                record.__dict__[key] = REDACTED
            elif isinstance(value, str):
                record.__dict__[key] = redact(value)
        return True


def _json_default(value: object) -> object:
    return repr(value)


_encoder = msgspec.json.Encoder(enc_hook=_json_default)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``seq`` and ``source`` first among the extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(
                timespec="microseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("seq", "source"):
            if key in record.__dict__:
                line[key] = record.__dict__[key]
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in line:
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        try:
            return _encoder.encode(line).decode()
        except (TypeError, ValueError, OverflowError):
            # An extra= value msgspec cannot encode (a huge int, a cycle): fall back to
            # its repr rather than losing the line.
            return _encoder.encode({k: repr(v) for k, v in line.items()}).decode()


_TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(
    level: str, json: bool, *, secrets: Iterable[str | None] = (), stream: Any = None
) -> logging.Handler:
    """Send all logging to one stderr handler (JSON lines if ``json``); return it.

    ``level`` is a name (``"info"``, ``"DEBUG"``). ``secrets`` are literal values to
    redact (see ``register_secret``). Replaces the handlers a previous call installed,
    so calling it twice does not double every line.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(
            f"unknown log level {level!r}: use one of debug, info, warning, error, critical"
        )
    for secret in secrets:
        register_secret(secret)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.set_name("clearing")
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "clearing"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # aiokafka logs every reconnect at INFO/WARNING; its DEBUG is a firehose.
    logging.getLogger("aiokafka").setLevel(max(numeric, logging.INFO))
    return handler
