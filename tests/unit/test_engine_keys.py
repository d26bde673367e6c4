"""Composite keys and identifiers that need quoting, through the engine's driver-level SQL.

Runs on a real SQLite file, and on PostgreSQL too when BACKFILL_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from backfill_core import (
    Extractor,
    RecordError,
    Ref,
    RunOptions,
    RunReport,
    Update,
    Upsert,
    hookimpl,
    make_registry,
    parse_json,
    resolve_url,
    run_backfill,
)
from backfill_core.engine.stats import ErrorLog

SERVER = os.environ.get("BACKFILL_TEST_POSTGRES_URL")
SCHEMA = [
    'CREATE TABLE "order" (id INTEGER PRIMARY KEY, "group" TEXT, payload TEXT, "tag count" INTEGER)',
    'CREATE TABLE "order tags" (order_id INTEGER NOT NULL, "tag name" TEXT NOT NULL, "select" INTEGER, '
    'PRIMARY KEY (order_id, "tag name"))',
    'CREATE TABLE "group" (name TEXT PRIMARY KEY, region TEXT)',
]


class OrderTags(Extractor):
    """One row per (order, tag), keyed by both; the tag count back on the order."""

    name = "order_tags"
    source = "order"
    columns = ("id", "group", "payload")
    writes = {"order tags": ("order_id", "tag name", "select"), "order": ("id", "tag count")}

    def extract(self, row: Any) -> list[Upsert | Update]:
        tags = parse_json(row["payload"], "order.payload")
        if not isinstance(tags, list):
            raise RecordError("order.payload is not a list", kind="invalid-shape")
        requires = (Ref("group", "name", row["group"], match={"region": "eu"}),)
        changes: list[Upsert | Update] = [
            Upsert("order tags", {"tag name": tag, "order_id": row["id"]}, {"select": i}, requires=requires)
            for i, tag in enumerate(tags)
        ]
        changes.append(Update("order", {"id": row["id"]}, {"tag count": len(tags)}))
        return changes


class Plugin:
    @hookimpl
    def register_extractors(self, register: Callable[[Extractor], None]) -> None:
        register(OrderTags())


ORDERS = [
    (1, "a", '["x", "y"]'),
    (2, "a", '["y"]'),
    (3, "b", '["z"]'),  # group b is not in the eu: an integrity failure
    (4, "a", "{}"),  # not a list: a record error
]
GROUPS = [("a", "eu"), ("b", "us")]


class Target:
    """A database holding SCHEMA, with SQL run on it synchronously by the test."""

    def __init__(self, url: str, run_sql: Callable[[str, list[tuple[Any, ...]]], list[tuple[Any, ...]]]):
        self.url = url
        self.sql = run_sql


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        path = tmp_path / "keys.db"
        with sqlite3.connect(path) as conn:
            for ddl in SCHEMA:
                conn.execute(ddl)

        def sqlite_sql(sql: str, params: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as conn:
                if params:
                    conn.executemany(sql.replace("$1", "?").replace("$2", "?").replace("$3", "?"), params)
                    return []
                return conn.execute(sql).fetchall()

        yield Target(str(path), sqlite_sql)
        return
    if not SERVER:
        pytest.skip("set BACKFILL_TEST_POSTGRES_URL to run the PostgreSQL tests")
    name = f"backfill_keys_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg(SERVER, f"CREATE DATABASE {name}", []))
    url = SERVER.rsplit("/", 1)[0] + "/" + name
    for ddl in SCHEMA:
        asyncio.run(_pg(url, ddl, []))
    try:
        yield Target(url, lambda sql, params: asyncio.run(_pg(url, sql, params)))
    finally:
        asyncio.run(_pg(SERVER, f"DROP DATABASE {name} WITH (FORCE)", []))


async def _pg(url: str, sql: str, params: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        if params:
            await conn.executemany(sql, params)
            return []
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def run(target: Target) -> dict[str, Any]:
    options = RunOptions(batch_size=2, max_error_rate=1.0)
    report = RunReport(database=target.url, dry_run=False, errors=ErrorLog(keep=100))
    asyncio.run(
        run_backfill(make_registry(Plugin()), ["order_tags"], resolve_url(target.url), options, report)
    )
    (stats,) = report.extractors
    return {
        "counts": (stats.processed, stats.inserted, stats.updated, stats.unchanged),
        "errors": sorted((e.key, e.kind) for e in report.errors.first),
    }


def tag_rows(target: Target) -> list[tuple[Any, ...]]:
    return target.sql('SELECT order_id, "tag name", "select" FROM "order tags" ORDER BY 1, 2', [])


def test_composite_keys_and_quoted_names_insert_then_leave_unchanged(target: Target) -> None:
    target.sql('INSERT INTO "order" (id, "group", payload) VALUES ($1, $2, $3)', ORDERS)
    target.sql('INSERT INTO "group" (name, region) VALUES ($1, $2)', GROUPS)

    first = run(target)
    # rows 1 and 2: three tags and two order updates; row 3 fails its reference, row 4 its JSON
    assert first["counts"] == (4, 3, 2, 0)
    assert first["errors"] == [(3, "integrity"), (4, "invalid-shape")]
    assert tag_rows(target) == [(1, "x", 0), (1, "y", 1), (2, "y", 0)]
    assert target.sql('SELECT id, "tag count" FROM "order" ORDER BY id', []) == [
        (1, 2),
        (2, 1),
        (3, None),
        (4, None),
    ]

    assert run(target)["counts"] == (4, 0, 0, 5)

    target.sql('UPDATE "order tags" SET "select" = $1 WHERE order_id = $2', [(9, 1)])
    assert run(target)["counts"] == (4, 0, 2, 3)
    assert tag_rows(target) == [(1, "x", 0), (1, "y", 1), (2, "y", 0)]
