"""clearing/heap.py: the ledger frozen out of the cyclic collector, garbage still found."""

from __future__ import annotations

import gc
import weakref

import pytest

import clearing.heap as heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture(autouse=True)
def _thawed() -> object:
    yield
    gc.unfreeze()  # leave the test process as it was


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_settle_freezes_the_survivors() -> None:
    gc.unfreeze()
    survivors = [_Node() for _ in range(1000)]
    heap.settle_heap()
    assert gc.get_freeze_count() >= len(survivors)


def test_young_garbage_is_collected_before_the_freeze() -> None:
    dead = _cycle()  # unreachable already
    heap.settle_heap()
    assert dead() is None


def test_a_frozen_cycle_is_found_by_the_full_settle_only() -> None:
    gc.unfreeze()
    holder = [_Node(), _Node()]
    holder[0].other, holder[1].other = holder[1], holder[0]
    ref = weakref.ref(holder[0])
    heap.settle_heap()  # alive now: frozen
    holder.clear()  # now garbage, but frozen: ordinary collections never see it
    gc.collect()
    assert ref() is not None
    heap.settle_heap(full=True)
    assert ref() is None


def test_settler_cadence(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(heap, "settle_heap", lambda full=False: calls.append(full))
    settler = heap.HeapSettler(every_inputs=10)
    for _ in range(9):
        settler.add()
    assert calls == []
    settler.add()
    assert calls == [False]
    settler.add(10 * (heap.FULL_EVERY_SETTLES - 1))  # one batch of many inputs
    assert calls == [False, False]  # a large batch still settles once
    for _ in range(heap.FULL_EVERY_SETTLES - 2):
        settler.add(10)
    assert len(calls) == heap.FULL_EVERY_SETTLES and calls[-1] is True
    assert calls.count(True) == 1


def test_streaming_collections_still_collect_cycles_and_restore_the_threshold() -> None:
    before = gc.get_threshold()
    with heap.streaming_collections(young_threshold=2_000):
        assert gc.get_threshold() == (2_000, *before[1:])
        ref = _cycle()
        assert ref() is not None
        # Allocating past the threshold triggers a young collection that frees the cycle.
        junk = [[] for _ in range(10_000)]
        del junk
        assert ref() is None
    assert gc.get_threshold() == before
