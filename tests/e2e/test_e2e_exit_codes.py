"""Exit codes 1, 2 and 3 of ``backfill run``, each with what the database looks like afterwards, on
a SQLite file and on a scratch PostgreSQL database.

(0 is covered by every successful run, 130 by test_e2e_interrupt.py.)
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.backends import KINDS, Backend, builtin_backend
from support.builtin_job import Expected, attributions, features_by_test, snapshot
from support.cli import RunCli, parse_json_output, stats_by_name
from support.db import fingerprint, scalar
from support.postgres import SERVER
from support.processes import Spawned, wait_for
from support.sqlite import sha256

BOTH = ["run", "test_features", "bug_attribution"]


@pytest.fixture(scope="module", params=KINDS)
def untouched_db(
    request: pytest.FixtureRequest, template_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """One database of each kind for the tests here that must write nothing (each checks that it
    did not), so that they do not each pay for a scratch database."""
    folder = tmp_path_factory.mktemp("untouched")
    with builtin_backend(request.param, template_db, folder / "untouched.db") as backend:
        yield backend


# -- 1: validation failed, or the run stopped -------------------------------------------------------


def test_threshold_above_coverage_fails_validation(cli: RunCli, db: Backend) -> None:
    proc = cli([*BOTH, "-d", db.url, "--quiet", "--threshold", "coverage=1.0"])

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  coverage.tests_with_features" in proc.stdout
    assert "(threshold 100%)" in proc.stdout
    assert scalar(db, "SELECT count(*) FROM test_features") > 0  # the backfill itself is kept

    as_json = parse_json_output(
        cli([*BOTH, "-d", db.url, "--quiet", "--json", "--threshold", "coverage=100%"])
    )
    assert as_json["exit_code"] == 1
    failed = {m["metric"] for m in as_json["validation"] if not m["passed"]}
    assert "tests_with_features" in failed
    assert all(m["threshold"] == 1.0 for m in as_json["validation"] if m["threshold"] is not None)


def test_threshold_for_one_metric_only(cli: RunCli, db: Backend) -> None:
    proc = cli([*BOTH, "-d", db.url, "--quiet", "--json", "--threshold", "coverage.bugs_attributed=1"])

    assert proc.returncode == 1
    failed = [m["metric"] for m in parse_json_output(proc)["validation"] if not m["passed"]]
    assert failed == ["bugs_attributed"]


def test_max_error_rate_zero_stops_the_run(cli: RunCli, db: Backend) -> None:
    expected = Expected(db)
    first_bad = min(expected.test_errors)
    assert first_bad <= 50, "the first batch should hold a malformed test"

    proc = cli([*BOTH, "-d", db.url, "--quiet", "--max-error-rate", "0", "--batch-size", "50"])

    assert proc.returncode == 1, proc.stdout + proc.stderr
    stopped = [line for line in proc.stdout.splitlines() if "STOPPED" in line]
    assert len(stopped) == 1, proc.stdout
    assert stopped[0].lstrip().startswith("test_features STOPPED: error rate")
    assert "--max-error-rate" in stopped[0]
    assert "after 50 rows" in stopped[0]
    assert "validation: skipped (the run stopped early)" in proc.stdout
    # the first batch was committed, nothing after it, and bug_attribution never ran
    assert features_by_test(db) == {t: ids for t, ids in expected.features.items() if t <= 50}
    assert scalar(db, "SELECT count(*) FROM bugs WHERE test_feature_id IS NOT NULL") == 0


def test_max_error_rate_zero_json(cli: RunCli, db: Backend) -> None:
    args = ["--max-error-rate", "0", "--batch-size", "50"]
    proc = cli([*BOTH, "-d", db.url, "--quiet", "--json", *args])

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
    cli: RunCli, untouched_db: Backend, args: list[str], message: str
) -> None:
    db = untouched_db
    digest = fingerprint(db)

    proc = cli([*args, "-d", db.url, "--quiet"] if args[0] == "run" else [*args, "-d", db.url])

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert fingerprint(db) == digest


def test_unknown_extractor_lists_the_available_ones(cli: RunCli, untouched_db: Backend) -> None:
    proc = cli(["run", "no_such_extractor", "-d", untouched_db.url])

    assert proc.returncode == 2
    assert "available: bug_attribution, test_features" in proc.stderr


def test_threshold_naming_no_metric_is_rejected_before_anything_is_written(
    cli: RunCli, untouched_db: Backend
) -> None:
    """A misspelt --threshold is a usage error (exit 2): it must be caught before the run
    writes, not after the whole backfill has been committed."""
    db = untouched_db
    digest = fingerprint(db)

    proc = cli([*BOTH, "-d", db.url, "--quiet", "--threshold", "coverag=0.9"])

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "coverag" in proc.stderr
    written = scalar(db, "SELECT count(*) FROM test_features")
    assert (written, fingerprint(db) == digest) == (0, True)


# -- 3: environment errors, and nothing is written ---------------------------------------------------


# SQLite only: a file path; a missing PostgreSQL database is test_e2e_other_application's.
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


@pytest.mark.postgres
@pytest.mark.skipif(not SERVER, reason="set BACKFILL_TEST_POSTGRES_URL to run the PostgreSQL tests")
def test_a_missing_postgresql_database_from_the_environment(cli: RunCli) -> None:
    """The PostgreSQL form of the test above: a database the server does not have."""
    assert SERVER
    missing = SERVER.rsplit("/", 1)[0] + "/backfill_no_such_database"

    proc = cli([*BOTH, "--quiet", "--json"], env={"BACKFILL_DATABASE_URL": missing})

    assert proc.returncode == 3, proc.stdout + proc.stderr
    shown = "postgresql+asyncpg://" + missing.split("://", 1)[1]
    assert parse_json_output(proc) == {
        "error": f'could not connect to {shown}: database "backfill_no_such_database" does not exist '
        "(the database 'backfill_no_such_database' named in the URL does not exist on that server; create it "
        "(`createdb backfill_no_such_database`) and the application's tables, or fix the URL)",
        "exit_code": 3,
    }


def test_missing_table_exits_3_before_anything_is_written(cli: RunCli, db: Backend) -> None:
    db.execute("DROP TABLE bugs")
    digest = fingerprint(db)

    # test_features runs first and its own tables are fine: it must not write either
    proc = cli([*BOTH, "-d", db.url, "--quiet"])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "table 'bugs' does not exist" in proc.stderr
    assert fingerprint(db) == digest


@pytest.mark.parametrize(("table", "column"), [("tests", "data"), ("bugs", "raw_data")])
def test_missing_column_exits_3_before_anything_is_written(
    cli: RunCli, db: Backend, table: str, column: str
) -> None:
    db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    digest = fingerprint(db)

    proc = cli([*BOTH, "-d", db.url, "--quiet"])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"table '{table}' has no column '{column}'" in proc.stderr
    assert fingerprint(db) == digest
    assert scalar(db, "SELECT count(*) FROM test_features") == 0


# SQLite only: its database lock and busy timeout; a locked table or row on PostgreSQL is below.
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


HOLD_LOCK = """
import asyncio, sys

import asyncpg


async def hold(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    async with conn.transaction():
        await conn.execute(statement)
        print("locked", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await conn.close()


asyncio.run(hold(sys.argv[1], sys.argv[2]))
"""
"""``python -c HOLD_LOCK URL STATEMENT``: runs STATEMENT in a transaction, prints "locked", and
commits once a line arrives on stdin."""

LOCKS = {
    "table": "LOCK TABLE test_features IN ACCESS EXCLUSIVE MODE",
    "row": "SELECT id FROM bugs ORDER BY id LIMIT 1 FOR UPDATE",
}

WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
)
"""How many sessions of this database wait on a lock."""


@pytest.mark.postgres
@pytest.mark.skipif(not SERVER, reason="set BACKFILL_TEST_POSTGRES_URL to run the PostgreSQL tests")
@pytest.mark.parametrize("lock", list(LOCKS))
def test_a_locked_postgresql_table_or_row_is_waited_for_and_nothing_is_lost(
    template_db: Path, tmp_path: Path, lock: str
) -> None:
    """The PostgreSQL counterpart of the test above: the run waits on another transaction's lock
    (a whole table that it writes, or one row that it updates) with no bug attributed meanwhile,
    and ends as a full run once the lock is released."""
    with builtin_backend("postgresql", template_db, tmp_path / "unused") as db:
        expected = Expected(db)
        run: Spawned | None = None
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, db.url, LOCKS[lock]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            run = Spawned([*BOTH, "-d", db.url, "--quiet"], tmp_path / "procs")
            try:
                assert wait_for(lambda: db.scalar(WAITING) == 1, run), run.wait().stderr
                assert db.scalar("SELECT count(*) FROM bugs WHERE test_feature_id IS NOT NULL") == 0
            finally:
                holder.communicate("release\n", timeout=60)
            done = run.wait()
        finally:
            if run is not None:
                run.stop()
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        assert done.returncode == 0, done.stderr
        assert features_by_test(db) == expected.features
        assert attributions(db) == expected.attribution


# -- leaving: the command skips interpreter teardown, not what exit must do -------------------------


# SQLite only, here and below: the interpreter's exit, whatever the database.
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
