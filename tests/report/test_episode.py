"""The back-test's rule (clearing.report._episode): the largest fall of the fund's equity,
net of what was paid in, over one horizon; on series whose answer is worked out by hand."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clearing.report._episode import DrawdownTracker, LossEpisode

S = 10**9


def _run(points: list[tuple[int | None, int]], horizon_s: int) -> LossEpisode | None:
    tracker = DrawdownTracker(horizon_s * S)
    for seq, (ts_s, equity) in enumerate(points, start=1):
        tracker.observe(seq, None if ts_s is None else ts_s * S, equity)
    return tracker.finish()


def test_the_largest_fall_within_one_horizon_wins() -> None:
    # seq:      1   2   3   4   5   6   7   8
    points = [(0, 100), (1, 90), (2, 95), (3, 40), (4, 30), (10, 0), (11, 50), (12, 45)]
    # Over 2 s: from seq 3 (95) to seq 5 (30) is 65; from seq 5 the horizon holds no input
    # after it but itself (seq 6 is 6 s later), so the fall to 0 is never inside a horizon.
    assert _run(points, 2) == LossEpisode(3, 2 * S, 5, 65)
    # Over 10 s: from seq 1 (100) to seq 6 (0), stamped 10 s later: inside, 100.
    assert _run(points, 10) == LossEpisode(1, 0, 6, 100)


def test_the_start_is_the_last_input_before_the_fall() -> None:
    points = [(0, 100), (0, 100), (1, 100), (1, 20)]
    assert _run(points, 5) == LossEpisode(3, S, 4, 80)


def test_a_top_up_is_not_a_gain() -> None:
    tracker = DrawdownTracker(60 * S)
    tracker.observe(1, 0, 100)
    tracker.observe(2, S, -50)  # the crash
    tracker.pay_in(1000)
    tracker.observe(3, 2 * S, 950)  # recapitalised: equity 950, net of the top-up -50
    assert tracker.finish() == LossEpisode(1, 0, 3, 150, paid_in_e16=1000)


def test_the_episode_carries_what_was_paid_in_over_its_horizon() -> None:
    tracker = DrawdownTracker(60 * S)
    tracker.pay_in(500)  # before the start: not inside its horizon
    tracker.observe(1, 0, 600)  # net 100
    tracker.pay_in(-100)  # a withdrawal inside it
    tracker.observe(2, S, 0)  # net -400
    tracker.pay_in(1000)  # and a top-up
    tracker.observe(3, 2 * S, 900)  # net -500
    # The back-test's own sum: equity fell 600 -> 900 while 900 was paid in: a 600 loss.
    assert tracker.finish() == LossEpisode(1, 0, 3, 600, paid_in_e16=900)


def test_no_stamp_no_episode_and_a_fund_that_only_gains_has_none() -> None:
    assert _run([(None, 100), (None, 0)], 1) is None
    assert _run([(0, 1), (1, 2), (2, 3)], 5) is None


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(-1000, 1000)), min_size=1, max_size=40),
    st.integers(1, 6),
)
def test_it_is_the_brute_force_answer(steps: list[tuple[int, int]], horizon_s: int) -> None:
    """Stamps that only go forward (by 0..3 s): against every start and its horizon."""
    points, ts_s = [], 0
    for gap_s, equity in steps:
        ts_s += gap_s
        points.append((ts_s, equity))
    best: LossEpisode | None = None
    for i, (start_s, start_equity) in enumerate(points):
        end = max(j for j in range(i, len(points)) if points[j][0] <= start_s + horizon_s)
        loss = start_equity - points[end][1]
        if loss > 0 and (best is None or loss >= best.loss_e16):
            best = LossEpisode(i + 1, start_s * S, end + 1, loss)
    assert _run(points, horizon_s) == best
