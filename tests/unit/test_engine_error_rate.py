"""The run tier at its boundary: an extractor stops when its error rate is *strictly greater* than
``max_error_rate``, checked after every batch, over the rows of this invocation only, and never
for a --retry-errors run (docs/cli.md, docs/architecture.md "Run tier").

The real engine (``run_backfill`` and the built-in test_features extractor) on a real SQLite file,
and on a scratch PostgreSQL database when BACKFILL_TEST_POSTGRES_URL is set. Each test builds
tests whose ``data`` is good JSON or truncated JSON, so the error rate of every batch is exact:
1/20 is the same float as the default 0.05, and 1/19 is the smallest rate above it that 19 rows
give.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from backfill_core import RunOptions, RunReport, make_registry, resolve_url, run_backfill
from backfill_core.engine.stats import ErrorLog, ExtractorStats
from backfill_core.errors import ExitCode
from backfill_plugins.testmanagement import plugin
from support.backends import BROKEN, GOOD, KINDS, Backend, MakeBackend, backends

DEFAULT = RunOptions().max_error_rate


@pytest.fixture(params=KINDS)
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    """``make_db(tests)``: the database of this run of the test, SQLite or PostgreSQL."""
    with backends(request.param, tmp_path) as make:
        yield make


def run(
    db: Backend,
    *,
    max_error_rate: float = DEFAULT,
    batch_size: int = 500,
    names: Sequence[str] = ("test_features",),
    retry_errors: bool = False,
    worker: bool = True,
) -> RunReport:
    options = RunOptions(batch_size=batch_size, max_error_rate=max_error_rate, worker=worker)
    report = RunReport(database=db.url, errors=ErrorLog(keep=1000))
    registry = make_registry(plugin)
    url = resolve_url(db.url)
    asyncio.run(
        run_backfill(registry, names, url, options, report, validate=False, retry_errors=retry_errors)
    )
    return report


def only(report: RunReport) -> ExtractorStats:
    (stats,) = report.extractors
    return stats


def rows(good: int, broken: int) -> list[str]:
    """``broken`` broken tests first, then ``good`` good ones."""
    return [BROKEN] * broken + [GOOD] * good


# -- one batch: just under, exactly at, just over -----------------------------------------------------


@pytest.mark.parametrize(
    ("good", "broken", "rate"),
    [
        (20, 1, DEFAULT),  # 1/21 = 4.8%: under the default
        (19, 1, DEFAULT),  # 1/20 = 5%: exactly the default
        (38, 2, DEFAULT),  # 2/40 = 5%
        (3, 1, 0.25),  # 1/4 = 25%: exactly an explicit rate
        (0, 0, 0.0),  # no error at rate 0: 0 is not greater than 0
        (0, 5, 1.0),  # every row failed at rate 1: 1 is not greater than 1
    ],
    ids=["under", "at-default", "at-default-2-errors", "at-explicit", "zero-of-zero", "all-of-one"],
)
def test_an_error_rate_up_to_the_limit_does_not_stop_the_run(
    make_db: MakeBackend, good: int, broken: int, rate: float
) -> None:
    db = make_db(rows(good, broken) or [GOOD])

    report = run(db, max_error_rate=rate)

    stats = only(report)
    assert stats.stopped is None
    assert (stats.processed, stats.error_count) == (max(good + broken, 1), broken)
    assert report.exit_code == ExitCode.OK
    assert db.runs() == [(1, "test_features", "succeeded", max(good + broken, 1), broken)]
    assert db.rows("SELECT total FROM backfill_runs") == [(max(good + broken, 1),)]


@pytest.mark.parametrize(
    ("good", "broken", "rate", "shown"),
    [
        (18, 1, DEFAULT, "error rate 5.3% is over --max-error-rate 5.0% after 19 rows"),
        (37, 2, DEFAULT, "error rate 5.1% is over --max-error-rate 5.0% after 39 rows"),
        (2, 1, 0.25, "error rate 33.3% is over --max-error-rate 25.0% after 3 rows"),
        (99, 1, 0.0, "error rate 1.0% is over --max-error-rate 0.0% after 100 rows"),
    ],
    ids=["over-default", "over-default-2-errors", "over-explicit", "one-error-at-zero"],
)
def test_an_error_rate_over_the_limit_stops_the_run(
    make_db: MakeBackend, good: int, broken: int, rate: float, shown: str
) -> None:
    db = make_db(rows(good, broken))

    report = run(db, max_error_rate=rate, names=("test_features", "bug_attribution"))

    stats = only(report)  # bug_attribution, after it, does not run
    assert stats.stopped is not None and stats.stopped.startswith(shown), stats.stopped
    assert (stats.processed, stats.error_count) == (good + broken, broken)
    assert stats.errors == {("record", "invalid-json"): broken}
    assert report.exit_code == ExitCode.FAILED
    assert db.runs() == [(1, "test_features", "failed", good + broken, broken)]
    assert len(db.feature_tests()) == good  # the batch that crossed the limit is committed


def test_the_stop_says_why_and_what_to_do_next(make_db: MakeBackend) -> None:
    """The whole message, as docs/operations.md shows it; the ledger keeps it as the run's."""
    db = make_db(rows(18, 1))

    stats = only(run(db))

    message = (
        "error rate 5.3% is over --max-error-rate 5.0% after 19 rows. Fix the data or the plugin, "
        "then run the same command to resume after the last checkpoint (--retry-errors "
        "reprocesses the failed rows, --restart starts over), or raise --max-error-rate"
    )
    assert stats.stopped == message
    assert db.rows("SELECT message FROM backfill_runs") == [(message,)]
    assert 0 <= stats.elapsed < 60


# -- several batches: checked after each, over the whole invocation -------------------------------


def test_the_rate_is_checked_after_every_batch(make_db: MakeBackend) -> None:
    """1 error in the first batch of 10 is 10%: the run stops there, although over all 40 rows
    the rate would be 2.5%."""
    db = make_db(rows(9, 1) + [GOOD] * 30)

    report = run(db, batch_size=10)

    assert only(report).processed == 10
    assert only(report).stopped is not None
    assert db.runs() == [(1, "test_features", "failed", 10, 1)]
    assert db.feature_tests() == list(range(2, 11))


def test_the_rate_is_of_every_row_so_far_not_of_the_last_batch(make_db: MakeBackend) -> None:
    """A clean batch of 10, then 1 error in the next 10: 1/20 is exactly 5%, so the run goes on
    (the second batch alone, 1/10, would be over)."""
    db = make_db([GOOD] * 10 + rows(9, 1) + [GOOD] * 10)

    report = run(db, batch_size=10)

    assert (only(report).processed, only(report).stopped) == (30, None)
    assert db.runs() == [(1, "test_features", "succeeded", 30, 1)]


def test_the_limit_stops_at_the_first_batch_over_it(make_db: MakeBackend) -> None:
    """Exactly 5% after batches 1 and 2, over it once batch 3 brings a second error (2/30)."""
    db = make_db([GOOD] * 10 + rows(9, 1) + rows(9, 1) + [GOOD] * 10)

    report = run(db, batch_size=10)

    assert only(report).processed == 30
    assert only(report).stopped is not None
    assert db.runs() == [(1, "test_features", "failed", 30, 2)]


@pytest.mark.parametrize("worker", [True, False], ids=["worker", "no-worker"])
def test_a_resumed_run_counts_only_the_rows_of_this_invocation(make_db: MakeBackend, worker: bool) -> None:
    """Stopped after its first batch (1/10); resumed, it meets 1 error in 20 more rows: 5% in
    this invocation, so it finishes, although the run as a whole has 2 errors in 30 rows.
    (With and without the extraction worker, which reads the pages in its own process.)"""
    db = make_db(rows(9, 1) + [GOOD] * 10 + rows(9, 1))

    assert only(run(db, batch_size=10, worker=worker)).stopped is not None
    resumed = run(db, batch_size=10, worker=worker)

    stats = only(resumed)
    assert (stats.processed, stats.error_count, stats.stopped) == (20, 1, None)
    assert resumed.exit_code == ExitCode.OK
    assert db.runs() == [(1, "test_features", "succeeded", 30, 2)]
    # what was left when this invocation started, and the run's total across both
    assert (stats.total, stats.note) == (20, "resuming run 1 of test_features from key 10")
    assert db.rows("SELECT total FROM backfill_runs") == [(30,)]


def test_a_retry_is_not_stopped_however_many_rows_still_fail(make_db: MakeBackend) -> None:
    db = make_db(rows(15, 5))
    assert only(run(db, max_error_rate=1.0)).error_count == 5

    retry = run(db, retry_errors=True)  # every retried row fails again: 100% > 5%

    stats = only(retry)
    assert (stats.processed, stats.error_count, stats.stopped) == (5, 5, None)
    assert retry.exit_code == ExitCode.OK
    assert db.runs() == [(1, "test_features", "succeeded", 20, 5), (2, "test_features", "succeeded", 5, 5)]
    # a retry goes through keys, not along them: it has no last key (docs/cli.md, status)
    assert db.rows("SELECT id, last_key FROM backfill_runs ORDER BY id") == [(1, "20"), (2, None)]
