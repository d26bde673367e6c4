"""The per-batch SQL text, as each supported dialect needs it (executed for real in test_engine_*)."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect

from backfill_core.statements import Statements

SQLITE = Statements(aiosqlite_dialect())
POSTGRES = Statements(asyncpg_dialect())


def test_keyset_page_binds_the_last_key_only_after_the_first_page() -> None:
    assert SQLITE.page("bugs", ("id", "raw_data"), "id", 500, False) == (
        "SELECT id, raw_data FROM bugs WHERE id IS NOT NULL ORDER BY id LIMIT 500"
    )
    assert POSTGRES.page("bugs", ("id",), "id", 7, True) == (
        "SELECT id FROM bugs WHERE id IS NOT NULL AND id > $1 ORDER BY id LIMIT 7"
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


@pytest.mark.parametrize(
    ("statements", "expected"),
    [(SQLITE, "IN (VALUES (?, ?), (?, ?))"), (POSTGRES, "IN (($1, $2), ($3, $4))")],
)
def test_composite_key_lookup(statements: Statements, expected: str) -> None:
    assert statements.lookup("links", ("a", "b", "v"), ("a", "b"), 2).endswith(f"WHERE (a, b) {expected}")


def test_upsert_updates_the_other_columns_or_does_nothing() -> None:
    assert SQLITE.upsert("t", ("id", "v"), ("id",)) == (
        "INSERT INTO t (id, v) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET v = excluded.v"
    )
    assert SQLITE.upsert("t", ("id",), ("id",)) == "INSERT INTO t (id) VALUES (?) ON CONFLICT (id) DO NOTHING"
