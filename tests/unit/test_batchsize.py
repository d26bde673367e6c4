"""The batch size controller (engine/batchsize.py) with a fake clock and a simulated writer, and
the record of a run's batch sizes (store/records.py's BatchSizes)."""

from __future__ import annotations

import itertools

import pytest

from backfill_core.engine.batchsize import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MIN_BATCH_SIZE,
    BatchSizer,
    Target,
    next_size,
    rounded,
    target_of,
)
from backfill_core.engine.options import RunOptions
from backfill_core.store.records import BatchSizes


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulate(
    sizer: BatchSizer, clock: FakeClock, overhead: float, per_row: float, batches: int, lag: int = 0
) -> list[tuple[int, float]]:
    """Commit ``batches`` batches whose write transaction takes ``overhead + per_row * rows``
    seconds of the fake clock; each page is read with the size chosen ``lag`` batches earlier (as
    pages read ahead are). The (page size, seconds held) of each batch."""
    chosen = [sizer.size] * (lag + 1)
    out = []
    for _ in range(batches):
        size = chosen[-(lag + 1)]
        since = sizer.started()
        clock.now += overhead + per_row * size
        held = sizer.committed(size, size, since)
        chosen.append(sizer.size)
        out.append((size, held))
    return out


def test_a_slow_writer_shrinks_the_batches_to_the_target() -> None:
    clock = FakeClock()
    sizer = BatchSizer(2000, Target(0.5, 10, 20_000), clock)
    used = simulate(sizer, clock, overhead=0.01, per_row=0.01, batches=30)  # 2000 rows: 20 s
    assert used[0][0] == 2000 and used[0][1] == pytest.approx(20.01)
    assert [s for s, _ in used[:4]] == [2000, 1000, 500, 250]  # halved while far over the target
    assert all(0.4 <= held <= 0.6 for _, held in used[-10:]), used
    assert sizer.size in (49, 50)  # (0.5 - 0.01) / 0.01 rows; a shrink rounds up


def test_a_fast_writer_grows_the_batches_to_the_target_by_at_most_a_fifth_a_batch() -> None:
    clock = FakeClock()
    sizer = BatchSizer(100, Target(1.0, 10, 20_000), clock)
    used = simulate(sizer, clock, overhead=0.002, per_row=0.0001, batches=40)  # ideal 9,980 rows
    sizes = [s for s, _ in used]
    assert all(b <= a * 1.2 for a, b in itertools.pairwise(sizes)), sizes
    assert sizes[:5] == [100, 120, 140, 160, 190]
    assert all(0.8 <= held <= 1.2 for _, held in used[-5:]), used
    assert 8_000 <= sizer.size <= 9_980


def test_with_pages_read_ahead_it_still_converges() -> None:
    clock = FakeClock()
    sizer = BatchSizer(500, Target(0.2, 10, 20_000), clock)
    used = simulate(sizer, clock, overhead=0.0, per_row=0.001, batches=60, lag=3)
    assert all(0.16 <= held <= 0.24 for _, held in used[-10:]), used


def test_the_bounds_hold_where_the_target_lies_outside_them() -> None:
    clock = FakeClock()
    slow = BatchSizer(100, Target(0.1, 40, 1000), clock)
    assert [s for s, _ in simulate(slow, clock, 0.0, 1.0, 10)][-3:] == [40, 40, 40]
    fast = BatchSizer(100, Target(10.0, 40, 1000), clock)
    assert [s for s, _ in simulate(fast, clock, 0.0, 1e-6, 30)][-3:] == [1000, 1000, 1000]


def test_without_a_target_the_size_never_changes_and_the_batches_are_recorded() -> None:
    clock = FakeClock()
    sizer = BatchSizer(500, None, clock)
    used = simulate(sizer, clock, 0.5, 0.01, 5)
    assert [s for s, _ in used] == [500] * 5
    assert sizer.used.counts == {500: 5} and sizer.used.slowest == pytest.approx(5.5)


def test_the_starting_size_is_brought_within_the_bounds() -> None:
    assert BatchSizer(5000, Target(1.0, 10, 1000)).size == 1000
    assert BatchSizer(3, Target(1.0, 10, 1000)).size == 10


def test_small_sizes_grow_by_one_row() -> None:
    target = Target(1.0, 1, 100)
    sizes = [1]
    for _ in range(6):
        sizes.append(next_size(sizes[-1], sizes[-1], 0.001, target))
    assert sizes == [1, 2, 3, 4, 5, 6, 7]


def test_a_small_batch_over_the_target_shrinks_by_a_row_at_least() -> None:
    target = Target(1.0, 1, 100)
    assert next_size(2, 2, 1.6, target) == 1
    assert next_size(150, 150, 1.01, Target(1.0, 1, 1000)) == 149  # 148.5 rows: one row less
    assert next_size(100, 100, 1.001, Target(1.0, 1, 1000)) == 99


def test_an_empty_batch_changes_nothing() -> None:
    assert next_size(300, 0, 99.0, Target(1.0)) == 300


def test_sizes_are_rounded_to_two_significant_digits() -> None:
    assert [rounded(n) for n in (7, 99, 100, 109, 1234, 99_999)] == [7, 99, 100, 100, 1200, 99_000]
    assert [rounded(n, up=True) for n in (99, 101, 1234, 1200)] == [99, 110, 1300, 1200]


def test_the_options_default_their_bounds_around_the_starting_size() -> None:
    assert target_of(RunOptions()) is None
    assert target_of(RunOptions(target_batch_seconds=2.0)) == Target(
        2.0, DEFAULT_MIN_BATCH_SIZE, DEFAULT_MAX_BATCH_SIZE
    )
    assert target_of(RunOptions(batch_size=3, target_batch_seconds=1.0)) == Target(
        1.0, 3, DEFAULT_MAX_BATCH_SIZE
    )
    assert target_of(RunOptions(batch_size=50_000, target_batch_seconds=1.0)) == Target(
        1.0, DEFAULT_MIN_BATCH_SIZE, 50_000
    )
    assert target_of(RunOptions(target_batch_seconds=1.0, max_batch_size=5)) == Target(1.0, 5, 5)
    assert target_of(RunOptions(target_batch_seconds=1.0, min_batch_size=30_000)) == Target(
        1.0, 30_000, 30_000
    )


@pytest.mark.parametrize(
    ("seconds", "lowest", "highest"),
    [(0.0, 1, 2), (-1.0, 1, 2), (float("nan"), 1, 2), (1.0, 3, 2), (1.0, 0, 2)],
)
def test_a_target_that_makes_no_sense_is_refused(seconds: float, lowest: int, highest: int) -> None:
    with pytest.raises(ValueError):
        Target(seconds, lowest, highest)


def test_batch_sizes_give_min_median_max_and_survive_the_ledger() -> None:
    sizes = BatchSizes()
    for size, held in [(500, 0.1), (600, 0.3), (100, 0.2), (600, 0.1)]:
        sizes.add(size, held)
    assert sizes.summary() == (100, 500, 600)
    assert sizes.to_dict() == {
        "batches": 4,
        "min": 100,
        "median": 500,
        "max": 600,
        "slowest_write_seconds": 0.3,
    }
    assert BatchSizes.decode(sizes.encode(), sizes.slowest) == sizes
    assert sizes.plus(BatchSizes({100: 3}, 0.9)) == BatchSizes({100: 4, 500: 1, 600: 2}, 0.9)
    assert BatchSizes().summary() is None
    assert BatchSizes.decode(None, None) == BatchSizes.decode(0, 0) == BatchSizes()
