"""The read API on a standby (a read replica): readable while it follows the journal,
though ``/readyz`` stays 503; every answer says who gave it; promotion refuses new reads
with the reason until the promoted process is ready."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from clearing.engine import EngineCore
from clearing.ops.http import OpsServer
from clearing.ops.metrics import Metrics
from clearing.ops.read_api import ReadApi
from clearing.ops.reads import CommittedReads
from tests.ops.http_client import request
from tests.ops.test_read_api import _bench_kafka, conforms, ledger


def test_readable_on_an_active_once_ready_and_on_a_standby_once_following() -> None:
    metrics = Metrics()
    assert not metrics.readable  # starting
    metrics.set_role("standby")
    metrics.set_ready(False, "standby: recovering")
    assert not metrics.readable
    metrics.set_ready(False, "standby: following the journal")
    metrics.set_following()
    assert metrics.readable and not metrics.ready
    metrics.set_ready(False, "promoting: catching up with the journal")
    assert not metrics.readable  # a change of readiness ends the replica's reads
    metrics.set_role("active")
    metrics.set_ready(True)
    assert metrics.readable and metrics.ready
    metrics.set_ready(False, "shutting down")
    assert not metrics.readable


@contextlib.asynccontextmanager
async def standby_serving(engine: EngineCore, metrics: Metrics) -> AsyncIterator[int]:
    """An ops server with a read API over ``engine``, its queue answered every turn as
    the standby's follow loop does after each poll."""
    reads = CommittedReads()
    api = ReadApi(reads, lambda: engine.seq)

    async def follow() -> None:
        while True:
            if reads.wanted:
                reads.answer(engine)
            await asyncio.sleep(0.001)

    following = asyncio.create_task(follow())
    try:
        async with OpsServer(metrics, port=0, read_api=api) as server:
            yield server.port
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following


async def test_a_standby_answers_reads_says_so_and_stays_unready() -> None:
    engine = ledger("python")
    metrics = Metrics()
    metrics.set_role("standby")
    metrics.set_ready(False, "standby: following the journal")
    metrics.set_following()
    metrics.set_standby_lag(3, 0.25, in_sync=True)
    async with standby_serving(engine, metrics) as port:
        answer = await request(port, "/v1/accounts/alice")
        assert answer.status == 200
        assert conforms(answer.body, "AccountAnswer")["seq"] == engine.seq
        assert answer.headers["clearing-role"] == "standby"
        assert answer.headers["clearing-standby-lag-seconds"] == "0.250"
        readyz = await request(port, "/readyz")
        assert readyz.status == 503 and b"standby: following the journal" in readyz.body

        metrics.set_ready(False, "promoting: catching up with the journal")
        refused = await request(port, "/v1/accounts/alice")
        assert refused.status == 503
        assert "not ready: promoting" in json.loads(refused.body)["error"]

        metrics.set_role("active")
        metrics.set_ready(True)
        promoted = await request(port, "/v1/accounts/alice")
        assert promoted.status == 200 and promoted.body == answer.body
        assert promoted.headers["clearing-role"] == "active"
        assert "clearing-standby-lag-seconds" not in promoted.headers
        assert (await request(port, "/readyz")).status == 200


async def test_the_benchmark_reads_the_standby_once_it_follows() -> None:
    """tools/bench_kafka.py starts its read client on a standby only once the standby's
    read API answers, and refuses --reads-to standby without a standby and a rate."""
    bench = _bench_kafka()
    metrics = Metrics()
    metrics.set_role("standby")
    metrics.set_ready(False, "standby: recovering")
    async with standby_serving(ledger("python"), metrics) as port:
        assert not await asyncio.to_thread(bench.readable, port)
        metrics.set_ready(False, "standby: following the journal")
        metrics.set_following()
        assert await asyncio.to_thread(bench.readable, port)
    for argv in (["--read-rps", "10", "--reads-to", "standby"], ["--standby", "--read-rps", "10"]):
        with pytest.raises(SystemExit) as refused:
            bench.main(argv)
        assert refused.value.code == 2
