"""The same backfill on PostgreSQL as on SQLite: identical tables, same counts, dry run writes nothing.

Runs against the server named by BACKFILL_TEST_POSTGRES_URL (CI sets it), in a database of its
own that is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill_plugins.testmanagement import synthetic
from support.postgres import fetch, needs_server, scratch_database

pytestmark = needs_server
BACKFILL = str(Path(sys.executable).parent / "backfill")
FEATURES = "SELECT * FROM test_features ORDER BY id"
BUGS = "SELECT id, test_feature_id FROM bugs ORDER BY id"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BACKFILL, *args, "--quiet", "--json"], capture_output=True, text=True, timeout=300)


def _fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    return asyncio.run(fetch(url, sql))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pg") / "source.db"
    synthetic.build(path, tests=300, seed=7)
    return path


@pytest.fixture
def pg_url(source: Path) -> Iterator[str]:
    with scratch_database(source) as url:
        yield url


def test_postgres_matches_sqlite(pg_url: str, source: Path, tmp_path: Path) -> None:
    lite = tmp_path / "lite.db"
    shutil.copy(source, lite)
    on_lite = _run("run", "test_features", "bug_attribution", "-d", str(lite), "--no-validate")
    on_pg = _run("run", "test_features", "bug_attribution", "-d", pg_url, "--no-validate")
    assert on_lite.returncode == 0, on_lite.stderr
    assert on_pg.returncode == 0, on_pg.stderr

    def counts(out: str) -> list[tuple[Any, ...]]:
        doc = json.loads(out)
        return [
            (x["extractor"], x["processed"], x["inserted"], x["updated"], x["unchanged"], x["errors_by_tier"])
            for x in doc["extractors"]
        ]

    assert counts(on_pg.stdout) == counts(on_lite.stdout)
    with sqlite3.connect(lite) as conn:
        lite_features = [
            tuple(bool(v) if i >= 8 and v is not None else v for i, v in enumerate(r))
            for r in conn.execute(FEATURES)
        ]
        lite_bugs = conn.execute(BUGS).fetchall()
    assert len(lite_features) > 300
    assert _fetch(pg_url, FEATURES) == lite_features
    assert _fetch(pg_url, BUGS) == lite_bugs


def test_postgres_second_run_and_dry_run_write_nothing(pg_url: str) -> None:
    dry = _run("run", "test_features", "bug_attribution", "-d", pg_url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    would = {x["extractor"]: x for x in json.loads(dry.stdout)["extractors"]}
    assert _fetch(pg_url, "SELECT count(*) FROM test_features") == [(0,)]
    assert _fetch(pg_url, "SELECT count(test_feature_id) FROM bugs") == [(0,)]

    first = _run("run", "test_features", "bug_attribution", "-d", pg_url, "--no-validate")
    assert first.returncode == 0, first.stderr
    done = {x["extractor"]: x for x in json.loads(first.stdout)["extractors"]}
    assert done["test_features"]["inserted"] == would["test_features"]["inserted"] > 0
    assert done["bug_attribution"]["updated"] == would["bug_attribution"]["updated"] > 0

    second = _run("run", "test_features", "bug_attribution", "-d", pg_url, "--no-validate")
    again = json.loads(second.stdout)["extractors"]
    assert [(x["inserted"], x["updated"]) for x in again] == [(0, 0), (0, 0)]


def test_postgres_missing_table_is_exit_3(pg_url: str) -> None:
    _fetch(pg_url, "DROP TABLE bugs")
    result = _run("run", "bug_attribution", "-d", pg_url)
    assert result.returncode == 3
    assert "'bugs' does not exist" in result.stderr


def test_postgres_fused_metric_counts_match_separate_queries(pg_url: str) -> None:
    """A numerator and its denominator in one scan give the counts the two queries give (every
    coverage metric but tests_with_features, whose IN (SELECT ...) runs on its own)."""
    from backfill_core import Database, resolve_url
    from backfill_core.app.validation import fused, prepare
    from backfill_plugins.testmanagement.validators import CoverageValidator

    assert _run("run", "test_features", "bug_attribution", "-d", pg_url, "--no-validate").returncode == 0

    async def go() -> list[tuple[str, tuple[Any, ...] | None, tuple[Any, ...]]]:
        out: list[tuple[str, tuple[Any, ...] | None, tuple[Any, ...]]] = []
        async with Database(resolve_url(pg_url)) as db, db.sqlalchemy() as conn:
            for m in CoverageValidator().metrics():
                both = fused(m, db.sa_dialect)
                for q in (m.numerator, m.denominator):
                    await prepare(conn, q)
                apart = tuple([(await conn.execute(q)).scalar_one() for q in (m.numerator, m.denominator)])
                if m.name == "tests_with_features":  # IN (SELECT ...): a semi-join on its own
                    assert both is None
                    out.append((m.name, None, apart))
                    continue
                assert both is not None, m.name
                await prepare(conn, both)
                out.append((m.name, tuple((await conn.execute(both)).one()), apart))
        return out

    results = asyncio.run(go())
    assert len(results) == 5
    for name, together, apart in results:
        assert together is None or together == apart, name
        assert apart[1] > 0, name
