"""Batch sizes: the controller that keeps each write transaction near ``--target-batch-seconds``,
and the record of the sizes a run used and of its slowest write transaction.

A batch's write transaction is timed from when it has begun (on SQLite, ``BEGIN IMMEDIATE`` has
taken the write lock) to when it has committed: the time its locks are held, not the read or
the extraction. From each committed batch the controller estimates the seconds per source row
and aims the next page at ``target`` seconds, in damped steps: at most x1.2 growth per batch
(one row per batch below 5 rows); after a batch over the target, a shrink by at least one row
and at most by half; never outside ``[lowest, highest]``. Sizes of 100 rows and more are
rounded to two significant digits, so that a run uses a few dozen sizes, not thousands.

Pages are read ahead (by the extraction worker, or by the next read on PostgreSQL), so a new
size applies to the next page read, a few batches after the one it was measured on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from backfill_core.engine.options import RunOptions
from backfill_core.store.records import BatchSizes

GROWTH = 1.2
"""The most a batch size grows from one batch to the next."""
SHRINK = 0.5
"""The most a batch size shrinks from one batch to the next, on an overshoot."""
DEFAULT_MIN_BATCH_SIZE = 10
DEFAULT_MAX_BATCH_SIZE = 20_000

Clock = Callable[[], float]


@dataclass(frozen=True)
class Target:
    """What ``--target-batch-seconds``, ``--min-batch-size`` and ``--max-batch-size`` ask for."""

    seconds: float
    lowest: int = DEFAULT_MIN_BATCH_SIZE
    highest: int = DEFAULT_MAX_BATCH_SIZE

    def __post_init__(self) -> None:
        if not self.seconds > 0 or math.isinf(self.seconds):
            raise ValueError(f"the target must be a positive number of seconds, not {self.seconds}")
        if not 1 <= self.lowest <= self.highest:
            raise ValueError(
                f"need 1 <= min batch size <= max batch size, not {self.lowest} and {self.highest}"
            )

    def within(self, size: int) -> int:
        return min(max(size, self.lowest), self.highest)


def target_of(options: RunOptions) -> Target | None:
    """The target ``options`` ask for, if any (their bounds defaulting around the starting size)."""
    if options.target_batch_seconds is None:
        return None
    given_max = options.max_batch_size or DEFAULT_MAX_BATCH_SIZE
    lowest = options.min_batch_size or min(DEFAULT_MIN_BATCH_SIZE, options.batch_size, given_max)
    highest = options.max_batch_size or max(DEFAULT_MAX_BATCH_SIZE, options.batch_size, lowest)
    return Target(options.target_batch_seconds, lowest, highest)


def rounded(size: int, *, up: bool = False) -> int:
    """``size`` rounded down (or ``up``) to two significant digits; sizes under 100 stay as they are."""
    if size < 100:
        return size
    unit = int(10 ** (len(str(size)) - 2))
    return -(-size // unit) * unit if up else size // unit * unit


def next_size(size: int, rows: int, held: float, target: Target) -> int:
    """The size of the next page, after a batch of ``rows`` rows held its locks ``held`` seconds
    while pages were ``size`` rows: the rows that the batch's seconds per row fit in the target,
    within the steps allowed; a batch over the target always shrinks the size."""
    if rows <= 0:
        return target.within(size)
    ideal = rows * target.seconds / held if held > 0 else math.inf
    if held > target.seconds:
        wanted = max(min(ideal, size), size * SHRINK)
        return target.within(min(rounded(math.ceil(wanted), up=True), size - 1))
    grown = max(math.floor(size * GROWTH), size + 1)
    wanted = max(min(ideal, grown), size)
    return target.within(max(rounded(math.floor(wanted + 0.5)), size))


class BatchSizer:
    """The size of each next page (``size``), and the sizes and write times of the batches
    committed so far in this process (``used``). Without a target the size never changes."""

    def __init__(self, start: int, target: Target | None = None, clock: Clock = time.perf_counter) -> None:
        self.target, self.clock = target, clock
        self.size = target.within(start) if target else start
        self.used = BatchSizes()

    def started(self) -> float:
        """Now, as a batch's write transaction has begun."""
        return self.clock()

    def committed(self, size: int, rows: int, since: float) -> float:
        """Record a batch read with pages of ``size`` whose ``rows`` rows were committed in a
        transaction begun at ``since``, and choose the next size; the seconds it held its locks."""
        held = max(self.clock() - since, 0.0)
        self.used.add(size, held)
        if self.target is not None:
            self.size = next_size(self.size, rows, held, self.target)
        return held
