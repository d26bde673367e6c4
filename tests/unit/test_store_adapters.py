"""The connection protocol on both adapters: the same tests on a real SQLite file and on the
PostgreSQL server named by BACKFILL_TEST_POSTGRES_URL (in a scratch database)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from backfill_core import Database, DatabaseUnavailable, resolve_url
from backfill_core.store.connection import RowsRefused
from backfill_core.store.database import display
from backfill_core.store.sqlite import connect, uri
from support.db import on_database
from support.postgres import empty_database, execute, needs_server

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL CHECK (n >= 0), label TEXT UNIQUE)"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_server)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with an empty ``items`` table, as --database takes it."""
    if request.param == "sqlite":
        path = tmp_path / "items.db"
        with closing(sqlite3.connect(path)) as conn:
            conn.execute(ITEMS)
        yield str(path)
        return
    with empty_database() as pg_url:
        asyncio.run(execute(pg_url, ITEMS))
        yield pg_url


async def items(db: Database) -> list[tuple[Any, ...]]:
    async with db.reading() as conn:
        return [tuple(r) for r in await conn.fetch("SELECT id, n, label FROM items ORDER BY id", ())]


def insert(db: Database) -> str:
    return db.statements.insert("items", ("id", "n", "label"))


def test_a_write_transaction_commits_what_it_wrote(url: str) -> None:
    async def work(db: Database) -> list[tuple[Any, ...]]:
        async with db.writing() as conn:
            await conn.execute_many(insert(db), [(1, 10, "a"), (2, 20, None)])
            await conn.execute(insert(db), (3, 30, "c"))
            assert [tuple(r) for r in await conn.fetch("SELECT count(*) FROM items", ())] == [(3,)]
        return await items(db)

    assert on_database(url, work) == [(1, 10, "a"), (2, 20, None), (3, 30, "c")]


def test_a_write_transaction_that_raises_writes_nothing(url: str) -> None:
    async def work(db: Database) -> list[tuple[Any, ...]]:
        with pytest.raises(KeyError):
            async with db.writing() as conn:
                await conn.execute_many(insert(db), [(1, 10, "a")])
                raise KeyError("stop")
        return await items(db)

    assert on_database(url, work) == []


def test_a_savepoint_rolls_back_its_block_only_and_the_transaction_goes_on(url: str) -> None:
    async def work(db: Database) -> list[tuple[Any, ...]]:
        async with db.writing() as conn:
            await conn.execute_many(insert(db), [(1, 10, "a")])
            with pytest.raises(RowsRefused):
                async with conn.savepoint():
                    await conn.execute_many(insert(db), [(2, 20, "b")])
                    await conn.execute_many(insert(db), [(3, 30, "a")])  # label 'a' is taken
            async with conn.savepoint():
                await conn.execute_many(insert(db), [(4, 40, "d")])
        return await items(db)

    assert on_database(url, work) == [(1, 10, "a"), (4, 40, "d")]


@pytest.mark.parametrize(
    ("row", "sqlite_says", "postgresql_says"),
    [
        ((1, 5, "taken"), "UNIQUE constraint failed: items.label", "duplicate key value"),
        ((2, None, "x"), "NOT NULL constraint failed: items.n", 'null value in column "n"'),
        ((2, -1, "x"), "CHECK constraint failed", 'violates check constraint "items_n_check"'),
    ],
    ids=["unique", "not-null", "check"],
)
def test_refused_rows_come_out_as_rows_refused_with_the_drivers_message(
    url: str, row: tuple[Any, ...], sqlite_says: str, postgresql_says: str
) -> None:
    async def work(db: Database) -> tuple[str, RowsRefused]:
        async with db.writing() as conn:
            await conn.execute(insert(db), (9, 0, "taken"))
        with pytest.raises(RowsRefused) as refused:
            async with db.writing() as conn:
                await conn.execute_many(insert(db), [row])
        return db.dialect, refused.value

    dialect, refused = on_database(url, work)
    assert (sqlite_says if dialect == "sqlite" else postgresql_says) in refused.message
    assert str(refused) == refused.message == refused.message.strip()


def test_an_integer_sqlite_cannot_hold_is_refused_rows_in_writes_and_reads(tmp_path: Path) -> None:
    """The sqlite3 module refuses an integer beyond 64 bits with OverflowError: the row's fault,
    so the real run isolates it, and a dry run's lookup of it too."""
    path = tmp_path / "items.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(ITEMS)

    async def work(db: Database) -> list[str]:
        messages = []
        with pytest.raises(RowsRefused) as refused:
            async with db.writing() as conn:
                await conn.execute_many(insert(db), [(1, 2**70, "x")])
        messages.append(refused.value.message)
        with pytest.raises(RowsRefused) as refused:
            async with db.reading() as conn:
                await conn.fetch("SELECT id FROM items WHERE id = ?", (2**70,))
        messages.append(refused.value.message)
        return messages

    assert on_database(str(path), work) == ["Python int too large to convert to SQLite INTEGER"] * 2


def test_other_failures_end_the_run_with_the_hint_and_what_was_being_done(url: str) -> None:
    async def work(db: Database) -> tuple[str, list[str]]:
        messages = []
        for opened in (db.writing, db.reading):
            with pytest.raises(DatabaseUnavailable) as failed:
                async with opened() as conn:
                    await conn.fetch("SELECT x FROM missing_table", ())
            messages.append(str(failed.value))
        with pytest.raises(DatabaseUnavailable) as failed:
            async with db.sqlalchemy(write=True) as core:
                await core.execute(text("UPDATE missing_table SET x = 1"))
        messages.append(str(failed.value))
        return db.display_url, messages

    shown, (writing, reading, core) = on_database(url, work)
    hint = "(a table or column that a plugin reads or references is missing; run the migrations)"
    for message, action in ((writing, "write to"), (reading, "read from"), (core, "write to")):
        assert message.startswith(f"could not {action} {shown}: ")
        assert "missing_table" in message
        assert message.endswith(hint)


def test_a_read_only_database_refuses_writes_as_a_run_ending_failure(url: str) -> None:
    async def work(db: Database) -> str:
        with pytest.raises(DatabaseUnavailable) as failed:
            async with db.reading() as conn:
                await conn.execute(insert(db), (1, 1, "a"))
        return str(failed.value)

    message = on_database(url, work, read_only=True)
    assert message.startswith(f"could not read from {display(resolve_url(url))}: ")
    assert "read-only" in message.lower() or "readonly" in message.lower()
    assert on_database(url, items) == []


def test_the_display_url_never_shows_the_password() -> None:
    db = Database(resolve_url("postgresql://someone:secret@db.example:5432/shop"))
    assert db.display_url == "postgresql+asyncpg://someone:***@db.example:5432/shop"


# -- the SQLite connect helper ----------------------------------------------------------------------


def test_connect_opens_an_existing_file_by_any_name_read_only_or_read_write(tmp_path: Path) -> None:
    path = str(tmp_path / "odd name?#%20&.db")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    assert uri(path, read_only=True).endswith("?mode=ro")
    with closing(connect(path, read_only=False, timeout=1)) as rw:
        rw.execute("INSERT INTO t VALUES (1)")  # no implicit transaction: committed as it runs
    with closing(connect(path, read_only=True, timeout=1)) as ro:
        assert ro.execute("SELECT x FROM t").fetchall() == [(1,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.execute("INSERT INTO t VALUES (2)")


def test_connect_never_creates_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(sqlite3.OperationalError):
        connect(str(missing), read_only=False, timeout=1)
    assert not missing.exists()


def test_sqlite_keeps_its_journal_between_batches_and_removes_it_on_close(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(ITEMS)
    journal = Path(f"{path}-journal")

    async def work(db: Database) -> bool:
        async with db.writing() as conn:
            await conn.execute(insert(db), (1, 1, "a"))
        return journal.exists()

    assert on_database(str(path), work) is True
    assert not journal.exists()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
