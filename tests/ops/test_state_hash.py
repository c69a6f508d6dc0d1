"""``GET /state-hash``: answered only at a batch boundary, cached per committed seq, and
equal to the hash of the state ``clearing replay --state`` writes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.engine import Engine
from clearing.ops import state_hash as state_hash_module
from clearing.ops.http import OpsServer
from clearing.ops.metrics import Metrics
from clearing.ops.state_hash import CommittedStateHash
from tests.ops.http_client import request

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs/examples/worked-example.jsonl"


def _engine(inputs: int) -> Engine:
    engine = Engine()
    for line in EXAMPLE.read_bytes().splitlines()[:inputs]:
        engine.apply_encoded(line)
    return engine


def _replayed_hash(tmp_path: Path, inputs: int) -> str:
    source = tmp_path / f"first{inputs}.jsonl"
    source.write_bytes(b"\n".join(EXAMPLE.read_bytes().splitlines()[:inputs]) + b"\n")
    state = tmp_path / "state.json"
    argv = ["replay", str(source), "--state", str(state), "--events", str(tmp_path / "e"), "-q"]
    assert main(argv) == 0
    return hashlib.sha256(state.read_bytes()).hexdigest()


async def test_a_request_waits_for_the_loop_and_gets_the_replay_hash(tmp_path: Path) -> None:
    hashes = CommittedStateHash()
    metrics = Metrics()
    metrics.set_ready(True)
    engine = _engine(5)
    async with OpsServer(metrics, port=0, state_hash=lambda: hashes.get(engine.seq)) as server:
        pending = asyncio.create_task(request(server.port, "/state-hash"))
        while not hashes.wanted:  # the request is parked until the loop answers
            await asyncio.sleep(0.01)
        assert not pending.done()
        hashes.answer(engine)  # what the daemon's loop does at a batch boundary
        response = await pending
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    body = json.loads(response.body)
    assert body == {
        "seq": 5,
        "state_sha256": _replayed_hash(tmp_path, 5),
        "committed_seq": 5,
    }


async def test_cached_per_seq_and_recomputed_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashes = CommittedStateHash()
    engine = _engine(5)
    waiting = asyncio.create_task(hashes.get(5))
    await asyncio.sleep(0)
    hashes.answer(engine)
    first = await waiting
    assert await hashes.get(5) == first  # same seq: served from the cache, no wait
    engine.apply_encoded(EXAMPLE.read_bytes().splitlines()[5])
    # Within the interval a newer seq still gets the cached hash, labelled with its seq.
    too_soon = await hashes.get(6)
    assert too_soon.seq == 5 and too_soon.committed_seq == 6
    monkeypatch.setattr(state_hash_module, "_MIN_INTERVAL_S", 0.0)
    hashes = CommittedStateHash()
    waiting = asyncio.create_task(hashes.get(6))
    await asyncio.sleep(0)
    hashes.answer(engine)
    assert (await waiting).seq == 6


async def test_not_ready_and_no_ledger() -> None:
    hashes = CommittedStateHash()
    metrics = Metrics()
    async with OpsServer(metrics, port=0, state_hash=lambda: hashes.get(0)) as server:
        response = await request(server.port, "/state-hash")
        assert response.status == 503 and response.body.startswith(b"not ready")
    async with OpsServer(Metrics(), port=0) as server:
        assert (await request(server.port, "/state-hash")).status == 404
