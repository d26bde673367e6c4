"""``backfill demo``: builds a synthetic database, backfills it, and never clobbers other files.

SQLite only: ``backfill demo`` builds a SQLite file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from support.cli import RunCli, parse_json_output, stats_by_name
from support.sqlite import scalar, sha256


def _demo_ok(proc: object, path: Path, tests: int) -> None:
    out, err, code = proc.stdout, proc.stderr, proc.returncode  # type: ignore[attr-defined]
    assert code == 0, out + err
    assert err.startswith(f"built {path}: {tests} tests, ")
    assert "deliberately messy" in err
    assert scalar(path, "SELECT count(*) FROM tests") == tests


def test_demo_builds_runs_and_validates(cli: RunCli, tmp_path: Path) -> None:
    path = tmp_path / "demo.db"

    proc = cli(["demo", path, "--tests", "150", "--quiet"])

    _demo_ok(proc, path, 150)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"database: sqlite+aiosqlite:///{path}"
    names = [line.split()[0] for line in lines[2:4]]
    assert names == ["test_features", "bug_attribution"]
    verdicts = [line.split()[0] for line in lines if line.startswith("  ") and "coverage." in line]
    assert verdicts and set(verdicts) <= {"pass", "info"}
    assert "pass" in verdicts
    assert scalar(path, "SELECT count(*) FROM test_features") > 0
    assert scalar(path, "SELECT count(*) FROM bugs WHERE test_feature_id IS NOT NULL") > 0


def test_demo_rebuilds_an_earlier_demo_database(cli: RunCli, tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    _demo_ok(cli(["demo", path, "--tests", "150", "--quiet"]), path, 150)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO tests (id, customer_id, product_id, status, data) "
        "VALUES (999999, 1, 1, 'archived', 'left over')"
    )
    conn.commit()
    conn.close()

    proc = cli(["demo", path, "--tests", "120", "--quiet", "--json"])

    _demo_ok(proc, path, 120)
    assert scalar(path, "SELECT count(*) FROM tests WHERE id = 999999") == 0
    report = parse_json_output(proc)
    assert report["exit_code"] == 0
    stats = stats_by_name(report)
    assert list(stats) == ["test_features", "bug_attribution"]
    assert stats["test_features"]["processed"] == 120
    assert stats["test_features"]["inserted"] == scalar(path, "SELECT count(*) FROM test_features")
    assert all(m["passed"] for m in report["validation"])


def _plain_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE precious (id INTEGER PRIMARY KEY, note TEXT)")
    conn.execute("INSERT INTO precious VALUES (1, 'do not delete')")
    conn.commit()
    conn.close()


def _application_cache(path: Path) -> None:
    """A real test-management database, with the right tables, that no demo built."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tests (id INTEGER PRIMARY KEY, customer_id INTEGER, data TEXT)")
    conn.execute("INSERT INTO tests VALUES (1, 1, '{}')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "make",
    [
        _plain_sqlite,
        _application_cache,
        lambda p: p.write_text("not a database\n"),
        lambda p: p.write_bytes(b""),
    ],
    ids=["sqlite", "app-cache", "text", "empty"],
)
def test_demo_refuses_to_overwrite_other_files(cli: RunCli, tmp_path: Path, make: object) -> None:
    path = tmp_path / "mine.db"
    make(path)  # type: ignore[operator]
    digest = sha256(path)

    proc = cli(["demo", path, "--tests", "150", "--quiet"])

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is not a backfill demo database" in proc.stderr
    assert sha256(path) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.db"]
