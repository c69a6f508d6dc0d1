"""JSON log lines and secret redaction, through the real logging machinery."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from clearing.ops import logging as ops_logging
from clearing.ops.logging import REDACTED, configure_logging, redact, register_secret


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Route logging to a buffer, restoring the root logger and registered secrets after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_secrets = ops_logging._secrets
    buffer = io.StringIO()
    yield buffer
    for handler in root.handlers[:]:
        if handler not in saved_handlers:
            root.removeHandler(handler)
    root.setLevel(saved_level)
    ops_logging._secrets = saved_secrets


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_seq_and_source(stream: io.StringIO) -> None:
    configure_logging("info", json=True, stream=stream)
    log = logging.getLogger("clearing.test")
    log.info("applied %d inputs", 3, extra={"seq": 42, "source": "fills/0@1234"})
    log.debug("not shown at info")
    (line,) = lines(stream)
    assert list(line)[:6] == ["ts", "level", "logger", "msg", "seq", "source"]
    assert line["msg"] == "applied 3 inputs"
    assert (line["level"], line["logger"]) == ("info", "clearing.test")
    assert (line["seq"], line["source"]) == (42, "fills/0@1234")
    assert str(line["ts"]).endswith("+00:00")


def test_exception_and_odd_extras_are_kept(stream: io.StringIO) -> None:
    configure_logging("DEBUG", json=True, stream=stream)
    log = logging.getLogger("clearing.test")
    try:
        raise ValueError("bad seq 7")
    except ValueError:
        log.exception("apply failed", extra={"batch": object(), "big": 10**40})
    (line,) = lines(stream)
    assert "ValueError: bad seq 7" in str(line["exc"])
    assert str(line["batch"]).startswith("<object object")
    assert line["big"] == 10**40


def test_redacts_secret_pairs_extras_and_registered_values(stream: io.StringIO) -> None:
    configure_logging("info", json=True, secrets=["s3cr3t-sasl", None], stream=stream)
    log = logging.getLogger("aiokafka.test")  # third-party loggers go through it too
    config = {"sasl_plain_password": "p@ss w0rd", "ssl_key_password": "k3y", "acks": "all"}
    log.warning("client config %s", config, extra={"sasl_password": "zz", "note": "s3cr3t-sasl"})
    log.info("sasl.password=abc123; sasl.jaas.config='x required password=\"y\"' ok=1")
    try:
        raise ConnectionError("auth failed for user with password s3cr3t-sasl")
    except ConnectionError:
        log.exception("connect failed")
    text = stream.getvalue()
    for secret in ("p@ss w0rd", "k3y", "zz", "s3cr3t-sasl", "abc123", "required password"):
        assert secret not in text, secret
    first, second, third = lines(stream)
    assert first["msg"] == (
        "client config {'sasl_plain_password': '***', 'ssl_key_password': '***', 'acks': 'all'}"
    )
    assert (first["sasl_password"], first["note"]) == (REDACTED, REDACTED)
    assert second["msg"] == "sasl.password=***; sasl.jaas.config='***' ok=1"
    assert str(third["exc"]).endswith("ConnectionError: auth failed for user with password ***")


def test_redact_leaves_ordinary_text_alone() -> None:
    assert redact("password reset for seq 9 done") == "password reset for seq 9 done"
    assert redact('{"password": "x y"}') == '{"password": "***"}'
    register_secret("ab")  # too short to be a password: would blank ordinary words
    assert redact("tab") == "tab"


def test_text_format_and_reconfigure_does_not_duplicate(stream: io.StringIO) -> None:
    configure_logging("info", json=False, stream=stream)
    configure_logging("warning", json=False, stream=stream)
    log = logging.getLogger("clearing.test")
    log.info("dropped")
    log.warning("ssl_key_password=hunter2")
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("WARNING clearing.test: ssl_key_password=***")


def test_unknown_level_says_what_to_use() -> None:
    with pytest.raises(ValueError, match="use one of debug, info"):
        configure_logging("verbose", json=True)
