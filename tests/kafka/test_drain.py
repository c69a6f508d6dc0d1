"""``drain_fetched``: the daemon moves everything aiokafka has fetched into its read-ahead
buffer, in pieces, with the event loop run between pieces (so the open transaction's
round trips are not held up by record parsing). The consumer here is a stand-in that
hands out its records as aiokafka's ``getmany(max_records=...)`` does; the real one is
exercised by the daemon's tests against the broker."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from clearing.kafka import InputBuffer, InputRecord
from clearing.kafka._daemon import drain_fetched

RANK = {"fills": 0, "ticks": 1}


class FetchedRecords:
    """Records "fetched" per partition, given out at most ``max_records`` per call,
    partitions in order (as aiokafka's ``Fetcher.fetched_records``)."""

    def __init__(self, fetched: dict[TopicPartition, list[InputRecord]]) -> None:
        self.held = {tp: list(records) for tp, records in fetched.items() if records}
        self.calls: list[tuple[int, int]] = []  # (timeout_ms, records returned)
        self.arrival: asyncio.Future[dict[TopicPartition, list[InputRecord]]] | None = None

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        if not self.held and timeout_ms and self.arrival is not None:
            self.held = await self.arrival
        out: dict[TopicPartition, list[InputRecord]] = {}
        left = max_records
        for tp in list(self.held):
            taken, self.held[tp] = self.held[tp][:left], self.held[tp][left:]
            if not self.held[tp]:
                del self.held[tp]
            out[tp] = taken
            left -= len(taken)
            if not left:
                break
        self.calls.append((timeout_ms, max_records - left))
        return out


def _records(topic: str, n: int) -> list[InputRecord]:
    return [InputRecord(topic, 0, offset, offset, None, b"x") for offset in range(n)]


async def test_drains_every_fetched_record_in_chunks_and_lets_the_loop_run_between() -> None:
    fetched = {TopicPartition("fills", 0): _records("fills", 2300)}
    fetched[TopicPartition("ticks", 0)] = _records("ticks", 450)
    consumer = FetchedRecords(fetched)
    buffer = InputBuffer(RANK)
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    before = turns
    await drain_fetched(consumer, buffer, wait_ms=0, chunk_records=500)  # type: ignore[arg-type]
    ticker.cancel()

    assert buffer.count == 2750 and not consumer.held
    assert [n for _, n in consumer.calls] == [500, 500, 500, 500, 500, 250]
    # The loop ran between every two pieces: another task got a turn each time.
    assert turns - before >= len(consumer.calls) - 1
    batch = buffer.take(10_000, 10**9)
    assert sorted(r.offset for r in batch if r.topic == "fills") == list(range(2300))
    assert sorted(r.offset for r in batch if r.topic == "ticks") == list(range(450))


async def test_a_multiple_of_the_chunk_ends_with_one_empty_call() -> None:
    consumer = FetchedRecords({TopicPartition("fills", 0): _records("fills", 1000)})
    buffer = InputBuffer(RANK)
    await drain_fetched(consumer, buffer, wait_ms=0, chunk_records=500)  # type: ignore[arg-type]
    assert buffer.count == 1000
    assert consumer.calls == [(0, 500), (0, 500), (0, 0)]


async def test_waits_only_for_the_first_records() -> None:
    consumer = FetchedRecords({})
    consumer.arrival = asyncio.get_running_loop().create_future()
    buffer = InputBuffer(RANK)
    drain = asyncio.create_task(
        drain_fetched(consumer, buffer, wait_ms=100, chunk_records=500)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0)
    assert not drain.done()
    consumer.arrival.set_result({TopicPartition("fills", 0): _records("fills", 700)})
    await drain
    assert buffer.count == 700
    # The first call waited; the rest only took what was already there.
    assert consumer.calls == [(100, 500), (0, 200)]
