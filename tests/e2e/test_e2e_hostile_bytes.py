"""A real file with TEXT that is not UTF-8 in every text column the built-in job reads: the run
exits 0, each damaged row is an ``invalid-encoding`` record error in ``backfill errors``, and every
other row is exactly what a run on the same file without the damaged rows makes of it; so with
--no-worker, --retry-errors and --dry-run.

PostgreSQL refuses text that is not valid UTF-8 on input (the test server's databases are UTF-8),
so the damaged rows cannot exist there: its side of the test runs on the file without them, and
must make the same rows as SQLite makes of the damaged file.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from support.builtin_job import shared_template, writable_copy
from support.cli import RunCli, parse_json_output, stats_by_name
from support.postgres import fetch, needs_server, scratch_database
from support.sqlite import query

TESTS = 200
PLAN = (
    ("data", ("raw_data", "raw_data")),
    ("customer_id", ("raw_data", "customer_id")),
    ("data", ("customer_id", "customer_id")),
)
"""For three tests with two bugs each: the column of the test to damage, and of each of its bugs.
Together they are every text column an extractor of the built-in job reads (``customer_id`` is an
INTEGER column, which SQLite lets hold TEXT); ``id``, the key of both, is an INTEGER PRIMARY KEY and
cannot. A test's bugs are all damaged, so that the file without the damaged rows keeps every
foreign key (PostgreSQL enforces them)."""
REPAIRED = (("tests", "data"), ("tests", "customer_id"), ("bugs", "raw_data"), ("bugs", "customer_id"))
FEATURES = "SELECT * FROM test_features ORDER BY id"
BUGS = "SELECT id, test_feature_id FROM bugs ORDER BY id"


def damage(path: Path) -> dict[str, set[int]]:
    """Put bytes that are not UTF-8 into the columns PLAN names: inside a JSON string (so the text
    is still JSON to SQLite's json_valid, which the validator's queries use), or after the digits
    of an id. The damaged keys, by table."""
    keys: dict[str, set[int]] = {"tests": set(), "bugs": set()}
    with sqlite3.connect(path) as con:
        pairs = "SELECT test_id FROM bugs GROUP BY test_id HAVING count(*) = 2 ORDER BY test_id LIMIT 3"
        tests = [r[0] for r in con.execute(pairs)]
        for test, (column, bug_columns) in zip(tests, PLAN, strict=True):
            _damage(con, "tests", column, test)
            keys["tests"].add(test)
            bugs = [r[0] for r in con.execute("SELECT id FROM bugs WHERE test_id = ? ORDER BY id", (test,))]
            for bug, bug_column in zip(bugs, bug_columns, strict=True):
                _damage(con, "bugs", bug_column, bug)
                keys["bugs"].add(bug)
    con.close()
    return keys


def _damage(con: sqlite3.Connection, table: str, column: str, key: int) -> None:
    (value,) = con.execute(f"SELECT {column} FROM {table} WHERE id = ?", (key,)).fetchone()
    raw = str(value).encode()
    at = raw.find(b'": "') + 4 if column != "customer_id" else len(raw)
    assert at > 3 or column == "customer_id"
    bad = raw[:at] + b"\xff\xfe" + raw[at:]
    con.execute(f"UPDATE {table} SET {column} = CAST(? AS TEXT) WHERE id = ?", (bad, key))


def without(path: Path, keys: dict[str, set[int]]) -> Path:
    """``path`` with the rows of ``keys`` deleted."""
    with sqlite3.connect(path) as con:
        for table, ids in keys.items():
            con.executemany(f"DELETE FROM {table} WHERE id = ?", [(k,) for k in ids])
    con.close()
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_template(tmp_path_factory, TESTS)


@pytest.fixture
def damaged(template: Path, tmp_path: Path) -> tuple[Path, dict[str, set[int]]]:
    path = writable_copy(template, tmp_path / "damaged.db")
    return path, damage(path)


def run(cli: RunCli, database: str, *args: str) -> dict[str, Any]:
    proc = cli(["run", "--all", "-d", database, "--quiet", "--json", *args])
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = parse_json_output(proc)
    return report


def kinds(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {name: dict(s["errors_by_tier"].get("record", {})) for name, s in stats_by_name(report).items()}


def recorded(cli: RunCli, path: Path, run_id: int) -> dict[str, set[Any]]:
    """The keys ``backfill errors RUN`` lists, by kind."""
    proc = cli(["errors", str(run_id), "-d", str(path), "--json"])
    assert proc.returncode == 0, proc.stderr
    out: dict[str, set[Any]] = {}
    for error in parse_json_output(proc):
        out.setdefault(error["kind"], set()).add(error["key"])
    return out


def tables(database: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """test_features and the bugs' attribution, as SQLite returns them."""
    if "://" not in database:
        return query(Path(database), FEATURES), query(Path(database), BUGS)
    features = [
        tuple(int(v) if isinstance(v, bool) else v for v in row)
        for row in asyncio.run(fetch(database, FEATURES))
    ]
    return features, list(asyncio.run(fetch(database, BUGS)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_server)])
def reference(request: pytest.FixtureRequest, template: Path, tmp_path: Path) -> Iterator[Any]:
    """``reference(keys)``: the database the clean run runs on, the template without the rows of
    ``keys``: a copy of the file, or a PostgreSQL database loaded from it."""
    with ExitStack() as stack:

        def make(keys: dict[str, set[int]]) -> str:
            path = without(writable_copy(template, tmp_path / "reference.db"), keys)
            if request.param == "sqlite":
                return str(path)
            return stack.enter_context(scratch_database(path))

        yield make


@pytest.mark.parametrize("worker", [[], ["--no-worker"]], ids=["worker", "no-worker"])
def test_damaged_rows_are_record_errors_and_every_other_row_is_exact(
    cli: RunCli, damaged: tuple[Path, dict[str, set[int]]], reference: Any, worker: list[str]
) -> None:
    path, keys = damaged
    report = run(cli, str(path), *worker)  # with validation: its queries read the damaged rows too
    assert report["exit_code"] == 0
    assert report["validation"] and all(m["passed"] is not False for m in report["validation"])
    clean_url = reference(keys)
    clean = run(cli, clean_url, "--no-validate")

    got, want = kinds(report), kinds(clean)
    assert got["test_features"].pop("invalid-encoding") == len(keys["tests"]) == 3
    assert got["bug_attribution"].pop("invalid-encoding") == len(keys["bugs"]) == 6
    assert got == want
    by_name, clean_by_name = stats_by_name(report), stats_by_name(clean)
    for name, table in (("test_features", "tests"), ("bug_attribution", "bugs")):
        assert by_name[name]["processed"] == clean_by_name[name]["processed"] + len(keys[table])
        assert by_name[name]["error_rate"] < 0.05
        assert recorded(cli, path, by_name[name]["run_id"])["invalid-encoding"] == keys[table]

    features, bugs = tables(str(path))
    clean_features, clean_bugs = tables(clean_url)
    assert features == clean_features and len(features) > 500
    assert [b for b in bugs if b[0] not in keys["bugs"]] == clean_bugs


def test_retry_errors_records_them_again_then_takes_the_corrected_rows(
    cli: RunCli, template: Path, damaged: tuple[Path, dict[str, set[int]]], tmp_path: Path
) -> None:
    path, keys = damaged
    first = stats_by_name(run(cli, str(path), "--no-validate"))
    retried = stats_by_name(run(cli, str(path), "--retry-errors", "--no-validate"))
    for name, table in (("test_features", "tests"), ("bug_attribution", "bugs")):
        assert retried[name]["errors_by_tier"]["record"]["invalid-encoding"] == len(keys[table])
        assert recorded(cli, path, retried[name]["run_id"])["invalid-encoding"] == keys[table]

    with sqlite3.connect(path) as con:  # the application corrects the text
        con.execute("ATTACH DATABASE ? AS good", (f"file:{template}?mode=ro",))
        for table, column in REPAIRED:
            con.execute(
                f"UPDATE {table} SET {column} = "
                f"(SELECT {column} FROM good.{table} AS g WHERE g.id = {table}.id)"
            )
    con.close()
    fixed = stats_by_name(run(cli, str(path), "--retry-errors", "--no-validate"))
    for name in first:
        assert "invalid-encoding" not in fixed[name]["errors_by_tier"].get("record", {})
        assert "invalid-encoding" not in recorded(cli, path, fixed[name]["run_id"])

    clean = writable_copy(template, tmp_path / "clean.db")
    run(cli, str(clean), "--no-validate")
    assert tables(str(path)) == tables(str(clean))


@pytest.mark.parametrize("worker", [[], ["--no-worker"]], ids=["worker", "no-worker"])
def test_dry_run_counts_them_and_writes_nothing(
    cli: RunCli, damaged: tuple[Path, dict[str, set[int]]], worker: list[str]
) -> None:
    path, keys = damaged
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    report = run(cli, str(path), "--dry-run", *worker)
    assert kinds(report)["test_features"]["invalid-encoding"] == len(keys["tests"])
    assert kinds(report)["bug_attribution"]["invalid-encoding"] == len(keys["bugs"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
