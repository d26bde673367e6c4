"""The command line's promises at their edges, through the real ``backfill`` script, on a SQLite
file and on a scratch PostgreSQL database (when BACKFILL_TEST_POSTGRES_URL is set):

* ``--max-error-rate R``: exit 1 when *more* than R of the rows failed, exit 0 at R or under
  (the default R is 0.05);
* ``--threshold NAME=VALUE`` and the default threshold: a metric passes when its value is at
  least the threshold (docs/plugins.md, docs/architecture.md), so exactly at it passes (on
  PostgreSQL only from version 16, which the coverage metrics need; older servers are pinned
  to refuse with exit 3 instead);
* ``--batch-size``: 1 to 100000 accepted, anything else a usage error (exit 2) that writes
  nothing; likewise ``--max-error-rate`` outside 0 to 1 and the other ranged options;
* the exit codes 0, 1, 2 and 3, each with the JSON ``exit_code`` agreeing. (130 and 143 are
  pinned by the signal tests in tests/crash.)

Every database is built with exact row counts (see tests/support/backends.py): 1 failed row in 20 is
exactly 5%, 19 covered tests in 20 exactly 95%.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.backends import BROKEN, EMPTY, GOOD, KINDS, Backend, MakeBackend, backends
from support.cli import RunCli, parse_json_output
from support.postgres import SERVER, fetch


@pytest.fixture(params=KINDS)
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    """``make_db(tests)``: the database of this run of the test, SQLite or PostgreSQL."""
    with backends(request.param, tmp_path) as make:
        yield make


def run_json(cli: RunCli, db: Backend, *args: str) -> tuple[int, dict[str, Any]]:
    """``backfill run test_features ARGS -d DB -q --json``: the exit code and the report, which
    must say the same exit code."""
    proc = cli(["run", "test_features", *args, "-d", db.url, "-q", "--json"])
    report = parse_json_output(proc)
    assert report["exit_code"] == proc.returncode, proc.stderr
    return proc.returncode, report


def layout(good: int = 0, broken: int = 0, empty: int = 0) -> list[str]:
    """Failing rows first: with one batch it makes no difference; with several, the first batch
    holds them."""
    return [BROKEN] * broken + [EMPTY] * empty + [GOOD] * good


# -- --max-error-rate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("good", "broken", "args"),
    [
        (20, 1, []),  # 1/21 = 4.8%, under the default 5%
        (19, 1, []),  # 1/20 = 5%, exactly the default
        (3, 1, ["--max-error-rate", "0.25"]),  # exactly an explicit limit
        (5, 0, ["--max-error-rate", "0"]),  # no error, so not over 0
        (0, 4, ["--max-error-rate", "1"]),  # every row failed: not over 1
    ],
    ids=["under-default", "at-default", "at-explicit", "none-at-zero", "all-at-one"],
)
def test_an_error_rate_up_to_the_limit_exits_0(
    cli: RunCli, make_db: MakeBackend, good: int, broken: int, args: list[str]
) -> None:
    db = make_db(layout(good, broken))

    code, report = run_json(cli, db, *args, "--no-validate")  # exit 1 would be the rate's alone

    assert code == 0, report
    (stats,) = report["extractors"]
    assert (stats["processed"], stats["errors"], stats["stopped"]) == (good + broken, broken, None)
    assert db.runs() == [(1, "test_features", "succeeded", good + broken, broken)]


@pytest.mark.parametrize(
    ("good", "broken", "args", "rate"),
    [
        (18, 1, [], "5.3%"),  # 1/19: the least over the default that 19 rows can fail
        (2, 1, ["--max-error-rate", "0.25"], "33.3%"),
        (99, 1, ["--max-error-rate", "0"], "1.0%"),  # 0 stops at the first batch with an error
        (5, 15, ["--max-error-rate", "0.5"], "75.0%"),
    ],
    ids=["over-default", "over-explicit", "one-over-zero", "over-half"],
)
def test_an_error_rate_over_the_limit_exits_1_and_stops(
    cli: RunCli, make_db: MakeBackend, good: int, broken: int, args: list[str], rate: str
) -> None:
    db = make_db(layout(good, broken))

    code, report = run_json(cli, db, *args, "--no-validate")

    assert code == 1, report
    (stats,) = report["extractors"]
    assert stats["stopped"].startswith(f"error rate {rate} is over --max-error-rate"), stats["stopped"]
    assert (report["validation"], report["validation_skipped"]) == (None, "the run stopped early")
    assert db.runs() == [(1, "test_features", "failed", good + broken, broken)]


def test_the_text_summary_says_why_the_run_stopped(cli: RunCli, make_db: MakeBackend) -> None:
    db = make_db(layout(good=18, broken=1))

    proc = cli(["run", "test_features", "-d", db.url, "-q", "--no-validate"])

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "test_features STOPPED: error rate 5.3% is over --max-error-rate 5.0% after 19 rows" in proc.stdout
    assert "validation: skipped (the run stopped early)" in proc.stdout


def test_later_extractors_do_not_run_after_one_goes_over(cli: RunCli, make_db: MakeBackend) -> None:
    db = make_db(layout(good=18, broken=1))

    proc = cli(["run", "bug_attribution", "test_features", "-d", db.url, "-q", "--json", "--no-validate"])

    assert proc.returncode == 1
    assert [s["extractor"] for s in parse_json_output(proc)["extractors"]] == ["test_features"]
    assert [r[1] for r in db.runs()] == ["test_features"]


def test_the_limit_applies_to_each_batch_as_it_commits(cli: RunCli, make_db: MakeBackend) -> None:
    """1 error in the first batch of 10 is 10%: stopped there, with that batch committed,
    although over all 40 rows the rate would be 2.5%."""
    db = make_db(layout(good=39, broken=1))

    code, report = run_json(cli, db, "--batch-size", "10", "--no-validate")

    assert code == 1
    assert report["extractors"][0]["processed"] == 10
    assert db.feature_tests() == list(range(2, 11))


# -- --threshold and the default threshold ------------------------------------------------------------


@pytest.mark.parametrize(
    ("empty", "args", "passed"),
    [
        (1, [], True),  # 19/20 = 95%: exactly the default threshold
        (2, [], False),  # 18/20 = 90%
        (1, ["--threshold", "coverage=0.95"], True),
        (1, ["--threshold", "coverage=95%"], True),
        (1, ["--threshold", "coverage.tests_with_features=0.9501"], False),
        (1, ["--threshold", "coverage=96%"], False),
        (1, ["--threshold", "coverage=0.9499"], True),
        (2, ["--threshold", "coverage.tests_with_features=90%"], True),
        (0, ["--threshold", "coverage=1"], True),  # 20/20 at 100%
        (1, ["--threshold", "coverage=100%"], False),
        (20, ["--threshold", "coverage=0"], True),  # 0/20 at 0%
    ],
    ids=[
        "at-default",
        "under-default",
        "at",
        "at-percent",
        "just-over-metric",
        "over-percent",
        "just-under",
        "at-metric-percent",
        "all-at-1",
        "under-100-percent",
        "none-at-0",
    ],
)
def test_a_metric_passes_at_its_threshold_and_fails_above_it(
    cli: RunCli, make_db: MakeBackend, empty: int, args: list[str], passed: bool
) -> None:
    db = make_db(layout(good=20 - empty, empty=empty))
    needs_metrics_on(db)

    code, report = run_json(cli, db, *args)

    assert code == (0 if passed else 1), report
    (metric,) = [m for m in report["validation"] if m["metric"] == "tests_with_features"]
    assert (metric["numerator"], metric["denominator"], metric["passed"]) == (20 - empty, 20, passed)
    assert report["extractors"][0]["stopped"] is None  # exit 1 here is validation's alone


def test_the_text_summary_shows_pass_at_the_threshold_and_fail_above(
    cli: RunCli, make_db: MakeBackend
) -> None:
    db = make_db(layout(good=19, empty=1))
    needs_metrics_on(db)

    at = cli(["run", "test_features", "-d", db.url, "-q"])
    above = cli(["validate", "coverage", "-d", db.url, "--threshold", "coverage.tests_with_features=96%"])

    assert at.returncode == 0, at.stdout + at.stderr
    assert "  pass  coverage.tests_with_features = 95.0% [19/20] (threshold 95%)" in at.stdout
    assert above.returncode == 1, above.stdout + above.stderr
    assert "  FAIL  coverage.tests_with_features = 95.0% [19/20] (threshold 96%)" in above.stdout


def test_metrics_this_postgresql_cannot_compute_exit_3_before_anything_is_written(
    cli: RunCli, make_db: MakeBackend
) -> None:
    """docs/cli.md, exit 3: a validator query that cannot be compiled, such as JSON functions on
    PostgreSQL older than 16, is found before the run writes."""
    db = make_db(layout(good=3))
    if db.kind == "sqlite" or _server_version() >= 160000:
        pytest.skip("every metric can be computed here; the refusal needs PostgreSQL older than 16")
    before = _contents(db)

    proc = cli(["run", "test_features", "-d", db.url, "-q", "--json"])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert parse_json_output(proc)["exit_code"] == 3
    assert "needs PostgreSQL 16 or later" in proc.stderr
    assert "`backfill run --no-validate` skips validation" in proc.stderr
    assert _contents(db) == before


def needs_metrics_on(db: Backend) -> None:
    """Skip on a PostgreSQL server that cannot compute the coverage metrics (older than 16)."""
    if db.kind == "postgresql" and _server_version() < 160000:
        pytest.skip("the coverage metrics read JSON text in a way that needs PostgreSQL 16")


def _server_version() -> int:
    assert SERVER
    ((version,),) = asyncio.run(fetch(SERVER, "SELECT current_setting('server_version_num')::int"))
    return int(version)


# -- ranged options: the edges accepted, the values past them refused ----------------------------


@pytest.mark.parametrize("size", ["1", "100000"])
def test_the_smallest_and_largest_batch_sizes_run(cli: RunCli, make_db: MakeBackend, size: str) -> None:
    db = make_db([GOOD] * 5 + [EMPTY, BROKEN])  # 1/7 failed, 14%, once the last batch is in

    code, report = run_json(cli, db, "--batch-size", size, "--max-error-rate", "0.2", "--no-validate")

    assert code == 0, report
    stats = report["extractors"][0]
    assert (stats["processed"], stats["inserted"], stats["errors"]) == (7, 5, 1)
    assert db.feature_tests() == [1, 2, 3, 4, 5]
    assert db.rows("SELECT batch_size FROM backfill_runs") == [(int(size),)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "'--batch-size': 0 is not in the range 1<=x<=100000"),
        (["--batch-size", "-1"], "'--batch-size': -1 is not in the range 1<=x<=100000"),
        (["--batch-size", "100001"], "'--batch-size': 100001 is not in the range 1<=x<=100000"),
        (["--batch-size", "1.5"], "'--batch-size': '1.5' is not a valid integer"),
        (["--batch-size", "many"], "'--batch-size': 'many' is not a valid integer"),
        (["--max-error-rate", "-0.01"], "'--max-error-rate': -0.01 is not in the range 0<=x<=1"),
        (["--max-error-rate", "1.01"], "'--max-error-rate': 1.01 is not in the range 0<=x<=1"),
        (["--max-error-rate", "5%"], "'--max-error-rate': '5%' is not a valid float"),
        (["--max-error-rate", "nan"], "'--max-error-rate': 'nan' is not in the range 0<=x<=1"),
        (["--threshold", "coverage=1.0001"], "--threshold 'coverage=1.0001' must look like"),
        (["--threshold", "coverage=100.1%"], "--threshold 'coverage=100.1%' must look like"),
        (["--threshold", "coverage=-1%"], "--threshold 'coverage=-1%' must look like"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_values_past_the_edges_are_usage_errors_that_write_nothing(
    cli: RunCli, make_db: MakeBackend, args: list[str], message: str
) -> None:
    db = make_db(layout(good=5, broken=5))
    before = _contents(db)

    proc = cli(["run", "test_features", *args, "-d", db.url, "-q", "--json"])

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert proc.stdout == ""  # usage errors print no JSON, only click's message
    assert _contents(db) == before


def _contents(db: Backend) -> tuple[Any, ...]:
    """What a run could change: the tables, the features, the tests (a dry run's overlay aside)."""
    return (
        sorted(db.tables()),
        db.rows("SELECT * FROM test_features ORDER BY id"),
        db.rows("SELECT id, data FROM tests ORDER BY id"),
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["status", "--limit", "1"], 0),
        (["status", "--limit", "0"], 2),
        (["demo", "--tests", "0"], 2),
        (["demo", "--tests", "10000001"], 2),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_the_other_ranged_options(
    cli: RunCli, tmp_path: Path, make_db: MakeBackend, args: list[str], code: int
) -> None:
    db = make_db(layout(good=2))
    target = ["-d", db.url] if args[0] == "status" else [str(tmp_path / "demo.db")]

    proc = cli([*args, *target])

    assert proc.returncode == code, proc.stdout + proc.stderr
    assert not (tmp_path / "demo.db").exists()


# -- exit 3 on both databases, and nothing written --------------------------------------------------


def test_a_missing_table_exits_3_before_anything_is_written(cli: RunCli, make_db: MakeBackend) -> None:
    db = make_db(layout(good=5))
    db.execute("DROP TABLE bugs")
    before = _contents(db)

    proc = cli(["run", "test_features", "bug_attribution", "-d", db.url, "-q", "--json"])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert parse_json_output(proc)["exit_code"] == 3
    assert "table 'bugs' does not exist" in proc.stderr
    assert _contents(db) == before


def test_a_database_that_does_not_exist_exits_3(cli: RunCli, make_db: MakeBackend, tmp_path: Path) -> None:
    db = make_db(layout(good=1))
    if db.kind == "sqlite":
        missing = str(tmp_path / "absent.db")
    else:
        missing = db.url.rsplit("/", 1)[0] + "/backfill_no_such_database"

    proc = cli(["run", "test_features", "-d", missing, "-q", "--json"])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert parse_json_output(proc)["exit_code"] == 3
    assert proc.stderr.startswith("backfill: error: ")
    assert not (tmp_path / "absent.db").exists()


def test_an_unsupported_database_url_exits_3(cli: RunCli) -> None:
    proc = cli(["run", "test_features", "-d", "mysql://u:secret@localhost/db", "-q"])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "backfill works with SQLite and PostgreSQL databases, not 'mysql'" in proc.stderr
    assert "secret" not in proc.stderr
