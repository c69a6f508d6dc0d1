"""The read API of a real daemon under load: every answer names a committed seq, and its
content equals a replay of the journal up to exactly that seq (never a state half-way
through a batch, never one not yet committed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from clearing.engine import Engine
from clearing.ops.read_api import MAX_LIMIT
from tests.integration.conftest import feed_slowly, serve
from tests.integration.test_daemon import (
    TEST_TIMEOUT_S,
    flat,
    scenario,
    sequenced_count,
)
from tests.ops.http_client import request

pytestmark = pytest.mark.kafka

_ROUTES = (
    "/v1/accounts/long03",
    "/v1/accounts/short01",
    "/v1/markets/BTC-PERP?depth=5",
    "/v1/rankings/nearest-liquidation?limit=100",
)


def _replayed(engine: Engine, path: str) -> dict[str, Any]:
    """What ``path`` shows for ``engine``'s state, without the stamps."""
    if path.startswith("/v1/accounts/"):
        view = engine.account_view(path.rsplit("/", 1)[1])
        return {"account": msgspec.json.decode(view)} if view is not None else {}
    if path.startswith("/v1/markets/"):
        return {"market": msgspec.json.decode(engine.market_view("BTC-PERP", 5))}  # type: ignore[arg-type]
    ranked = msgspec.json.decode(engine.rankings(MAX_LIMIT))
    return {"accounts": ranked["nearest_liquidation"]}


async def test_answers_under_load_equal_a_replay_at_their_seq(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clearing.ops import read_api

    monkeypatch.setattr(read_api, "_RANKINGS_MIN_INTERVAL_S", 0.0)  # recompute when asked
    async with asyncio.timeout(4 * TEST_TIMEOUT_S):
        daemon = await serve(tmp_path, kafka_bootstrap, "reads")
        run, port = daemon.run, daemon.port
        items = flat(scenario(groups=8, trades=200))
        feeding = asyncio.create_task(feed_slowly(daemon.config, items))
        answers: list[tuple[str, dict[str, Any]]] = []
        turn = 0
        while not feeding.done() or len(answers) < 3 * len(_ROUTES):
            path = _ROUTES[turn % len(_ROUTES)]
            turn += 1
            response = await request(port, path, timeout_s=30.0)
            if response.status == 404 and "rankings" not in path:
                continue  # not deposited (or created) yet
            assert response.status == 200, response.body
            served = json.loads(response.body)
            # Handed over only after the commit: the daemon is at or past that seq.
            assert served["seq"] <= run.daemon.committed_seq
            answers.append((path, served))
        await feeding
        last_seq = sequenced_count(items)
        journal = await daemon.stop_at(last_seq)

    seqs = sorted({served["seq"] for _, served in answers})
    print(f"\nread API answers at {len(seqs)} seqs of {last_seq}")
    assert len(seqs) >= 3, seqs
    wanted: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for path, served in answers:
        wanted.setdefault(served["seq"], []).append((path, served))
    engine = Engine()
    checked = 0
    for path, served in wanted.pop(0, []):  # before the first input
        assert {k: v for k, v in served.items() if k not in ("seq", "committed_seq")} == (
            _replayed(engine, path)
        )
        checked += 1
    for record in journal:
        engine.apply_encoded(record.payload)
        for path, served in wanted.pop(record.seq, []):
            content = {k: v for k, v in served.items() if k not in ("seq", "committed_seq")}
            assert content == _replayed(engine, path), (record.seq, path)
            checked += 1
    assert not wanted and checked == len(answers)
