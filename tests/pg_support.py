"""Scratch PostgreSQL databases for the tests, on the server named by BACKFILL_TEST_POSTGRES_URL.

Each scratch database is created with the built-in job's tables, filled from a synthetic SQLite
file, and dropped afterwards. Tests that use it are marked ``postgres`` and skipped (reported as
such) when the variable is not set.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

SERVER = os.environ.get("BACKFILL_TEST_POSTGRES_URL")
needs_server = [
    pytest.mark.postgres,
    pytest.mark.skipif(not SERVER, reason="set BACKFILL_TEST_POSTGRES_URL to run the PostgreSQL tests"),
]
SCHEMA = """
CREATE TABLE tests (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, product_id INTEGER,
                    status TEXT, data TEXT);
CREATE TABLE test_features (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
    test_id INTEGER NOT NULL REFERENCES tests(id), feature_id INTEGER, title TEXT NOT NULL DEFAULT '',
    description TEXT, howtofind TEXT, user_stories TEXT NOT NULL DEFAULT '[]', enable_default BOOLEAN,
    enable_content BOOLEAN, enable_visual BOOLEAN);
CREATE TABLE bugs (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, test_id INTEGER REFERENCES tests(id),
                   raw_data TEXT, test_feature_id INTEGER REFERENCES test_features(id));
"""


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def _load(url: str, source: Path) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA)
        with sqlite3.connect(source) as lite:
            tests = lite.execute("SELECT id, customer_id, product_id, status, data FROM tests").fetchall()
            bugs = lite.execute("SELECT id, customer_id, test_id, raw_data FROM bugs").fetchall()
        await conn.copy_records_to_table(
            "tests", records=tests, columns=["id", "customer_id", "product_id", "status", "data"]
        )
        await conn.copy_records_to_table(
            "bugs", records=bugs, columns=["id", "customer_id", "test_id", "raw_data"]
        )
    finally:
        await conn.close()


@contextmanager
def scratch_database(source: Path) -> Iterator[str]:
    """The URL of a new database holding ``source``'s tests and bugs; dropped on exit."""
    assert SERVER, "BACKFILL_TEST_POSTGRES_URL is not set"
    name = f"backfill_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(execute(SERVER, f'CREATE DATABASE "{name}"'))
    url = SERVER.rsplit("/", 1)[0] + "/" + name
    try:
        asyncio.run(_load(url, source))
        yield url
    finally:
        asyncio.run(execute(SERVER, f'DROP DATABASE "{name}" WITH (FORCE)'))
