"""One small test-management database on either backend: a SQLite file, or a scratch database on
the PostgreSQL server named by BACKFILL_TEST_POSTGRES_URL (created and dropped here).

For tests that pin a contract on both databases: they build the same rows (tests whose ``data``
is GOOD, BROKEN or EMPTY), run the real engine or CLI on ``Backend.url``, and read the result back
with ``Backend.rows``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from support.postgres import SERVER, empty_database, execute, fetch, needs_server, scratch_database
from support.sqlite import query

SCHEMA = """
CREATE TABLE features (id INTEGER PRIMARY KEY);
CREATE TABLE tests (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, data TEXT);
CREATE TABLE test_features (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
    test_id INTEGER NOT NULL REFERENCES tests(id), feature_id INTEGER REFERENCES features(id),
    title TEXT NOT NULL DEFAULT '', description TEXT, howtofind TEXT,
    user_stories TEXT NOT NULL DEFAULT '[]', enable_default BOOLEAN, enable_content BOOLEAN,
    enable_visual BOOLEAN);
CREATE TABLE bugs (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, test_id INTEGER REFERENCES tests(id),
                   raw_data TEXT, test_feature_id INTEGER REFERENCES test_features(id));
"""
"""The columns the built-in job reads and writes, in DDL that both databases accept; kept here,
apart from support.postgres' copy of the application's schema, so that these tests' row counts stay
exact whatever that schema grows."""

KINDS = [pytest.param("sqlite"), pytest.param("postgresql", marks=needs_server)]
"""The ``params`` of a fixture that gives each test both databases."""

# What a test's ``data`` can be, as far as the test_features extractor is concerned.
GOOD = "good"
"""One feature (id 1000 + the test's id, of product feature 5000 + the test's id, which the
``features`` table holds): a test_features row, no error."""
BROKEN = "broken"
"""Truncated JSON: a record error (invalid-json), no row."""
EMPTY = "empty"
"""An empty feature list: no row and no error (it lowers the coverage metric only)."""


def data_for(test_id: int, kind: str) -> str:
    if kind == GOOD:
        feature = {"id": 1000 + test_id, "feature_id": 5000 + test_id, "title": f"feature of test {test_id}"}
        return json.dumps({"features": [feature]})
    if kind == BROKEN:
        return '{"features": [{"id": '
    if kind == EMPTY:
        return json.dumps({"features": []})
    raise ValueError(kind)


class Backend:
    """A database holding the built-in job's tables; ``url`` is what ``--database`` takes."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def execute(self, sql: str) -> None:
        raise NotImplementedError

    def tables(self) -> set[str]:
        raise NotImplementedError

    def scalar(self, sql: str) -> Any:
        return self.rows(sql)[0][0]

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

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return query(self.path, sql)

    def execute(self, sql: str) -> None:
        conn = sqlite3.connect(self.path)
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()

    def tables(self) -> set[str]:
        return {r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}


class PostgresBackend(Backend):
    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return asyncio.run(fetch(self.url, sql))

    def execute(self, sql: str) -> None:
        asyncio.run(execute(self.url, sql))

    def tables(self) -> set[str]:
        return {r[0] for r in self.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


INSERT_TESTS = "INSERT INTO tests (id, customer_id, data) VALUES (?, 7, ?)"
INSERT_FEATURES = "INSERT INTO features (id) VALUES (?)"


def _rows(tests: Sequence[str]) -> list[tuple[int, str]]:
    return [(i, data_for(i, kind)) for i, kind in enumerate(tests, 1)]


def _features(tests: Sequence[str]) -> list[tuple[int]]:
    return [(5000 + i,) for i in range(1, len(tests) + 1)]


def sqlite_file(path: Path, tests: Sequence[str]) -> Path:
    """A new SQLite file with SCHEMA, tests 1, 2, ... of the given kinds, and their features."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA)
        conn.executemany(INSERT_FEATURES, _features(tests))
        conn.executemany(INSERT_TESTS, _rows(tests))
        conn.commit()
    finally:
        conn.close()
    return path


async def _fill(url: str, tests: Sequence[str]) -> None:
    import asyncpg  # the postgres extra, which the test extra brings

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA)
        await conn.executemany(INSERT_FEATURES.replace("?", "$1"), _features(tests))
        await conn.executemany(INSERT_TESTS.replace("?, 7, ?", "$1, 7, $2"), _rows(tests))
    finally:
        await conn.close()


@contextmanager
def postgres_database(tests: Sequence[str]) -> Iterator[str]:
    """The URL of a new database on the test server with SCHEMA and the tests; dropped on exit."""
    with empty_database() as url:
        asyncio.run(_fill(url, tests))
        yield url


MakeBackend = Callable[[Sequence[str]], Backend]


@contextmanager
def backends(kind: str, folder: Path) -> Iterator[MakeBackend]:
    """``make(tests)``: a new database of ``kind`` ("sqlite" or "postgresql") holding tests 1, 2, ...
    of the given kinds; the PostgreSQL ones are dropped when the block ends."""
    with ExitStack() as stack:
        made = 0

        def make(tests: Sequence[str]) -> Backend:
            nonlocal made
            made += 1
            if kind == "sqlite":
                return SqliteBackend(sqlite_file(folder / f"backend-{made}.db", tests))
            return PostgresBackend(kind, stack.enter_context(postgres_database(tests)))

        yield make


@contextmanager
def builtin_backend(kind: str, template: Path, path: Path) -> Iterator[Backend]:
    """The built-in job's synthetic ``template`` as a database of ``kind``: a writable copy at
    ``path``, or a scratch PostgreSQL database holding the same rows (dropped on exit)."""
    if kind == "sqlite":
        shutil.copy(template, path)
        path.chmod(0o644)
        yield SqliteBackend(path)
        return
    with scratch_database(template) as url:
        yield PostgresBackend(kind, url)


def server_version() -> int:
    """The test server's ``server_version_num`` (150004 for 15.4)."""
    assert SERVER, "BACKFILL_TEST_POSTGRES_URL is not set"
    ((version,),) = asyncio.run(fetch(SERVER, "SELECT current_setting('server_version_num')::int"))
    return int(version)
