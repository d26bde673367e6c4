"""One small test-management database on either backend: a SQLite file, or a scratch database on
the PostgreSQL server named by BACKFILL_TEST_POSTGRES_URL.

For tests that pin a contract on both databases: they build the same rows with ``Backend.add_tests``,
run the real engine or CLI on ``Backend.url``, and read the result back with ``Backend.rows``.
(``tests`` is on pytest's ``pythonpath``, so any test module can import this one.)
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

SERVER = os.environ.get("BACKFILL_TEST_POSTGRES_URL")
KINDS = ("sqlite", "postgresql")

SCHEMA = (
    "CREATE TABLE tests (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, product_id INTEGER, "
    "status TEXT, data TEXT)",
    "CREATE TABLE test_features (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
    "test_id INTEGER NOT NULL REFERENCES tests(id), feature_id INTEGER, title TEXT NOT NULL DEFAULT '', "
    "description TEXT, howtofind TEXT, user_stories TEXT NOT NULL DEFAULT '[]', enable_default BOOLEAN, "
    "enable_content BOOLEAN, enable_visual BOOLEAN)",
    "CREATE TABLE bugs (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
    "test_id INTEGER REFERENCES tests(id), raw_data TEXT, "
    "test_feature_id INTEGER REFERENCES test_features(id))",
)
"""The columns the built-in plugin reads and writes, in DDL both databases accept."""

# What a test's ``data`` can be, as far as the test_features extractor is concerned.
GOOD = "good"
"""One feature (id 1000 + the test's id): a test_features row, no error."""
BROKEN = "broken"
"""Truncated JSON: a record error (invalid-json), no row."""
EMPTY = "empty"
"""An empty feature list: no row and no error (it lowers the coverage metric only)."""


def data_for(test_id: int, kind: str) -> str:
    if kind == GOOD:
        return json.dumps({"features": [{"id": 1000 + test_id, "title": f"feature of test {test_id}"}]})
    if kind == BROKEN:
        return '{"features": [{"id": '
    if kind == EMPTY:
        return json.dumps({"features": []})
    raise ValueError(kind)


class Backend:
    """A database holding SCHEMA; ``url`` is what ``--database`` takes."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url

    def execute(self, sql: str, params: Sequence[tuple[Any, ...]] = ()) -> None:
        """Run ``sql`` (``?`` placeholders) once, or once per parameter tuple."""
        raise NotImplementedError

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def scalar(self, sql: str) -> Any:
        return self.rows(sql)[0][0]

    def add_tests(self, kinds: Sequence[str], first_id: int = 1) -> None:
        """Tests with ids ``first_id, first_id + 1, ...``, one per kind (GOOD, BROKEN, EMPTY)."""
        self.execute(
            "INSERT INTO tests (id, customer_id, data) VALUES (?, ?, ?)",
            [(first_id + i, 7, data_for(first_id + i, kind)) for i, kind in enumerate(kinds)],
        )

    def feature_tests(self) -> list[int]:
        """The ids of the tests that have a test_features row."""
        return [r[0] for r in self.rows("SELECT DISTINCT test_id FROM test_features ORDER BY test_id")]

    def runs(self) -> list[tuple[Any, ...]]:
        """(id, extractor, status, processed, record_errors) of every ledger run, by id."""
        return self.rows(
            "SELECT id, extractor, status, processed, record_errors FROM backfill_runs ORDER BY id"
        )


class SqliteBackend(Backend):
    def __init__(self, path: Path) -> None:
        super().__init__("sqlite", str(path))
        self.path = path

    def execute(self, sql: str, params: Sequence[tuple[Any, ...]] = ()) -> None:
        conn = sqlite3.connect(self.path)
        try:
            if params:
                conn.executemany(sql, params)
            else:
                conn.execute(sql)
            conn.commit()
        finally:
            conn.close()

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


class PostgresBackend(Backend):
    def execute(self, sql: str, params: Sequence[tuple[Any, ...]] = ()) -> None:
        asyncio.run(_pg(self.url, _numbered(sql), params))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return asyncio.run(_pg(self.url, sql, ()))


def _numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    parts = sql.split("?")
    return "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))


async def _pg(url: str, sql: str, params: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    import asyncpg  # the postgres extra; only these tests need it

    conn = await asyncpg.connect(url)
    try:
        if params:
            await conn.executemany(sql, params)
            return []
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


@contextmanager
def backend(kind: str, tmp_path: Path) -> Iterator[Backend]:
    """An empty database holding SCHEMA: a file in ``tmp_path``, or a scratch PostgreSQL database
    that is dropped afterwards (the test is skipped when no server is configured)."""
    if kind == "sqlite":
        db = SqliteBackend(tmp_path / "boundaries.db")
        for ddl in SCHEMA:
            db.execute(ddl)
        yield db
        return
    if not SERVER:
        pytest.skip("set BACKFILL_TEST_POSTGRES_URL to run the PostgreSQL tests")
    name = f"backfill_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(SERVER, f'CREATE DATABASE "{name}"', ()))
    try:
        pg = PostgresBackend("postgresql", SERVER.rsplit("/", 1)[0] + "/" + name)
        for ddl in SCHEMA:
            pg.execute(ddl)
        yield pg
    finally:
        asyncio.run(_pg(SERVER, f'DROP DATABASE "{name}" WITH (FORCE)', ()))
