"""A benchmark's own tables on either database: made from DDL and a source table of
``(id, payload)`` rows, on a SQLite file or a PostgreSQL database, with ``sql`` to run a
statement there and return its rows (composite_keys.py and workers.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg


class Target:
    """The database at ``url``, of ``kind`` SQLite or PostgreSQL."""

    kind: str
    url: str

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def empty(self, table: str) -> None:
        raise NotImplementedError

    def has(self, table: str) -> bool:
        raise NotImplementedError


class SqliteTarget(Target):
    kind = "SQLite"

    def __init__(
        self, path: Path, schema: Sequence[str], source: str, rows: Sequence[tuple[int, str]]
    ) -> None:
        self.url = str(path)
        conn = sqlite3.connect(path)
        try:
            with conn:
                for ddl in schema:
                    conn.execute(ddl)
                conn.executemany(f"INSERT INTO {source} (id, payload) VALUES (?, ?)", rows)
        finally:
            conn.close()

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.url)
        try:
            with conn:
                return conn.execute(statement).fetchall()
        finally:
            conn.close()

    def empty(self, table: str) -> None:
        self.sql(f"DELETE FROM {table}")

    def has(self, table: str) -> bool:
        return bool(self.sql(f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table}'"))


class PostgresTarget(Target):
    kind = "PostgreSQL"

    def __init__(self, url: str, schema: Sequence[str], source: str, rows: Sequence[tuple[int, str]]) -> None:
        self.url = url

        async def load() -> None:
            conn = await asyncpg.connect(url)
            try:
                for ddl in schema:
                    await conn.execute(ddl)
                await conn.copy_records_to_table(source, records=rows, columns=["id", "payload"])
                await conn.execute(f"ANALYZE {source}")
            finally:
                await conn.close()

        asyncio.run(load())

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        async def go() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.url)
            try:
                return [tuple(r) for r in await conn.fetch(statement)]
            finally:
                await conn.close()

        return asyncio.run(go())

    def empty(self, table: str) -> None:
        self.sql(f"TRUNCATE {table}")

    def has(self, table: str) -> bool:
        return bool(
            self.sql(f"SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = '{table}'")
        )
