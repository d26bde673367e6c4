"""PostgreSQL's writes of many rows as one statement over arrays (``Statements.array_write``):
every column type they take, the types they leave to one statement per row, and a value too long
for its column (tests/unit/test_statements.py has the writes on both databases and a value the
driver cannot send)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

import pytest

from backfill_core import Database
from backfill_core.store.connection import RowsRefused
from support.db import on_database
from support.postgres import empty_database, execute, needs_server

pytestmark = needs_server


KINDS = """CREATE TABLE kinds (
    id BIGINT PRIMARY KEY, s SMALLINT, i INTEGER, b BOOLEAN, t TEXT, v VARCHAR(20), r REAL,
    d DOUBLE PRECISION, n NUMERIC, day DATE, at TIMESTAMP, atz TIMESTAMP WITH TIME ZONE, u UUID,
    code CHAR(3), doc JSONB);
CREATE TABLE inserts (n INTEGER NOT NULL);
INSERT INTO inserts VALUES (0);
CREATE FUNCTION counted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN UPDATE inserts SET n = n + 1; RETURN NULL; END $$;
CREATE TRIGGER counted AFTER INSERT ON kinds FOR EACH STATEMENT EXECUTE FUNCTION counted()"""
"""``kinds`` holds a column of each type; ``inserts`` counts the INSERT statements run on it."""
KIND_ROWS = [
    (
        -(2**63),
        -32768,
        -(2**31),
        True,
        "é\N{SNOWMAN}\t'\"",
        "x" * 20,
        1.5,
        1e300,
        Decimal("12345678901234567890.123456789"),
        date(1, 1, 1),
        datetime(2026, 12, 6, 1, 2, 3, 456789),
        datetime(2026, 12, 6, 1, 2, 3, tzinfo=UTC),
        UUID(int=1),
        "ab",
        '{"a": [1, null]}',
    ),
    (2**63 - 1, *[None] * 14),
    (
        0,
        32767,
        2**31 - 1,
        False,
        "",
        "",
        float("inf"),
        -0.0,
        Decimal("-0.5"),
        date(9999, 12, 31),
        datetime(1970, 1, 1),
        datetime(1970, 1, 1, tzinfo=UTC),
        UUID(int=2**128 - 1),
        "abc",
        "[]",
    ),
]


def test_every_column_type_round_trips_written_at_once_or_one_at_a_time() -> None:
    """The types written as arrays (``postgres.ARRAY_WRITTEN``) and two that are not (``char``,
    ``jsonb``: a table with them is written row by row) leave the values one row at a time does."""
    columns = ("id", "s", "i", "b", "t", "v", "r", "d", "n", "day", "at", "atz", "u", "code", "doc")

    async def work(db: Database, written: tuple[str, ...], many: bool) -> tuple[list[tuple[Any, ...]], int]:
        """The table after writing KIND_ROWS' ``written`` columns, and the statements it took."""
        rows = [tuple(r[columns.index(c)] for c in written) for r in KIND_ROWS]
        sql = db.statements.upsert("kinds", written, ("id",))
        async with db.writing() as conn:
            if many:
                await conn.execute_many(sql, rows)
            else:
                for row in rows:
                    await conn.execute_many(sql, [row])
        async with db.writing() as conn:
            got = await conn.fetch(f"SELECT {', '.join(written)} FROM kinds ORDER BY id", ())
            statements = await conn.fetch("SELECT n FROM inserts", ())
            await conn.execute("DELETE FROM kinds", ())
            await conn.execute("UPDATE inserts SET n = 0", ())
        return [tuple(r) for r in got], statements[0][0]

    with empty_database() as pg_url:
        asyncio.run(execute(pg_url, KINDS))
        for written, statements in ((columns[:13], 1), (columns, 3)):  # arrays, then row by row
            one_by_one, each = on_database(pg_url, partial(work, written=written, many=False))
            assert len(one_by_one) == 3 and one_by_one[0][4] == KIND_ROWS[0][4] and each == 3
            at_once = on_database(pg_url, partial(work, written=written, many=True))
            assert at_once == (one_by_one, statements)


def test_a_value_too_long_for_its_column_is_refused_rows_in_an_array_or_alone() -> None:
    """A server-side data exception (here 22001, a value too long for ``varchar(20)``) of a write
    refuses its rows, so the engine isolates the row as a batch error instead of ending the run."""

    async def work(db: Database, rows: list[tuple[Any, ...]]) -> str:
        with pytest.raises(RowsRefused) as refused:
            async with db.writing() as conn:
                await conn.execute_many(db.statements.upsert("kinds", ("id", "v"), ("id",)), rows)
        return refused.value.message

    with empty_database() as pg_url:
        asyncio.run(execute(pg_url, KINDS))
        for rows in ([(1, "x" * 21)], [(1, "fits"), (2, "x" * 21)]):
            message = on_database(pg_url, partial(work, rows=rows))
            assert "value too long for type character varying(20)" in message
