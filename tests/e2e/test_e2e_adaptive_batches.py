"""``run --target-batch-seconds`` through the real ``backfill`` script, on a SQLite file and on a
scratch PostgreSQL database: the batch size moves between ``--min-batch-size`` and
``--max-batch-size``, ``--json`` and ``status`` report the sizes used and the slowest write, the
tables are those of a fixed-size run, and options that make no sense are usage errors (exit 2)
that write nothing.

A target far above any batch's time makes every batch grow by the most a step allows, and one far
below makes every batch halve: the sizes then do not depend on how fast the machine is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.backends import BROKEN, EMPTY, GOOD, KINDS, Backend, MakeBackend, backends
from support.cli import RunCli, parse_json_output

ROWS = [GOOD, GOOD, BROKEN, GOOD, EMPTY] * 30
"""150 tests: rows, record errors and rows that write nothing, spread over every batch."""
FIXED = ["--batch-size", "7"]
GROWING = ["--batch-size", "2", "--target-batch-seconds", "3600", "--max-batch-size", "9"]
SHRINKING = ["--batch-size", "16", "--target-batch-seconds", "0.000000001", "--min-batch-size", "2"]


@pytest.fixture(params=KINDS)
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    with backends(request.param, tmp_path) as make:
        yield make


def run_json(cli: RunCli, db: Backend, *args: str) -> dict[str, Any]:
    proc = cli(
        [
            "run",
            "test_features",
            *args,
            "-d",
            db.url,
            "-q",
            "--json",
            "--no-validate",
            "--max-error-rate",
            "1",
        ]
    )
    report: dict[str, Any] = parse_json_output(proc)
    assert proc.returncode == 0 == report["exit_code"], proc.stderr
    return report


def status_json(cli: RunCli, db: Backend) -> list[dict[str, Any]]:
    proc = cli(["status", "-d", db.url, "--json"])
    assert proc.returncode == 0, proc.stderr
    runs: list[dict[str, Any]] = json.loads(proc.stdout)
    return runs


def contents(db: Backend) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every test_features row, and the (key, kind) of every recorded error."""
    return (
        db.rows("SELECT * FROM test_features ORDER BY id"),
        db.rows("SELECT key, kind FROM backfill_errors ORDER BY id"),
    )


@pytest.mark.parametrize(
    ("args", "smallest", "largest"), [(GROWING, 2, 9), (SHRINKING, 2, 16)], ids=["growing", "shrinking"]
)
def test_an_adaptive_run_reports_its_sizes_and_writes_what_a_fixed_size_run_writes(
    cli: RunCli, make_db: MakeBackend, args: list[str], smallest: int, largest: int
) -> None:
    fixed, adaptive = make_db(ROWS), make_db(ROWS)

    fixed_sizes = run_json(cli, fixed, *FIXED)["extractors"][0]["batch_sizes"]
    (stats,) = run_json(cli, adaptive, *args)["extractors"]

    assert contents(adaptive) == contents(fixed)
    assert len(contents(fixed)[1]) == 30  # the BROKEN tests
    sizes = stats["batch_sizes"]
    assert (sizes["min"], sizes["max"]) == (smallest, largest), sizes
    assert sizes["slowest_write_seconds"] >= 0
    assert (fixed_sizes["min"], fixed_sizes["median"], fixed_sizes["max"]) == (7, 7, 7)
    assert fixed_sizes["batches"] == -(-len(ROWS) // 7)
    (run,) = status_json(cli, adaptive)
    assert run["batch_sizes"] == sizes  # one process: the run's sizes are the report's
    shown = cli(["status", "-d", adaptive.url])
    assert f"run {run['id']} batches: {sizes['batches']} of {smallest}/" in shown.stdout, shown.stdout
    text = cli(["run", "test_features", "-d", adaptive.url, "-q", "--no-validate", "--restart", *args])
    assert "test_features batches: " in text.stdout, text.stdout


POSITIVE = "is not a positive number of seconds"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            ["--target-batch-seconds", "1", "--min-batch-size", "10", "--max-batch-size", "5"],
            "--min-batch-size 10 is larger than --max-batch-size 5",
        ),
        (["--target-batch-seconds", "0"], f"0.0 {POSITIVE}"),
        (["--target-batch-seconds", "-1"], f"-1.0 {POSITIVE}"),
        (["--target-batch-seconds", "nan"], f"nan {POSITIVE}"),
        (["--target-batch-seconds", "inf"], f"inf {POSITIVE}"),
        (
            ["--target-batch-seconds", "1", "--max-batch-size", "0"],
            "'--max-batch-size': 0 is not in the range",
        ),
        (
            ["--min-batch-size", "5"],
            "--min-batch-size bounds an adaptive batch size: pass --target-batch-seconds",
        ),
    ],
    ids=["min-over-max", "zero", "negative", "nan", "inf", "max-zero", "bound-alone"],
)
def test_adaptive_options_that_make_no_sense_exit_2_and_write_nothing(
    cli: RunCli, make_db: MakeBackend, args: list[str], named: str
) -> None:
    db = make_db([GOOD] * 3)
    proc = cli(["run", "test_features", "-d", db.url, "-q", *args])
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr, proc.stderr
    assert "backfill_runs" not in db.tables()
    assert db.scalar("SELECT COUNT(*) FROM test_features") == 0


def test_a_ledger_without_the_batch_columns_is_read_and_then_gets_them(
    cli: RunCli, make_db: MakeBackend
) -> None:
    """A ledger made before runs recorded their batch sizes: ``status`` reads it, the next run adds
    the columns."""
    db = make_db([GOOD] * 10)
    run_json(cli, db, *FIXED)
    for column in ("batch_sizes", "slowest_write"):
        db.execute(f"ALTER TABLE backfill_runs DROP COLUMN {column}")
    (old,) = status_json(cli, db)
    assert old["batch_sizes"]["batches"] == 0

    run_json(cli, db, "--restart", "--batch-size", "4")
    newer, _ = status_json(cli, db)
    assert (newer["batch_sizes"]["batches"], newer["batch_sizes"]["max"]) == (3, 4)


def test_a_retry_of_errors_adapts_its_batches_too(cli: RunCli, make_db: MakeBackend) -> None:
    db = make_db(ROWS)
    run_json(cli, db, *FIXED)
    before = contents(db)

    (stats,) = run_json(
        cli,
        db,
        "--retry-errors",
        "--batch-size",
        "1",
        "--target-batch-seconds",
        "3600",
        "--max-batch-size",
        "4",
    )["extractors"]

    assert stats["processed"] == 30 and stats["errors"] == 30  # the BROKEN tests, still broken
    assert (stats["batch_sizes"]["min"], stats["batch_sizes"]["max"]) == (1, 4), stats
    assert contents(db)[0] == before[0]
