"""``InputBuffer``: the daemon's read-ahead of consumed records. Whatever the fetches
and the batch limits, every record is planned exactly once, each partition in offset
order, each batch in sequencing order and within its limits. Pure: no broker needed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clearing.kafka import InputBuffer, InputRecord
from clearing.kafka._batch import order_records

RANK = {"fills": 0, "ticks": 1}
TPS = (("fills", 0), ("fills", 1), ("ticks", 0))


def _record(tp: tuple[str, int], offset: int, timestamp: int, size: int) -> InputRecord:
    value = None if size < 0 else b"v" * size
    return InputRecord(tp[0], tp[1], offset, timestamp, None, value)


@st.composite
def _arrivals(draw: st.DrawFn) -> list[dict[tuple[str, int], list[InputRecord]]]:
    """Fetch results: each a few partitions' next records (offsets may skip, as after
    transaction markers; timestamps need not rise)."""
    next_offset = dict.fromkeys(TPS, 0)
    fetches = []
    for _ in range(draw(st.integers(1, 8))):
        fetch: dict[tuple[str, int], list[InputRecord]] = {}
        for tp in draw(st.lists(st.sampled_from(TPS), unique=True, max_size=3)):
            records = []
            for _ in range(draw(st.integers(0, 12))):
                next_offset[tp] += draw(st.integers(0, 2))
                timestamp = draw(st.integers(0, 30))
                records.append(_record(tp, next_offset[tp], timestamp, draw(st.integers(-1, 9))))
                next_offset[tp] += 1
            fetch[tp] = records
        fetches.append(fetch)
    return fetches


@settings(max_examples=300, deadline=None)
@given(
    _arrivals(),
    st.lists(st.integers(1, 10), min_size=1, max_size=40),
    st.integers(1, 40),
)
def test_every_record_once_in_order_within_limits(
    fetches: list[dict[tuple[str, int], list[InputRecord]]],
    takes: list[int],
    max_bytes: int,
) -> None:
    buffer = InputBuffer(RANK)
    pending = list(fetches)
    planned: list[InputRecord] = []
    step = 0
    while pending or buffer.count:
        max_records = takes[step % len(takes)]
        step += 1
        # Like the daemon: ask for more only while holding less than a batch.
        if pending and buffer.count < max_records:
            buffer.add(pending.pop(0))
        held = buffer.count
        batch = buffer.take(max_records, max_bytes)
        assert buffer.count == held - len(batch)
        if held:
            assert batch, "a buffer holding records must give at least one"
        assert len(batch) <= max_records
        sizes = [len(r.value) if r.value is not None else 0 for r in batch]
        assert len(batch) == 1 or sum(sizes) <= max_bytes
        # The batch is in sequencing order: the merge of its own partitions' records.
        by_tp: dict[tuple[str, int], list[InputRecord]] = {}
        for record in batch:
            by_tp.setdefault((record.topic, record.partition), []).append(record)
        assert order_records(by_tp, RANK) == batch
        planned.extend(batch)
    fetched = [r for fetch in fetches for records in fetch.values() for r in records]
    assert sorted(planned) == sorted(fetched)  # nothing lost, nothing twice
    for tp in TPS:
        offsets = [r.offset for r in planned if (r.topic, r.partition) == tp]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_a_batch_is_cut_at_max_bytes_and_the_rest_waits() -> None:
    buffer = InputBuffer(RANK)
    buffer.add({("fills", 0): [_record(("fills", 0), i, i, 10) for i in range(5)]})
    assert [r.offset for r in buffer.take(100, 25)] == [0, 1]
    assert buffer.count == 3
    # A record larger than the bound still goes, alone, rather than blocking the partition.
    buffer.add({("fills", 0): [_record(("fills", 0), 5, 5, 99)]})
    assert [r.offset for r in buffer.take(100, 25)] == [2, 3]
    assert [r.offset for r in buffer.take(100, 25)] == [4]
    assert [r.offset for r in buffer.take(100, 25)] == [5]
    assert buffer.count == 0 and buffer.take(100, 25) == []


def test_merge_interleaves_partitions_by_timestamp() -> None:
    buffer = InputBuffer(RANK)
    buffer.add(
        {
            ("ticks", 0): [_record(("ticks", 0), i, 2 * i + 1, 1) for i in range(3)],
            ("fills", 0): [_record(("fills", 0), i, 2 * i, 1) for i in range(3)],
        }
    )
    batch = buffer.take(4, 1000)
    assert [(r.topic, r.offset) for r in batch] == [
        ("fills", 0),
        ("ticks", 0),
        ("fills", 1),
        ("ticks", 1),
    ]
    assert buffer.count == 2
    buffer.clear()
    assert buffer.count == 0 and buffer.take(4, 1000) == []
