"""The read API (``/v1/``) on a small ledger, on both cores: every answer matches the
OpenAPI description in docs/read-api.yaml, bad requests get a 4xx JSON error, and the
bearer token is enforced and never logged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from jsonschema import Draft202012Validator

from clearing.engine import EngineCore, make_engine, native_available
from clearing.ops.http import OpsServer
from clearing.ops.metrics import Metrics
from clearing.ops.read_api import ReadApi
from clearing.ops.reads import CommittedReads
from tests.ops.http_client import Response, request

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs/read-api.yaml").read_text())
CORES = [
    "python",
    pytest.param(
        "native",
        marks=pytest.mark.skipif(
            not native_available() and not os.environ.get("CI"),
            reason="clearing_native is not installed (pip install ./native)",
        ),
    ),
]
TOKEN = "s3cret-token-value"


def conforms(body: bytes, schema: str) -> dict[str, Any]:
    """The decoded body, after checking it against a component schema of the spec."""
    decoded = json.loads(body)
    root = {"$ref": f"#/components/schemas/{schema}", "components": SPEC["components"]}
    errors = sorted(Draft202012Validator(root).iter_errors(decoded), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    return decoded  # type: ignore[no-any-return]


def ledger(core: str) -> EngineCore:
    engine = make_engine(core)
    lines = [
        {"type": "market", "market": "BTC", "imr": "0.1", "mmr": "0.05", "liq_fee": "0.01",
         "max_oracle_move": "0.2"},
        {"type": "deposit", "account": "alice", "amount": "200"},
        {"type": "deposit", "account": "bob", "amount": "5000"},
        {"type": "deposit", "account": "Ω/ü", "amount": "50"},
        {"type": "deposit", "account": "insurance-fund", "amount": "20"},
        {"type": "oracle", "market": "BTC", "price": "100"},
        {"type": "fill", "fill_id": "f1", "market": "BTC", "price": "100", "qty": "10",
         "buyer": "alice", "seller": "bob", "buyer_fee": "0.5"},
        {"type": "fill", "fill_id": "f2", "market": "BTC", "price": "100", "qty": "1",
         "buyer": "Ω/ü", "seller": "bob"},
        {"type": "book", "market": "BTC", "bids": [["99", "1"], ["98", "2"]], "asks": []},
        {"type": "oracle", "market": "BTC", "price": "200"},  # held by the guard
    ]  # fmt: skip
    for line in lines:
        engine.apply(msgspec.json.encode(line))
    return engine


@contextlib.asynccontextmanager
async def serving(
    engine: EngineCore,
    token: str | None = None,
    host: str = "127.0.0.1",
    ready: bool = True,
    answering: bool = True,
) -> AsyncIterator[int]:
    """An ops server with a read API over ``engine``, and a task standing in for the
    daemon's loop (answering the queue at every turn, unless ``answering`` is False: a
    loop that never reaches a batch boundary)."""
    reads = CommittedReads()
    metrics = Metrics()
    metrics.set_ready(ready, "" if ready else "recovering")
    api = ReadApi(reads, lambda: engine.seq, token=token, host=host)

    async def loop() -> None:
        while True:
            if answering and reads.wanted:
                reads.answer(engine)
            await asyncio.sleep(0.001)

    turning = asyncio.create_task(loop())
    try:
        async with OpsServer(metrics, port=0, read_api=api) as server:
            yield server.port
    finally:
        turning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await turning


async def get(port: int, path: str, token: str | None = None) -> Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    return await request(port, path, headers=headers)


@pytest.mark.parametrize("core", CORES)
async def test_every_route_answers_per_the_spec(core: str) -> None:
    engine = ledger(core)
    async with serving(engine) as port:
        answer = await get(port, "/v1/accounts/alice")
        assert answer.status == 200 and answer.headers["content-type"] == "application/json"
        alice = conforms(answer.body, "AccountAnswer")
        assert alice["seq"] == engine.seq == 10
        assert alice["account"]["cash"] == "-800.5"
        assert alice["account"]["positions"]["BTC"]["mark"] == "100"  # 200 is held

        unicode_id = await get(port, "/v1/accounts/%CE%A9%2F%C3%BC")
        assert conforms(unicode_id.body, "AccountAnswer")["account"]["account"] == "Ω/ü"

        market = conforms((await get(port, "/v1/markets/BTC?depth=1")).body, "MarketAnswer")
        assert market["market"]["held"] == "200" and market["market"]["bids"] == [["99", "1"]]
        assert market["market"]["open_interest"] == "11"

        system = conforms((await get(port, "/v1/system")).body, "SystemAnswer")
        assert system["accounts"]["insurance-fund"]["cash"] == "20"
        assert system["accounts"]["fee-pool"]["cash"] == "0.5"

        nearest = await get(port, "/v1/rankings/nearest-liquidation?limit=1")
        ranked = conforms(nearest.body, "NearestAnswer")
        assert [a["account"] for a in ranked["accounts"]] == ["alice"]
        assert ranked["seq"] == ranked["committed_seq"] == 10

        largest = await get(port, "/v1/rankings/largest-positions?market=BTC")
        positions = conforms(largest.body, "LargestAnswer")["positions"]
        assert positions == [
            {"account": "bob", "qty": "-11"},
            {"account": "alice", "qty": "10"},
            {"account": "Ω/ü", "qty": "1"},
        ]
        head = await request(port, "/v1/accounts/alice", method="HEAD")
        assert head.status == 200 and head.body == b""


BAD_REQUESTS = [
    ("/v1/accounts/nobody", 404, "unknown account 'nobody'"),
    ("/v1/accounts/alice?x=1", 400, "unknown query parameter 'x'"),
    ("/v1/markets/ETH", 404, "unknown market 'ETH'"),
    ("/v1/markets/BTC?depth=abc", 400, "'depth' must be an integer from 0 to 1000"),
    ("/v1/markets/BTC?depth=1001", 400, "'depth' must be an integer from 0 to 1000"),
    ("/v1/markets/BTC?depth=-1", 400, "'depth' must be an integer"),
    ("/v1/markets/BTC?depth=1&depth=2", 400, "'depth' given twice"),
    ("/v1/rankings/nearest-liquidation?limit=0", 400, "'limit' must be an integer from 1"),
    ("/v1/rankings/nearest-liquidation?limit=101", 400, "from 1 to 100"),
    ("/v1/rankings/largest-positions", 400, "'market' is required"),
    ("/v1/rankings/largest-positions?market=ETH", 404, "unknown market 'ETH'"),
    ("/v1/rankings/largest-positions?market=BTC&limit=x", 400, "'limit' must be"),
    ("/v1/nope", 404, "no such route"),
    ("/v1/accounts/", 404, "no such route"),
]


@pytest.mark.parametrize("core", CORES)
async def test_bad_requests_get_a_json_4xx(core: str) -> None:
    async with serving(ledger(core)) as port:
        for path, status, message in BAD_REQUESTS:
            answer = await get(port, path)
            assert answer.status == status, (path, answer.body)
            assert answer.headers["content-type"] == "application/json"
            assert message in conforms(answer.body, "Error")["error"], path


async def test_not_ready_and_no_ledger() -> None:
    async with serving(ledger("python"), ready=False) as port:
        answer = await get(port, "/v1/system")
        assert answer.status == 503
        assert "not ready: recovering" in conforms(answer.body, "Error")["error"]
    async with OpsServer(Metrics(), port=0) as server:
        assert (await request(server.port, "/v1/system")).status == 404


async def test_the_token_is_required_checked_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(ledger("python"), token=TOKEN, host="0.0.0.0") as port:
        missing = await get(port, "/v1/system")
        assert missing.status == 401 and "missing" in conforms(missing.body, "Error")["error"]
        wrong = await get(port, "/v1/system", token=TOKEN + "x")
        assert wrong.status == 401 and "wrong" in conforms(wrong.body, "Error")["error"]
        basic = await request(port, "/v1/system", headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status == 401
        right = await get(port, "/v1/system", token=TOKEN)
        assert right.status == 200
        assert (await request(port, "/metrics")).status == 200  # probes need no token
        for answer in (missing, wrong, basic, right):
            assert TOKEN.encode() not in answer.body
    assert TOKEN not in caplog.text


async def test_off_loopback_without_a_token_is_refused() -> None:
    async with serving(ledger("python"), host="0.0.0.0") as port:
        answer = await get(port, "/v1/system")
        assert answer.status == 403
        assert "read_token" in conforms(answer.body, "Error")["error"]
    async with serving(ledger("python"), host="127.0.0.1") as port:
        assert (await get(port, "/v1/system")).status == 200


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with serving(ledger("python")) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for path in ("/v1/system", "/v1/accounts/alice", "/v1/accounts/nobody"):
                writer.write(f"GET {path} HTTP/1.1\r\nConnection: keep-alive\r\n\r\n".encode())
                head, body = await _read_response(reader)
                assert b"Connection: keep-alive" in head and json.loads(body)
            writer.write(b"GET /v1/system HTTP/1.1\r\n\r\n")  # no keep-alive: the last one
            head, body = await _read_response(reader)
            assert b"Connection: close" in head and conforms(body, "SystemAnswer")
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        finally:
            writer.close()


def test_the_token_comes_from_a_file_or_the_environment_and_stays_hidden(
    tmp_path: Path,
) -> None:
    from clearing.errors import ConfigError
    from clearing.ops.config import load_config

    base = {"CLEARING_LEDGER_ID": "t"}
    token_file = tmp_path / "read-token"
    token_file.write_text(TOKEN + "\n")
    from_file = load_config(
        None, environ={**base, "CLEARING_HTTP_READ_TOKEN_FILE": str(token_file)}
    )
    assert from_file.http.read_token is not None and from_file.http.read_token.get() == TOKEN
    from_env = load_config(None, environ={**base, "CLEARING_HTTP_READ_TOKEN": TOKEN})
    assert from_env.http.read_token is not None and from_env.http.read_token.get() == TOKEN
    for config in (from_file, from_env):
        assert TOKEN not in repr(config) and TOKEN not in json.dumps(config.redacted())
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match=r"read_token_file.*empty first line"):
        load_config(None, environ={**base, "CLEARING_HTTP_READ_TOKEN_FILE": str(token_file)})
    both = {**base, "CLEARING_HTTP_READ_TOKEN": TOKEN, "CLEARING_HTTP_READ_TOKEN_FILE": "x"}
    with pytest.raises(ConfigError, match="read_token or read_token_file, not both"):
        load_config(None, environ=both)


async def test_pipelined_requests_are_answered_in_order() -> None:
    paths = ["/v1/accounts/alice", "/v1/nope", "/v1/accounts/bob", "/v1/system"]
    async with serving(ledger("python")) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"".join(
                    f"GET {path} HTTP/1.1\r\nConnection: keep-alive\r\n\r\n".encode()
                    for path in paths
                )
            )
            answers = [await _read_response(reader) for _ in paths]
        finally:
            writer.close()
    assert [head.split(b" ")[1] for head, _ in answers] == [b"200", b"404", b"200", b"200"]
    assert conforms(answers[0][1], "AccountAnswer")["account"]["account"] == "alice"
    assert conforms(answers[2][1], "AccountAnswer")["account"]["account"] == "bob"
    assert conforms(answers[3][1], "SystemAnswer")


async def test_a_read_the_loop_never_answers_gets_503(monkeypatch: pytest.MonkeyPatch) -> None:
    from clearing.ops import http

    monkeypatch.setattr(http, "WAIT_S", 0.2)
    monkeypatch.setattr(http, "_SWEEP_INTERVAL_S", 0.05)
    async with serving(ledger("python"), answering=False) as port:
        answer = await get(port, "/v1/accounts/alice")
    assert answer.status == 503
    assert "batch boundary" in conforms(answer.body, "Error")["error"]


async def test_an_idle_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    from clearing.ops import http

    monkeypatch.setattr(http, "_READ_TIMEOUT_S", 0.2)
    monkeypatch.setattr(http, "_SWEEP_INTERVAL_S", 0.05)
    async with serving(ledger("python")) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /v1/system HTTP/1.1\r\nConnection: keep-alive\r\n")  # no end
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing sent
        finally:
            writer.close()


def _bench_kafka() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "tools" / "bench_kafka.py"
    spec = importlib.util.spec_from_file_location("bench_kafka", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("connections", [2, 500])
async def test_the_benchmarks_read_client_gets_every_answer(connections: int) -> None:
    """tools/bench_kafka.py's read client, pipelined on a few connections or one request
    per connection: every request it sends is answered, in order, with a 200."""
    paths = ["/v1/accounts/alice", "/v1/markets/BTC", "/v1/system", "/v1/accounts/bob"]
    async with serving(ledger("python")) as port:
        load = _bench_kafka().ReadLoad(port, 500, paths, 0.4, connections)
        await load.run(asyncio.create_task(load.connect()))
        for _ in range(100):
            if not load.waiting:
                break
            await asyncio.sleep(0.02)
        result = await load.stop()
    # At most 200 due in 0.4 s (the deadline may cut the last few).
    assert list(result["statuses"]) == ["200"] and 150 <= result["answered"] <= 200
    assert result["statuses"]["200"] == result["answered"]
    assert result["unanswered_at_stop"] == 0 and result["skipped_queue_full"] == 0


async def test_a_client_that_shuts_its_side_still_gets_its_answer() -> None:
    async with serving(ledger("python")) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /v1/accounts/alice HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(), 5)  # to EOF: closed after it
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert conforms(body, "AccountAnswer")["account"]["account"] == "alice"
