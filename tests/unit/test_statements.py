"""The per-batch SQL text, as each supported dialect needs it, and composite-key lookups run on
real databases (the engine runs the rest for real in test_engine_*).

The PostgreSQL tests run on the server named by BACKFILL_TEST_POSTGRES_URL, in scratch databases.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect
from sqlalchemy.engine import make_url

from backfill_core import Database, resolve_url
from backfill_core.store.connection import RowsRefused
from backfill_core.store.statements import KeyLookup, Names, Statements
from support.postgres import empty_database, execute, needs_server

SQLITE = Statements(aiosqlite_dialect())
POSTGRES = Statements(make_url("postgresql+asyncpg://").get_dialect()())
F = TypeVar("F", bound=Callable[..., Any])


def on_postgres(test: F) -> F:
    """Mark ``test`` as one for the PostgreSQL server (skipped without one)."""
    for mark in needs_server:
        test = mark(test)
    return test


def test_keyset_page_binds_the_last_key_only_after_the_first_page() -> None:
    assert SQLITE.page("bugs", ("id", "raw_data"), "id", 500, False) == (
        "SELECT id, raw_data FROM bugs WHERE id IS NOT NULL ORDER BY id LIMIT 500"
    )
    assert POSTGRES.page("bugs", ("id",), "id", 7, True) == (
        "SELECT id FROM bugs WHERE id IS NOT NULL AND id > $1 ORDER BY id LIMIT 7"
    )


def test_a_keyset_page_of_a_key_range_binds_its_upper_bound_last() -> None:
    assert POSTGRES.page("bugs", ("id",), "id", 7, True, True) == (
        "SELECT id FROM bugs WHERE id IS NOT NULL AND id > $1 AND id <= $2 ORDER BY id LIMIT 7"
    )
    assert POSTGRES.page("bugs", ("id",), "id", 7, False, True) == (
        "SELECT id FROM bugs WHERE id IS NOT NULL AND id <= $1 ORDER BY id LIMIT 7"
    )
    assert SQLITE.page("bugs", ("id",), "id", 7, True, True) == (
        "SELECT id FROM bugs WHERE id IS NOT NULL AND id > ? AND id <= ? ORDER BY id LIMIT 7"
    )


def test_names_that_need_quoting_are_quoted() -> None:
    sql = SQLITE.update("order tags", ("select",), ("order_id", "tag name"))
    assert sql == 'UPDATE "order tags" SET "select" = ? WHERE order_id = ? AND "tag name" = ?'


def test_postgres_parameters_are_numbered_in_order() -> None:
    assert POSTGRES.update("t", ("a", "b"), ("id",)) == "UPDATE t SET a = $1, b = $2 WHERE id = $3"
    assert (
        POSTGRES.increment("runs", ("n",), ("at",), "id")
        == "UPDATE runs SET n = n + $1, at = $2 WHERE id = $3"
    )


def test_composite_key_lookup() -> None:
    assert SQLITE.lookup("links", ("a", "b", "v"), ("a", "b"), 2) == (
        "SELECT t.a, t.b, t.v FROM (SELECT DISTINCT * FROM (VALUES (?, ?), (?, ?))) AS k "
        "CROSS JOIN links AS t ON t.a = k.column1 AND t.b = k.column2"
    )
    assert POSTGRES.lookup("links", ("a", "b", "v"), ("a", "b"), 2) == (
        "SELECT a, b, v FROM links WHERE (a, b) IN (($1, $2), ($3, $4))"
    )


def test_single_key_lookups_and_sqlite_lookups_are_plain_text() -> None:
    assert type(SQLITE.lookup("links", ("a", "b"), ("a", "b"), 2)) is str
    assert type(POSTGRES.lookup("links", ("a", "b"), ("a",), 2)) is str
    assert POSTGRES.lookup("links", ("a", "b"), ("a",), 2) == "SELECT a, b FROM links WHERE a IN ($1, $2)"


def test_postgres_composite_lookup_carries_its_shape_for_the_array_form() -> None:
    """Database.fetch runs it as array_lookup: one array parameter per key column, cast to the
    column's array type, the same statement for any number of keys."""
    sql = POSTGRES.lookup("order tags", ("order_id", "tag name", "select"), ("order_id", "tag name"), 3, "x")
    assert isinstance(sql, KeyLookup)
    assert (sql.table, sql.columns, sql.key_cols, sql.order_by) == (
        "order tags",
        ("order_id", "tag name", "select"),
        ("order_id", "tag name"),
        "x",
    )
    assert sql == (
        'SELECT order_id, "tag name", "select" FROM "order tags" WHERE (order_id, "tag name") IN '
        "(($1, $2), ($3, $4), ($5, $6)) ORDER BY x"
    )
    arrays = POSTGRES.array_lookup(
        sql.table, sql.columns, sql.key_cols, ("integer[]", "text[]"), sql.order_by
    )
    assert arrays == (
        'SELECT order_id, "tag name", "select" FROM "order tags" WHERE (order_id, "tag name") IN '
        "(SELECT * FROM unnest(CAST($1 AS integer[]), CAST($2 AS text[]))) ORDER BY x"
    )


def test_upsert_updates_the_other_columns_or_does_nothing() -> None:
    assert SQLITE.upsert("t", ("id", "v"), ("id",)) == (
        "INSERT INTO t (id, v) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET v = excluded.v"
    )
    assert SQLITE.upsert("t", ("id",), ("id",)) == "INSERT INTO t (id) VALUES (?) ON CONFLICT (id) DO NOTHING"


# -- composite-key lookups run on real databases ----------------------------------------------------

PAIRS = "CREATE TABLE pairs (a INTEGER NOT NULL, b TEXT NOT NULL, v TEXT, PRIMARY KEY (a, b))"
PAIR_ROWS = [
    (1, "2", "one-two"),
    (2, "1", "two-one"),
    (12, "", "twelve"),
    (1, "12", "one-twelve"),
    (21, "x", ""),
]
"""Keys whose values look alike across columns and rows: a lookup that paired the wrong values,
or compared a column as the other's type, finds the wrong ones."""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_server)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database holding PAIRS with PAIR_ROWS, as --database takes it."""
    if request.param == "sqlite":
        path = tmp_path / "pairs.db"
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(PAIRS)
            conn.executemany("INSERT INTO pairs VALUES (?, ?, ?)", PAIR_ROWS)
        yield str(path)
        return
    with empty_database() as url:
        asyncio.run(execute(url, PAIRS))
        asyncio.run(_insert(url, "INSERT INTO pairs VALUES ($1, $2, $3)", PAIR_ROWS))
        yield url


async def _insert(url: str, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(sql, rows)
    finally:
        await conn.close()


def lookup(
    url: str, table: str, columns: Names, key_cols: Names, keys: Sequence[tuple[Any, ...]]
) -> set[Any]:
    """The rows the engine's lookup finds for ``keys`` (given as the engine gives them, repeats
    included), and the same through the statement's plain text, which must agree."""

    async def go() -> tuple[set[Any], set[Any]]:
        async with Database(resolve_url(url)) as db, db.writing() as conn:
            sql = db.statements.lookup(table, columns, key_cols, len(keys))
            params = [v for k in keys for v in k]
            found = {tuple(r) for r in await conn.fetch(sql, params)}
            as_text = {tuple(r) for r in await conn.fetch(str(sql), params)}
            return found, as_text

    found, as_text = asyncio.run(go())
    assert found == as_text
    return found


def test_composite_lookup_finds_exactly_the_keys_asked_for(database_url: str) -> None:
    keys = [(1, "2"), (2, "2"), (12, ""), (1, "12"), (21, "y"), (2, "1"), (2, "1"), (2, "1")]
    assert lookup(database_url, "pairs", ("a", "b", "v"), ("a", "b"), keys) == {
        (1, "2", "one-two"),
        (12, "", "twelve"),
        (1, "12", "one-twelve"),
        (2, "1", "two-one"),
    }
    assert lookup(database_url, "pairs", ("b", "a"), ("b", "a"), [("2", 1), ("1", 12)]) == {("2", 1)}


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE pairs (a INTEGER NOT NULL, b TEXT NOT NULL, v TEXT, PRIMARY KEY (a, b))",
        "CREATE TABLE pairs (a INTEGER NOT NULL, b TEXT NOT NULL, v TEXT, PRIMARY KEY (b, a))",
        "CREATE TABLE pairs (id INTEGER PRIMARY KEY, a INTEGER, b TEXT, v TEXT, UNIQUE (b, a))",
        "CREATE TABLE pairs (a INTEGER, b TEXT, v TEXT, PRIMARY KEY (b, a)) WITHOUT ROWID",
        "CREATE TABLE pairs (a INTEGER, b TEXT, c INTEGER, v TEXT, PRIMARY KEY (a, b, c))",
    ],
)
def test_sqlite_composite_lookup_searches_the_key_index(tmp_path: Path, ddl: str) -> None:
    """A search of the index on (or led by) the key's columns per key, not a scan of the whole
    table per batch, which SQLite plans for ``(a, b) IN (…)`` with most of these indexes."""
    with closing(sqlite3.connect(tmp_path / "plan.db")) as conn:
        conn.execute(ddl)
        conn.executemany(
            "INSERT INTO pairs (a, b, v) VALUES (?, ?, 'v')", [(i, str(i % 7)) for i in range(500)]
        )
        sql = SQLITE.lookup("pairs", ("a", "b", "v"), ("a", "b"), 300)
        plan = " / ".join(r[-1] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [1, "x"] * 300))
    assert re.search(
        r"SEARCH t USING (\w+ )*(INDEX \w+|PRIMARY KEY) \((a=\? AND b=\?|b=\? AND a=\?)\)", plan
    ), plan
    assert "SCAN t" not in plan, plan


@on_postgres
def test_postgres_lookup_casts_cut_nothing_short() -> None:
    """Each key column's values go as an array of the column's type without its modifier: a value
    too long for a varchar(3), or with more digits than a numeric(6, 2), finds nothing (as it
    would compared with the column), never the row it would be cut or rounded to."""
    with empty_database() as url:
        asyncio.run(
            execute(
                url,
                'CREATE TABLE typed (code VARCHAR(3), "fixed" CHAR(4), amount NUMERIC(6, 2), '
                'at TIMESTAMP(0), v TEXT, PRIMARY KEY (code, "fixed", amount, at))',
            )
        )
        noon = datetime(2024, 5, 1, 12, 0, 0)
        asyncio.run(
            _insert(
                url,
                "INSERT INTO typed VALUES ($1, $2, $3, $4, $5)",
                [("abc", "ab", Decimal("1.01"), noon, "kept")],
            )
        )
        cols = ("code", "fixed", "amount", "at")
        found = lookup(
            url,
            "typed",
            (*cols, "v"),
            cols,
            [
                ("abcdef", "ab", Decimal("1.01"), noon),  # not cut to 'abc'
                ("abc", "ab", Decimal("1.005"), noon),  # not rounded to 1.01
                ("abc", "ab", Decimal("1.01"), noon.replace(microsecond=400_000)),  # not to the second
                ("abc", "ab  ", Decimal("1.010"), noon),  # char(4) ignores trailing blanks, as compared
            ],
        )
        assert found == {("abc", "ab  ", Decimal("1.01"), noon, "kept")}


@on_postgres
def test_postgres_composite_lookup_of_a_value_its_column_cannot_hold_fails_as_a_single_key_one() -> None:
    """The driver refuses a key value that is not of its column's type (a str for an integer), in
    an array as in a list of parameters: the engine handles both alike."""
    with empty_database() as url:
        asyncio.run(execute(url, PAIRS))

        async def failure(key_cols: Names, params: list[Any]) -> BaseException:
            async with Database(resolve_url(url)) as db:
                try:
                    async with db.writing() as conn:
                        sql = db.statements.lookup(
                            "pairs", ("a", "b"), key_cols, len(params) // len(key_cols)
                        )
                        await conn.fetch(sql, params)
                except Exception as e:
                    return e
            raise AssertionError("the lookup did not fail")

        single = asyncio.run(failure(("a",), [1, "not a number"]))
        composite = asyncio.run(failure(("a", "b"), [1, "x", "not a number", "y"]))
        assert type(composite) is type(single)
        assert "not a number" in str(composite)


# -- writes of many rows run on real databases --------------------------------------------------------


def test_upserts_updates_and_deletes_of_many_rows_write_each_row(database_url: str) -> None:
    """On PostgreSQL each of these runs as one statement over arrays (array_write), on SQLite once
    per row: the rows written are the same, composite keys paired value by value. A row write's
    statement also runs alone, with ``execute``."""

    async def go() -> set[tuple[Any, ...]]:
        async with Database(resolve_url(database_url)) as db:
            s = db.statements
            async with db.writing() as conn:
                await conn.execute_many(
                    s.upsert("pairs", ("a", "b", "v"), ("a", "b")),
                    [(1, "2", "new one-two"), (7, "7", "seven"), (2, "1", None)],
                )
                await conn.execute_many(s.upsert("pairs", ("a", "b"), ("a", "b")), [(12, ""), (8, "8")])
                await conn.execute(s.upsert("pairs", ("a", "b", "v"), ("a", "b")), (9, "9", "nine"))
                await conn.execute_many(
                    s.update("pairs", ("v",), ("a", "b")), [("x", 21, "x"), ("y", 1, "12"), ("z", 9, "9")]
                )
                await conn.execute_many(
                    s.delete("pairs", ("a", "b")), [(2, "1"), (12, ""), (2, "1"), (3, "3")]
                )
                return {tuple(r) for r in await conn.fetch("SELECT a, b, v FROM pairs", [])}

    assert asyncio.run(go()) == {
        (1, "2", "new one-two"),
        (1, "12", "y"),
        (21, "x", "x"),
        (7, "7", "seven"),
        (8, "8", None),
        (9, "9", "z"),
    }


@on_postgres
def test_a_value_the_driver_cannot_send_among_many_rows_is_named_as_one_rows_would_be() -> None:
    """A value of the wrong type for its column refuses the rows (the engine then isolates the row
    as a batch error) with the driver's message for the row that holds it, not for an array of
    the whole batch's values."""

    async def go(url: str) -> None:
        async with Database(resolve_url(url)) as db, db.writing() as conn:
            sql = db.statements.upsert("pairs", ("a", "b", "v"), ("a", "b"))
            await conn.execute_many(sql, [(5, "5", "five"), (6, "6", 6), (7, "7", "seven")])

    with empty_database() as url:
        asyncio.run(execute(url, PAIRS))
        with pytest.raises(RowsRefused) as e:
            asyncio.run(go(url))
    message = str(e.value)
    assert "in element #1 of executemany() sequence: 6 (expected str, got int)" in message, message
