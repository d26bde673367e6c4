"""Exit codes 1, 2 and 3 of ``backfill run``, each with what the database looks like afterwards.

(0 is covered by every successful run, 130 by test_e2e_interrupt.py.)
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from support.builtin_job import Expected, features_by_test, snapshot
from support.cli import RunCli, parse_json_output, stats_by_name
from support.sqlite import drop_column, scalar, sha256

BOTH = ["run", "test_features", "bug_attribution"]

# -- 1: validation failed, or the run stopped -------------------------------------------------------


def test_threshold_above_coverage_fails_validation(cli: RunCli, fresh_db: Path) -> None:
    proc = cli([*BOTH, "-d", fresh_db, "--quiet", "--threshold", "coverage=1.0"])

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  coverage.tests_with_features" in proc.stdout
    assert "(threshold 100%)" in proc.stdout
    assert scalar(fresh_db, "SELECT count(*) FROM test_features") > 0  # the backfill itself is kept

    as_json = parse_json_output(
        cli([*BOTH, "-d", fresh_db, "--quiet", "--json", "--threshold", "coverage=100%"])
    )
    assert as_json["exit_code"] == 1
    failed = {m["metric"] for m in as_json["validation"] if not m["passed"]}
    assert "tests_with_features" in failed
    assert all(m["threshold"] == 1.0 for m in as_json["validation"] if m["threshold"] is not None)


def test_threshold_for_one_metric_only(cli: RunCli, fresh_db: Path) -> None:
    proc = cli([*BOTH, "-d", fresh_db, "--quiet", "--json", "--threshold", "coverage.bugs_attributed=1"])

    assert proc.returncode == 1
    failed = [m["metric"] for m in parse_json_output(proc)["validation"] if not m["passed"]]
    assert failed == ["bugs_attributed"]


def test_max_error_rate_zero_stops_the_run(cli: RunCli, fresh_db: Path) -> None:
    expected = Expected(fresh_db)
    first_bad = min(expected.test_errors)
    assert first_bad <= 50, "the first batch should hold a malformed test"

    proc = cli([*BOTH, "-d", fresh_db, "--quiet", "--max-error-rate", "0", "--batch-size", "50"])

    assert proc.returncode == 1, proc.stdout + proc.stderr
    stopped = [line for line in proc.stdout.splitlines() if "STOPPED" in line]
    assert len(stopped) == 1, proc.stdout
    assert stopped[0].lstrip().startswith("test_features STOPPED: error rate")
    assert "--max-error-rate" in stopped[0]
    assert "after 50 rows" in stopped[0]
    assert "validation: skipped (the run stopped early)" in proc.stdout
    # the first batch was committed, nothing after it, and bug_attribution never ran
    assert features_by_test(fresh_db) == {t: ids for t, ids in expected.features.items() if t <= 50}
    assert scalar(fresh_db, "SELECT count(*) FROM bugs WHERE test_feature_id IS NOT NULL") == 0


def test_max_error_rate_zero_json(cli: RunCli, fresh_db: Path) -> None:
    proc = cli([*BOTH, "-d", fresh_db, "--quiet", "--json", "--max-error-rate", "0", "--batch-size", "50"])

    assert proc.returncode == 1
    report = parse_json_output(proc)
    assert report["exit_code"] == 1
    assert list(stats_by_name(report)) == ["test_features"]
    tf = report["extractors"][0]
    assert tf["processed"] == 50 < tf["total"]
    assert "max-error-rate" in tf["stopped"]
    assert report["validation"] is None


# -- 2: usage errors, and nothing is written --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such_extractor"], "unknown extractor 'no_such_extractor'"),
        (["run", "test_features", "no_such_extractor"], "unknown extractor 'no_such_extractor'"),
        (["run", "test_features", "--batch-size", "0"], "--batch-size"),
        (["run", "test_features", "--max-error-rate", "1.5"], "--max-error-rate"),
        (["run", "test_features", "--threshold", "coverage=2"], "--threshold"),
        (["run"], "name at least one extractor"),
        (["run", "test_features", "--bogus-option"], "--bogus-option"),
        (["validate", "no_such_validator"], "unknown validator 'no_such_validator'"),
    ],
    ids=[
        "unknown",
        "unknown-beside-known",
        "batch-size-0",
        "error-rate-1.5",
        "threshold-2",
        "no-names",
        "bad-option",
        "unknown-validator",
    ],
)
def test_usage_errors_exit_2_and_write_nothing(
    cli: RunCli, fresh_db: Path, args: list[str], message: str
) -> None:
    digest = sha256(fresh_db)

    proc = cli([*args, "-d", fresh_db, "--quiet"] if args[0] == "run" else [*args, "-d", fresh_db])

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert sha256(fresh_db) == digest


def test_unknown_extractor_lists_the_available_ones(cli: RunCli, fresh_db: Path) -> None:
    proc = cli(["run", "no_such_extractor", "-d", fresh_db])

    assert proc.returncode == 2
    assert "available: bug_attribution, test_features" in proc.stderr


def test_threshold_naming_no_metric_is_rejected_before_anything_is_written(
    cli: RunCli, fresh_db: Path
) -> None:
    """A misspelt --threshold is a usage error (exit 2): it must be caught before the run
    writes, not after the whole backfill has been committed."""
    digest = sha256(fresh_db)

    proc = cli([*BOTH, "-d", fresh_db, "--quiet", "--threshold", "coverag=0.9"])

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "coverag" in proc.stderr
    written = scalar(fresh_db, "SELECT count(*) FROM test_features")
    assert (written, sha256(fresh_db) == digest) == (0, True)


# -- 3: environment errors, and nothing is written ---------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [[*BOTH, "--quiet"], [*BOTH, "--quiet", "--dry-run"], ["validate"]],
    ids=["run", "dry-run", "validate"],
)
def test_missing_database_file_exits_3_and_is_not_created(
    cli: RunCli, tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "absent.db"

    proc = cli([*command, "-d", missing])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"database file {missing} does not exist" in proc.stderr
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_database_from_the_environment(cli: RunCli, tmp_path: Path) -> None:
    missing = tmp_path / "from-env.db"

    proc = cli([*BOTH, "--quiet", "--json"], env={"BACKFILL_DATABASE_URL": str(missing)})

    assert proc.returncode == 3
    assert parse_json_output(proc) == {
        "error": f"database file {missing} does not exist; pass --database PATH or set BACKFILL_DATABASE_URL",
        "exit_code": 3,
    }
    assert not missing.exists()


def test_missing_table_exits_3_before_anything_is_written(cli: RunCli, fresh_db: Path) -> None:
    conn = sqlite3.connect(fresh_db)
    conn.execute("DROP TABLE bugs")
    conn.commit()
    conn.close()
    digest = sha256(fresh_db)

    # test_features runs first and its own tables are fine: it must not write either
    proc = cli([*BOTH, "-d", fresh_db, "--quiet"])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "table 'bugs' does not exist" in proc.stderr
    assert sha256(fresh_db) == digest


@pytest.mark.parametrize(("table", "column"), [("tests", "data"), ("bugs", "raw_data")])
def test_missing_column_exits_3_before_anything_is_written(
    cli: RunCli, fresh_db: Path, table: str, column: str
) -> None:
    drop_column(fresh_db, table, column)
    digest = sha256(fresh_db)

    proc = cli([*BOTH, "-d", fresh_db, "--quiet"])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"table '{table}' has no column '{column}'" in proc.stderr
    assert sha256(fresh_db) == digest
    assert scalar(fresh_db, "SELECT count(*) FROM test_features") == 0


@pytest.mark.parametrize("lock", ["EXCLUSIVE", "IMMEDIATE"])
def test_locked_database_exits_3_without_partial_writes(cli: RunCli, fresh_db: Path, lock: str) -> None:
    """EXCLUSIVE blocks even reading the schema; IMMEDIATE lets the run read and plan, then
    blocks its first write transaction."""
    before = snapshot(fresh_db)
    digest = sha256(fresh_db)
    holder = sqlite3.connect(fresh_db, isolation_level=None)
    try:
        holder.execute(f"BEGIN {lock}")
        proc = cli([*BOTH, "-d", fresh_db, "--quiet"], env={"BACKFILL_BUSY_TIMEOUT": "0.5"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "locked" in proc.stderr
    assert "BACKFILL_BUSY_TIMEOUT" in proc.stderr
    assert sha256(fresh_db) == digest
    assert snapshot(fresh_db) == before


# -- leaving: the command skips interpreter teardown, not what exit must do -------------------------


def test_exit_runs_atexit_handlers_and_flushes_output(fresh_db: Path) -> None:
    """The CLI leaves with os._exit after its work; handlers registered with atexit still run,
    buffered output is written, and the exit code is the command's."""
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
        "sys.stdout.write('buffered, no newline')\n"
        f"sys.argv = ['backfill', 'validate', '-d', {str(fresh_db)!r}, '--threshold', 'coverage=1.0']\n"
        "from backfill_core.app.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1, proc.stderr  # coverage below 100% before any backfill
    assert proc.stdout.startswith("buffered, no newline"), proc.stdout
    assert "FAIL" in proc.stdout
    assert proc.stderr.rstrip().endswith("atexit ran"), proc.stderr


def test_exit_waits_for_a_thread_a_plugin_left_running(fresh_db: Path) -> None:
    """With another thread alive the command exits the normal way, which waits for it."""
    script = (
        "import sys, threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done', flush=True))).start()\n"
        "sys.argv = ['backfill', '--version']\n"
        "from backfill_core.app.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "thread done" in proc.stdout, proc.stdout
