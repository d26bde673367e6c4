"""Properties of the batch size controller (engine/batchsize.py): whatever the writer's times, the
size stays within its bounds, grows by at most x1.2 a batch (one row below 5 rows), never
shrinks while under the target, at most halves when over it; and a writer whose time grows with
its rows is brought near the target, slow or fast."""

from __future__ import annotations

import math

from hypothesis import given, strategies as st

from backfill_core.engine.batchsize import BatchSizer, Target, next_size

targets = st.builds(
    lambda seconds, a, b: Target(seconds, min(a, b), max(a, b)),
    st.floats(0.001, 100.0),
    st.integers(1, 100_000),
    st.integers(1, 100_000),
)
observations = st.lists(
    st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1000.0)),  # (share of the page's rows, seconds)
    max_size=50,
)


@given(targets, st.integers(1, 100_000), observations)
def test_the_size_stays_in_bounds_and_moves_in_damped_steps(
    target: Target, start: int, seen: list[tuple[float, float]]
) -> None:
    size = target.within(start)
    for share, held in seen:
        rows = math.floor(size * share)
        new = next_size(size, rows, held, target)
        assert target.lowest <= new <= target.highest
        assert new <= max(size * 1.2, size + 1)
        if held <= target.seconds or rows == 0:
            assert new >= size
        else:
            assert new >= size / 2 or new == target.lowest
            assert new < size or new == target.lowest
        size = new


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@given(
    st.floats(0.01, 10.0),  # the target
    st.floats(0.0, 0.5),  # the writer's fixed cost, as a share of the target
    st.floats(1e-7, 1.0),  # its seconds per row
    st.integers(1, 100_000),  # the starting size
)
def test_a_writer_slow_or_fast_is_brought_near_the_target(
    seconds: float, overhead_share: float, per_row: float, start: int
) -> None:
    target = Target(seconds, 1, 100_000)
    overhead = overhead_share * seconds
    ideal = (seconds - overhead) / per_row
    clock = Clock()
    sizer = BatchSizer(start, target, clock)
    for _ in range(200):
        size = sizer.size
        since = sizer.started()
        clock.now += overhead + per_row * size
        held = sizer.committed(size, size, since)
    if ideal >= target.highest * 1.25:
        assert sizer.size == target.highest
    elif ideal < 20:  # a few rows: a whole row is a large share of the time, so only this
        assert held <= 1.5 * seconds or size == target.lowest, (size, held, ideal)
    else:
        assert 0.75 * seconds <= held <= 1.25 * seconds, (size, held, ideal)
