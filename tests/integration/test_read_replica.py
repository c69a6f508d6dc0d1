"""The read API on a hot standby against the real broker: a standby that has applied
the journal up to seq N answers ``/v1/`` with exactly the bytes the active and a replay
of the journal give at N, says it is a standby, and stays unready (``/readyz`` 503); once
promoted, the same server answers as the active."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clearing.engine import Engine
from clearing.kafka import EXIT_OK
from tests.integration.conftest import serve
from tests.integration.test_daemon import (
    TEST_TIMEOUT_S,
    Running,
    flat,
    journal_until,
    produce,
    scenario,
    sequenced_count,
)
from tests.integration.test_standby import as_role
from tests.ops.http_client import request

pytestmark = pytest.mark.kafka

_ACCOUNTS = ("long03", "short01")


async def test_a_standby_answers_reads_like_the_active_and_a_replay(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(2 * TEST_TIMEOUT_S):
        active = await serve(tmp_path, kafka_bootstrap, "replica")
        items = flat(scenario(seed=14, groups=6))
        await produce(active.config, items)
        last_seq = sequenced_count(items)
        await active.run.wait_seq(last_seq)
        standby = Running(as_role(active.config, "standby", tmp_path / "b"))
        await standby.wait_seq(last_seq)  # followed: nothing more comes in
        port = standby.daemon.http_port
        assert port is not None and not standby.daemon.ready

        readyz = await request(port, "/readyz")
        assert readyz.status == 503, readyz.body
        assert b"standby" in readyz.body
        journal = await journal_until(active.config, last_seq)
        engine = Engine()
        for record in journal:
            engine.apply_encoded(record.payload)
        for account in _ACCOUNTS:
            path = f"/v1/accounts/{account}"
            on_standby = await request(port, path, timeout_s=30.0)
            on_active = await request(active.port, path, timeout_s=30.0)
            assert on_standby.status == on_active.status == 200, on_standby.body
            assert on_standby.headers["clearing-role"] == "standby"
            assert float(on_standby.headers["clearing-standby-lag-seconds"]) >= 0
            assert on_active.headers["clearing-role"] == "active"
            view = engine.account_view(account)
            assert view is not None
            replayed = b'{"seq":%d,"account":%s}\n' % (last_seq, view)
            assert on_standby.body == on_active.body == replayed

        assert await active.run.stop() == EXIT_OK  # hand over: the standby promotes
        await standby.wait_ready(timeout_s=30)
        promoted = await request(port, f"/v1/accounts/{_ACCOUNTS[0]}", timeout_s=30.0)
        assert promoted.status == 200 and promoted.headers["clearing-role"] == "active"
        assert (await request(port, "/readyz")).status == 200
        assert await standby.stop() == EXIT_OK
