"""The built-in validator's queries touch each row a bounded number of times on PostgreSQL, however
little work_mem the server gives them: no metric scans a table once per row of another.

A subquery that PostgreSQL cannot hash within work_mem runs in full for every outer row, so a
metric that is instant on a small database can take hours on a large one. The rows each plan
node read (EXPLAIN ANALYZE's actual rows and rows removed, times its loops) say so without timing
anything. (SQLite has no such limit: it builds an index of an IN list once per query.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from backfill_core.app.validation import metric_queries, prepare
from backfill_core.store.database import Database, resolve_url
from backfill_plugins.testmanagement import synthetic
from backfill_plugins.testmanagement.validators import CoverageValidator
from support.cli import run_cli
from support.postgres import fetch, needs_server, scratch_database

pytestmark = needs_server
JOB = ["test_features", "bug_attribution"]
TOUCHES_PER_ROW = 20
"""Rows a metric's query may read per row of the tables it reads: a few scans and index lookups
of each; a table scanned once per row of another reads hundreds per row at this size."""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plans") / "source.db"
    synthetic.build(path, tests=1000, messy=0.05, seed=5)
    return path


@pytest.fixture
def pg_url(source: Path) -> Iterator[str]:
    with scratch_database(source) as url:
        yield url


def _touched(plan: dict[str, Any]) -> int:
    """The rows the plan's nodes read or passed on, each counted once per loop."""
    own = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
    own += plan.get("Rows Removed by Join Filter", 0) + plan.get("Rows Removed by Index Recheck", 0)
    return int(own * plan.get("Actual Loops", 1)) + sum(_touched(p) for p in plan.get("Plans", []))


async def _explain(conn: AsyncConnection, query: Any) -> dict[str, Any]:
    await conn.exec_driver_sql("SET LOCAL work_mem = '64kB'")  # the least the server allows
    await conn.exec_driver_sql("SET LOCAL hash_mem_multiplier = 1")
    await prepare(conn, query)
    sql = query.execution_options(backfill_ledger=True).compile(
        dialect=conn.dialect, compile_kwargs={"literal_binds": True}
    )
    result = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
    plan: dict[str, Any] = result.scalar_one()[0]["Plan"]  # the driver decodes the JSON
    return plan


def test_no_metric_scans_a_table_once_per_row_of_another(pg_url: str) -> None:
    run = run_cli(["run", *JOB, "-d", pg_url, "-q", "--no-validate", "--max-error-rate", "1"])
    assert run.returncode == 0, run.stdout + run.stderr
    asyncio.run(fetch(pg_url, "ANALYZE"))
    counts = asyncio.run(
        fetch(
            pg_url,
            "SELECT (SELECT count(*) FROM tests), (SELECT count(*) FROM test_features), "
            "(SELECT count(*) FROM bugs), (SELECT count(*) FROM backfill_errors)",
        )
    )[0]
    tests, features, bugs, errors = counts
    assert features > 2048 and errors > 0  # too many to hash in 64 kB (32 bytes a row); errors to look up
    rows = tests + 2 * features + bugs + errors  # a listed feature is about one test_features row

    async def go() -> dict[str, int]:
        touched: dict[str, int] = {}
        async with Database(resolve_url(pg_url)) as db:
            for m in CoverageValidator().metrics():
                for i, query in enumerate(metric_queries(m, db.sa_dialect)):
                    async with db.sqlalchemy() as conn:
                        touched[f"{m.name}[{i}]"] = _touched(await _explain(conn, query))
        return touched

    touched = asyncio.run(go())
    assert set(touched) >= {"tests_with_features[0]", "features_accounted[0]"}
    assert {name: n for name, n in touched.items() if n > TOUCHES_PER_ROW * rows} == {}, (rows, touched)
