"""Reading SQLite files from the tests. The tests' own reads use read-only connections
(``mode=ro``), so they never change a file behind the CLI's back."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection that waits up to 30 s for a writer's lock."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def query(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    conn = connect_ro(path)
    try:
        return conn.execute(sql, tuple(params)).fetchall()
    finally:
        conn.close()


def scalar(path: Path, sql: str, params: Sequence[Any] = ()) -> Any:
    return query(path, sql, params)[0][0]


def records(path: Path, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts, by column name."""
    conn = connect_ro(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, tuple(params))]
    finally:
        conn.close()


def table_names(path: Path) -> set[str]:
    return {r[0] for r in query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def table_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table``, in primary-key order: the table's full contents."""
    return query(path, f"SELECT * FROM {table} ORDER BY rowid")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def drop_column(path: Path, table: str, column: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.commit()
    finally:
        conn.close()


JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
"""The first bytes of a rollback journal that SQLite has synced: once its writer is gone, such a
journal is *hot* and must be rolled back before the database can be read."""


def journal_is_hot(path: Path) -> bool:
    """Whether ``path`` has a synced rollback journal beside it (hot, if no process owns it)."""
    try:
        with open(f"{path}-journal", "rb") as f:
            return f.read(8) == JOURNAL_MAGIC
    except FileNotFoundError:
        return False
