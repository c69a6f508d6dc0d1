"""The committed-reads queue: answers computed at a batch boundary, handed over only once
the open transaction commits, failed if it does not, and bounded per boundary."""

from __future__ import annotations

import asyncio

import pytest

from clearing.engine import make_engine
from clearing.ops.reads import CommittedReads, CostBoundedCache, ReadAborted


async def test_an_answer_waits_for_the_open_transaction() -> None:
    reads = CommittedReads()
    engine = make_engine("python")
    engine.seq = 7  # the engine has applied the batch the open transaction carries
    pending = asyncio.create_task(reads.run(lambda e: e.seq * 2))
    await asyncio.sleep(0)
    commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert reads.wanted
    reads.answer(engine, after=commit)
    assert not reads.wanted  # computed and dequeued, ...
    await asyncio.sleep(0.01)
    assert not pending.done()  # ... but not handed over before the commit
    commit.set_result(None)
    assert await pending == (7, 14)


async def test_an_aborted_transaction_fails_the_reads_taken_after_it() -> None:
    reads = CommittedReads()
    pending = asyncio.create_task(reads.run(lambda e: e.seq))
    await asyncio.sleep(0)
    commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    reads.answer(make_engine("python"), after=commit)
    commit.set_exception(RuntimeError("fenced"))
    with pytest.raises(ReadAborted):
        await pending
    commit.exception()  # retrieved: the daemon's loop raises it in its own place


async def test_one_boundary_spends_at_most_its_budget() -> None:
    ticks = iter(range(1000))
    # Each query "takes" 1 ms on this clock (and the 2 % share of the time since the
    # last call adds too little to let a fourth one in).
    reads = CommittedReads(budget_s=0.0025, clock=lambda: next(ticks) / 1000)
    engine = make_engine("python")
    waiting = [asyncio.create_task(reads.run(lambda e, n=n: n)) for n in range(5)]
    await asyncio.sleep(0)
    reads.answer(engine)
    await asyncio.sleep(0)
    assert [task.done() for task in waiting] == [True, True, True, False, False]
    assert reads.wanted  # the rest waits for the next boundary
    reads.answer(engine)
    assert [(await task).value for task in waiting] == [0, 1, 2, 3, 4]


async def test_a_failing_query_fails_only_its_request() -> None:
    reads = CommittedReads()
    bad = asyncio.create_task(reads.run(lambda e: 1 // 0))
    good = asyncio.create_task(reads.run(lambda e: "ok"))
    await asyncio.sleep(0)
    reads.answer(make_engine("python"))
    with pytest.raises(ZeroDivisionError):
        await bad
    assert (await good).value == "ok"


async def test_a_cached_whole_ledger_query_is_computed_once_per_boundary() -> None:
    calls: list[int] = []
    cache = CostBoundedCache(lambda e: calls.append(e.seq) or e.seq, 10.0, 60.0)
    reads = CommittedReads()
    engine = make_engine("python")
    first = [asyncio.create_task(cache.get(reads, 0)) for _ in range(3)]
    await asyncio.sleep(0)
    reads.answer(engine)
    assert [(await task).seq for task in first] == [0, 0, 0] and calls == [0]
    engine.seq = 5
    # Too soon to recompute (60 s interval): the old answer, labelled with its own seq.
    assert (await cache.get(reads, 5)).seq == 0 and calls == [0]


async def test_queued_requests_reuse_the_last_answer_across_boundaries() -> None:
    """Requests that queued while a recomputation was allowed, answered one per boundary
    while the ledger moves on, still cost one computation per interval."""
    calls: list[int] = []
    cache = CostBoundedCache(lambda e: calls.append(e.seq) or e.seq, 10.0, 60.0)
    reads = CommittedReads(budget_s=0.0)  # one query per boundary
    engine = make_engine("python")
    waiting = [asyncio.create_task(cache.get(reads, 0)) for _ in range(3)]
    await asyncio.sleep(0)
    for seq in (0, 4, 9):
        engine.seq = seq
        reads.answer(engine)
        await asyncio.sleep(0)
    assert [(await task).seq for task in waiting] == [0, 0, 0]
    assert calls == [0]
