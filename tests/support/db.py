"""Reads (and the few hand-made writes) the shared helpers do on either database: a SQLite file
given as a ``Path``, or a ``Backend`` (tests/support/backends.py), a SQLite file or a scratch
PostgreSQL database. SQL is written once with ``?`` placeholders; PostgreSQL gets ``$1, $2, ...``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from backfill_core import Database, resolve_url
from support import sqlite
from support.backends import Backend, SqliteBackend

T = TypeVar("T")
Where = Path | Backend
"""A database the helpers read: a SQLite file's path, or a backend of either kind."""


def sqlite_path(where: Where) -> Path | None:
    """The SQLite file ``where`` names, or None for a PostgreSQL database."""
    if isinstance(where, Path):
        return where
    return where.path if isinstance(where, SqliteBackend) else None


def dollar(sql: str) -> str:
    """``sql`` with its ``?`` placeholders numbered as PostgreSQL wants them."""
    count = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


async def _fetch(url: str, sql: str, params: Sequence[Any]) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(dollar(sql), *params))
    finally:
        await conn.close()


def query(where: Where, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    path = sqlite_path(where)
    if path is not None:
        return sqlite.query(path, sql, params)
    assert isinstance(where, Backend)
    return [tuple(r) for r in asyncio.run(_fetch(where.url, sql, params))]


def scalar(where: Where, sql: str, params: Sequence[Any] = ()) -> Any:
    return query(where, sql, params)[0][0]


def records(where: Where, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts, by column name."""
    path = sqlite_path(where)
    if path is not None:
        return sqlite.records(path, sql, params)
    assert isinstance(where, Backend)
    return [dict(r) for r in asyncio.run(_fetch(where.url, sql, params))]


def execute(where: Where, sql: str, params: Sequence[Any] = ()) -> None:
    """One write statement, committed."""
    path = sqlite_path(where)
    if path is not None:
        import sqlite3

        conn = sqlite3.connect(path)
        try:
            with conn:
                conn.execute(sql, tuple(params))
        finally:
            conn.close()
        return
    assert isinstance(where, Backend)
    asyncio.run(_fetch(where.url, sql, params))


async def _execute_many(url: str, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(dollar(sql), rows)
    finally:
        await conn.close()


def execute_many(where: Where, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """One write statement for each of ``rows``, committed together."""
    path = sqlite_path(where)
    if path is not None:
        import sqlite3

        conn = sqlite3.connect(path)
        try:
            with conn:
                conn.executemany(sql, rows)
        finally:
            conn.close()
        return
    assert isinstance(where, Backend)
    asyncio.run(_execute_many(where.url, sql, rows))


def table_names(where: Where) -> set[str]:
    path = sqlite_path(where)
    if path is not None:
        return sqlite.table_names(path)
    assert isinstance(where, Backend)
    return where.tables()


def table_rows(where: Where, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table`` in key order: the table's full contents (on PostgreSQL the tables
    these tests read have their key as the first column)."""
    path = sqlite_path(where)
    if path is not None:
        return sqlite.table_rows(path, table)
    return query(where, f"SELECT * FROM {table} ORDER BY 1")


def fingerprint(where: Where) -> str:
    """What a run must leave alone when it writes nothing: a SQLite file's bytes, or every table
    of a PostgreSQL database (names and full contents, backfill's own tables included)."""
    path = sqlite_path(where)
    if path is not None:
        return sqlite.sha256(path)
    digest = hashlib.sha256()
    for table in sorted(table_names(where)):
        digest.update(repr((table, sorted(map(repr, query(where, f"SELECT * FROM {table}"))))).encode())
    return digest.hexdigest()


def on_database(url: str, work: Callable[[Database], Awaitable[T]], *, read_only: bool = False) -> T:
    """What ``work`` returns, run on the engine's own :class:`Database` open at ``url`` (a path or
    a URL, as --database takes it)."""

    async def go() -> T:
        async with Database(resolve_url(url), read_only=read_only) as db:
            return await work(db)

    return asyncio.run(go())
