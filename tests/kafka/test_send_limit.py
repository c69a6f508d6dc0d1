"""The send limit bounds the time without progress, not a batch's total send time.

``ProgressDeadline`` is the rule on explicit times; ``progress_timeout`` applies it to an
``async with`` body; ``Transactions.commit`` applies it to a batch's sends, here through
a stand-in producer whose acknowledgements the test paces (the real broker: see
``test_a_batch_slower_than_the_send_limit_that_keeps_moving_commits`` in
tests/integration/test_daemon.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import ProducerFenced

from clearing.kafka import EXIT_FAILURE, EXIT_FENCED
from clearing.kafka._batch import BatchPlan, OutMessage
from clearing.kafka._exits import DaemonExit
from clearing.kafka._progress import (
    CHECKS_PER_LIMIT,
    NoProgress,
    ProgressDeadline,
    progress_timeout,
)
from clearing.kafka._transaction import Transactions, _Answered
from clearing.ops.config import Config, KafkaConfig
from clearing.ops.metrics import Metrics

# ---------------------------------------------------------------------- the rule


def test_no_progress_trips_the_deadline_limit_after_the_start() -> None:
    deadline = ProgressDeadline(2.0, start_s=100.0)
    assert deadline.expires_at_s == 102.0
    deadline.observe(0, 101.5)  # looked, nothing moved
    assert not deadline.expired(101.999)
    assert deadline.expired(102.0)


def test_progress_resets_the_deadline() -> None:
    deadline = ProgressDeadline(2.0, start_s=100.0)
    # Long past the start-based deadline, but never 2 s without progress.
    for count, now_s in ((5, 101.5), (9, 103.0), (10, 104.9), (30, 106.8)):
        assert not deadline.expired(now_s)
        deadline.observe(count, now_s)
    assert deadline.progress == 30
    assert deadline.expires_at_s == 108.8
    assert not deadline.expired(108.7)
    assert deadline.expired(108.8)


def test_an_unchanged_count_is_no_progress() -> None:
    deadline = ProgressDeadline(2.0, start_s=100.0)
    deadline.observe(7, 101.0)
    deadline.observe(7, 102.5)
    assert deadline.expires_at_s == 103.0
    assert deadline.expired(103.0)


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ProgressDeadline(0.0, start_s=0.0)


# ------------------------------------------------------------------- the async bound

LIMIT_S = 0.4
SLACK_S = LIMIT_S / CHECKS_PER_LIMIT + 0.3  # the check interval, plus scheduling under load


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


async def test_a_body_that_keeps_progressing_outlives_the_limit() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    counter = Counter()
    async with progress_timeout(LIMIT_S, counter):
        while loop.time() - started < 4 * LIMIT_S:
            await asyncio.sleep(LIMIT_S / 8)
            counter.count += 1
    assert loop.time() - started >= 4 * LIMIT_S
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_body_that_stops_progressing_is_cancelled_limit_after_its_last_progress() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    counter = Counter()
    last_progress = started
    with pytest.raises(NoProgress) as raised:
        async with progress_timeout(LIMIT_S, counter):
            for _ in range(6):
                await asyncio.sleep(LIMIT_S / 3)
                last_progress = loop.time()
                counter.count += 1
            await asyncio.Event().wait()  # stuck
    stopped = loop.time()
    assert raised.value.progress == 6
    assert LIMIT_S <= stopped - last_progress < LIMIT_S + SLACK_S
    assert stopped - started >= 2 * LIMIT_S  # longer than the limit in total
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_body_without_any_progress_is_cancelled_after_the_limit() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NoProgress) as raised:
        async with progress_timeout(LIMIT_S, Counter()):
            await asyncio.Event().wait()
    assert raised.value.progress == 0
    assert LIMIT_S <= loop.time() - started < LIMIT_S + SLACK_S


async def test_the_bodys_own_timeout_error_passes_through() -> None:
    with pytest.raises(TimeoutError) as raised:
        async with progress_timeout(LIMIT_S, Counter()):
            raise TimeoutError("from the body")
    assert type(raised.value) is TimeoutError


def test_answered_counts_done_sends_in_any_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(6)]
        answered = _Answered(futures)
        assert answered() == 0
        futures[0].set_result(None)
        futures[3].set_result(None)
        assert answered() == 2
        futures[1].set_exception(RuntimeError("an error is an answer too"))
        futures[1].exception()
        futures.append(loop.create_future())  # the batch is still being sent
        assert answered() == 3
        for future in futures:
            if not future.done():
                future.set_result(None)
        assert answered() == 7
    finally:
        loop.close()


# ---------------------------------------------------------- a batch's sends, paced


class Delivered:
    """What aiokafka's delivery future resolves to (only ``offset`` is read)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


class PacedProducer:
    """A transactional producer stand-in: acknowledges one send per ``ack_every_s``, in
    order, until ``stall_after`` acknowledgements (None: never stalls)."""

    def __init__(self, ack_every_s: float, stall_after: int | None = None) -> None:
        self.ack_every_s = ack_every_s
        self.stall_after = stall_after
        self.pending: list[asyncio.Future[Any]] = []
        self.acked = 0
        self.committed = False
        self._acker: asyncio.Task[None] | None = None

    async def begin_transaction(self) -> None:
        self._acker = asyncio.create_task(self._ack())

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    async def _ack(self) -> None:
        while self.stall_after is None or self.acked < self.stall_after:
            await asyncio.sleep(self.ack_every_s)
            if self.acked < len(self.pending):
                self.pending[self.acked].set_result(Delivered(self.acked))
                self.acked += 1

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        pass

    async def commit_transaction(self) -> None:
        self.committed = True

    async def abort_transaction(self) -> None:
        pass

    def close(self) -> None:
        if self._acker is not None:
            self._acker.cancel()


def plan_of(messages: int) -> BatchPlan:
    journal = [OutMessage("j", 0, None, b"j", [])]
    events = [OutMessage("e", None, b"k", b"e", []) for _ in range(messages - 1)]
    return BatchPlan(
        journal=journal, events=events, dlq=[], offsets={}, first_seq=1, last_seq=1,
        head_hash=b"", applied=[], kinds=b"", sources=[], outputs=[], oversized=0,
        rejects=0, last_timestamp_ms=0,
    )  # fmt: skip


def transactions(producer: PacedProducer, request_timeout_ms: int) -> Transactions:
    config = Config(
        ledger_id="send-limit", kafka=KafkaConfig(request_timeout_ms=request_timeout_ms)
    )
    metrics = Metrics(process_collectors=False)
    return Transactions(config, metrics, producer, None)  # type: ignore[arg-type]


async def test_a_batch_whose_sends_take_longer_than_the_limit_but_keep_moving_commits() -> None:
    # Limit 2 x 100 ms; 40 sends acknowledged every 20 ms take 0.8 s in total.
    producer = PacedProducer(ack_every_s=0.02)
    txns = transactions(producer, request_timeout_ms=100)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        assert await txns.commit(1, plan_of(40)) == 0
    finally:
        producer.close()
    assert loop.time() - started > 2 * txns.stuck_after_s
    assert producer.committed and producer.acked == 40 and not txns.stuck


async def test_a_batch_whose_sends_stop_moving_exits_1_naming_the_bound() -> None:
    producer = PacedProducer(ack_every_s=0.02, stall_after=10)
    txns = transactions(producer, request_timeout_ms=100)
    try:
        with pytest.raises(DaemonExit) as raised:
            await txns.commit(7, plan_of(40))
    finally:
        producer.close()
    exit_ = raised.value
    assert exit_.code == EXIT_FAILURE and txns.stuck and not producer.committed
    text = str(exit_)
    assert "batch 7 (seq 1..1) timed out: its sends did not complete within 0.2 s" in text
    assert "(10 of 40 sent were answered)" in text
    assert "not committed" in text and "\n" not in text


# ------------------------------------------- the one bound on a batch's total time


class AbortedByTheCoordinator(PacedProducer):
    """Acknowledges every send, then the commit finds the producer fenced: what the
    coordinator's abort of a transaction older than its timeout looks like."""

    async def commit_transaction(self) -> None:
        raise ProducerFenced()


async def test_a_batch_outliving_the_transaction_timeout_says_so_and_what_to_raise() -> None:
    producer = AbortedByTheCoordinator(ack_every_s=0.02)
    config = Config(
        ledger_id="send-limit",
        kafka=KafkaConfig(request_timeout_ms=100, transaction_timeout_ms=300),
    )
    txns = Transactions(config, Metrics(process_collectors=False), producer, None)  # type: ignore[arg-type]
    try:
        with pytest.raises(DaemonExit) as raised:
            await txns.commit(3, plan_of(40))  # 0.8 s of sends, still moving
    finally:
        producer.close()
    text = str(raised.value)
    assert raised.value.code == EXIT_FENCED and "\n" not in text
    assert "longer than kafka.transaction_timeout_ms (300 ms)" in text
    assert "raise kafka.transaction_timeout_ms" in text


async def test_a_fenced_batch_within_the_transaction_timeout_names_another_instance() -> None:
    producer = AbortedByTheCoordinator(ack_every_s=0.001)
    txns = transactions(producer, request_timeout_ms=1000)  # 60 s transaction timeout
    try:
        with pytest.raises(DaemonExit) as raised:
            await txns.commit(3, plan_of(5))
    finally:
        producer.close()
    assert raised.value.code == EXIT_FENCED
    assert "another instance with transactional id" in str(raised.value)
