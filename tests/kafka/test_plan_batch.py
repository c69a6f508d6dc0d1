"""``plan_batch`` on the native core (``journal_run``: whole runs of inputs applied and
journaled in Rust) writes the same messages, byte for byte, as on the Python core (one
input at a time): journal blocks, events, dead letters, offsets, chain. No broker needed:
the plan is pure."""

from __future__ import annotations

import os
import random
import sys

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from prometheus_client import generate_latest

from clearing.engine import Engine
from clearing.engine.native import NativeEngine, native_available
from clearing.journal import GENESIS_HASH, Record, chain_hash
from clearing.kafka import InputRecord, JournalChain, _batch, decode_journal_message, plan_batch
from clearing.ops.metrics import Metrics
from clearing.sequencer import Sequencer
from tests.engine.strategies import input_streams

pytestmark = pytest.mark.skipif(
    not native_available() and not os.environ.get("CI"),
    reason="clearing_native is not installed (pip install ./native)",
)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))

TOPICS = ("adm", "orc", "fil")
MAX_MESSAGE_BYTES = 400


def _records(lines: list[bytes], seed: int) -> list[InputRecord]:
    """Inputs spread over three topics, with a missing value and an oversized one mixed in."""
    rng = random.Random(seed)
    offsets = dict.fromkeys(TOPICS, 0)
    out: list[InputRecord] = []
    for i, line in enumerate(lines):
        topic = rng.choice(TOPICS)
        value: bytes | None = line
        if rng.random() < 0.01:
            value = None
        elif rng.random() < 0.01:
            value = b"x" * (MAX_MESSAGE_BYTES + 1)
        out.append(InputRecord(topic, 0, offsets[topic], i, b"k%d" % i, value))
        offsets[topic] += 1
    return out


def _plans(records: list[InputRecord], batch: int) -> tuple[list[_batch.BatchPlan], ...]:
    plans: tuple[list[_batch.BatchPlan], ...] = ([], [])
    for engine, out in zip((Engine(), NativeEngine()), plans, strict=True):
        chain = JournalChain()
        for begin in range(0, len(records), batch):
            out.append(
                plan_batch(
                    engine,
                    chain,
                    records[begin : begin + batch],
                    journal_topic="j",
                    events_topic="e",
                    dlq_topic="d",
                    ledger_id="L",
                    max_message_bytes=MAX_MESSAGE_BYTES,
                )
            )
    return plans


def _same(python: list[_batch.BatchPlan], native: list[_batch.BatchPlan]) -> list[Record]:
    """Assert the plans equal; return the journal, verified (seqs, chain, block bytes)."""
    journal: list[Record] = []
    for want, got in zip(python, native, strict=True):
        assert got.journal == want.journal
        assert got.events == want.events
        assert got.dlq == want.dlq
        assert got.offsets == want.offsets
        assert (got.first_seq, got.last_seq, got.head_hash) == (
            want.first_seq,
            want.last_seq,
            want.head_hash,
        )
        assert got.outputs == want.outputs and got.sources == want.sources
        assert (got.rejects, got.oversized) == (want.rejects, want.oversized)
        for message in got.journal:
            records = decode_journal_message(message.value, message.headers)
            assert message.key == str(records[0].seq).encode()
            # The hand-built block is msgspec's encoding of the list, byte for byte.
            assert message.value == msgspec.msgpack.encode(records)
            journal.extend(records)
    prev = GENESIS_HASH
    for seq, record in enumerate(journal, start=1):
        assert record.seq == seq
        prev = chain_hash(prev, seq, record.source.encode(), record.payload, record.outputs)
        assert record.chain_hash == prev
    return journal


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(input_streams(max_events=200))
def test_native_and_python_plans_are_identical_on_random_streams(lines: list[bytes]) -> None:
    records = _records([line for line in lines if line.strip(b" \t\r")], seed=len(lines))
    _same(*_plans(records, batch=37))


def test_a_batch_planned_in_chunks_equals_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon plans a batch in chunks (``BatchPlanner.add``), yielding to the event
    loop in between: the plan is the one of a single ``plan_batch`` call, blocks included
    (they are cut over the whole batch), on both cores."""
    from clearing.demo._sim import SimConfig, Simulator

    monkeypatch.setattr(_batch, "JOURNAL_BLOCK_BYTES", 4096)
    lines = list(Simulator(SimConfig.for_inputs(seed=5, accounts=100, inputs=3_000)))
    records = _records(lines, seed=5)
    kw = {
        "journal_topic": "j",
        "events_topic": "e",
        "dlq_topic": "d",
        "ledger_id": "L",
        "max_message_bytes": MAX_MESSAGE_BYTES,
    }
    for make in (Engine, NativeEngine):
        whole = plan_batch(make(), JournalChain(), records, **kw)
        planner = _batch.BatchPlanner(Sequencer(make(), chain=JournalChain()), **kw)
        for begin in range(0, len(records), 97):
            planner.add(records[begin : begin + 97])
        chunked = planner.finish()
        assert msgspec.structs.asdict(chunked) == msgspec.structs.asdict(whole)
        assert whole.events and whole.dlq and len(whole.journal) > 3
        # A smaller journal message limit (limits.max_journal_record_bytes) caps the blocks.
        capped = plan_batch(make(), JournalChain(), records, **kw, journal_block_bytes=1000)
        assert len(capped.journal) > len(whole.journal)
        for message in capped.journal:
            count = len(decode_journal_message(message.value, message.headers))
            assert count == 1 or len(message.value or b"") <= 1000 + 5  # + the array header


def test_plans_match_on_the_demo_crash_in_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Liquidations, fund draws, clawbacks and bad debt: many outputs per input, blocks
    cut at 2 KiB so most batches span several journal messages."""
    from clearing.demo._sim import SimConfig, Simulator

    monkeypatch.setattr(_batch, "JOURNAL_BLOCK_BYTES", 2048)
    lines = [line for line in Simulator(SimConfig.for_inputs(seed=3, accounts=200, inputs=10_000))]
    python, native = _plans(_records(lines, seed=3), batch=500)
    journal = _same(python, native)
    assert sum(len(plan.journal) for plan in native) > 2 * len(native)
    outputs = b"".join(record.outputs for record in journal)
    for kind in (b"liquidation", b"fund_draw", b"clawback", b"bad_debt", b"reject"):
        assert b'"type":"%s"' % kind in outputs, kind


def test_plans_match_on_the_benchmark_stream() -> None:
    """...and the metrics the daemon derives from a plan are the same: on the native core
    the input types come from the native parser (``kinds``), on the Python core from a
    decode of every input."""
    from gen_events import generate

    lines = list(generate(20_000, 1_000, 20, seed=11))
    lines[100:100] = [b"not json", b'{"type":"teleport"}', b'{"type":"oracle","market":"\\u004d"}']
    python, native = _plans(_records(lines, seed=11), batch=2_000)
    _same(python, native)
    assert all(plan.kinds == bytes(len(plan.applied)) for plan in python)
    # Known natively except what Python applied (deferred inputs and refusals).
    assert sum(plan.kinds.count(0) for plan in native) < 0.1 * len(lines)
    seen = []
    for plans in (python, native):
        metrics = Metrics()
        for plan in plans:
            metrics.observe_batch(plan.applied, plan.first_seq, plan.outputs, 7, plan.kinds)
        text = generate_latest(metrics.registry).decode().splitlines()
        counted = sorted(line for line in text if line.startswith("clearing_input_records_total"))
        seen.append((counted, dict(metrics._oracle_ts_ns)))
    assert seen[0] == seen[1]
    assert any("malformed" in line for line in seen[0][0])
    assert len(seen[0][1]) >= 15  # the markets whose ticks were accepted


def test_deferred_and_refused_inputs_inside_native_runs() -> None:
    """Inputs the native parser hands to Python (escapes, odd numbers, bad JSON) and
    inputs it refuses (unknown market, margin) break a native run and resume it."""
    market = b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}'
    deposit = b'{"type":"deposit","account":"a","amount":"100"}'
    fill = (
        b'{"type":"fill","fill_id":"%s","market":"M","price":"10","qty":"1",'
        b'"buyer":"a","seller":"b"}'
    )
    odd = [
        b'{"type":"fill","fill_id":"f\\u0031","market":"M","price":"1","qty":"1",'
        b'"buyer":"a","seller":"c"}',
        b'{"type":"deposit","account":"a","amount":1e3}',
        b"not json",
        b'{"type":"oracle","market":"nope","price":"1"}',
        b'{"type":"withdraw","account":"a","amount":"1000000"}',
        b'{"type":"fill","fill_id":"big","market":"M","price":"10","qty":"100000",'
        b'"buyer":"a","seller":"b"}',
    ]
    lines = [market, deposit, b'{"type":"deposit","account":"b","amount":"100"}']
    for i, raw in enumerate(odd * 3):
        lines += [fill % str(i).encode(), raw, raw]
    python, native = _plans(_records(lines, seed=5), batch=len(lines))
    journal = _same(python, native)
    assert native[0].rejects >= 3 * 5
    assert b"f1" in b"".join(record.outputs + record.payload for record in journal)


def test_a_record_larger_than_a_block_is_a_block_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_batch, "JOURNAL_BLOCK_BYTES", 300)
    deposit = b'{"type":"deposit","account":"%s","amount":"1"}'
    lines = [deposit % b"a", deposit % (b"b" * 320), deposit % b"c", deposit % b"d"]
    python, native = _plans(
        _records(lines, seed=0)[:0]
        or [InputRecord("adm", 0, i, i, None, line) for i, line in enumerate(lines)],
        batch=10,
    )
    _same(python, native)
    counts = [dict(m.headers)["clearing.block"] for m in native[0].journal]
    assert counts == [b"1", b"1", b"2"]
