"""The built-in plugin's models are the application's real tables (testio-mcp 0.4.0).

``tests/data/testio_mcp_0_4_0.sql`` is the schema ``alembic upgrade head`` gives a real cache. Two
SQLite files are built, one from that DDL and one from the plugin's models, and SQLite itself is
asked what each table is (``PRAGMA table_info``, ``foreign_key_list``, ``index_list``): any
difference in a column, its type's affinity, NOT NULL, default, primary key, foreign key or
index fails here. The PostgreSQL tables the tests and the benchmark use
(``backfill_plugins.testmanagement.pgcopy.SCHEMA``) are held to the models too.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from backfill_plugins.testmanagement import models
from support.postgres import fetch, needs_server, scratch_database

DDL = Path(__file__).resolve().parents[1] / "data" / "testio_mcp_0_4_0.sql"
MODELS = (models.User, models.Product, models.Feature, models.Test, models.TestFeature, models.Bug)
MIRRORED = ("products", "features", "tests", "test_features", "bugs", "users")


def affinity(declared: str) -> str:
    """The column affinity SQLite gives a declared type (https://sqlite.org/datatype3.html 3.1)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if any(s in t for s in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def describe(conn: sqlite3.Connection, table: str) -> dict[str, Any]:
    """What SQLite says about ``table``, in a form two equal schemas give equally."""
    columns = [
        {"name": name, "affinity": affinity(type_), "notnull": bool(notnull), "default": default, "pk": pk}
        for _cid, name, type_, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})")
    ]
    # One FOREIGN KEY clause per row here; their order in the DDL varies between migrations.
    foreign_keys = sorted(
        (from_, ref, to, on_update, on_delete, match)
        for _id, _seq, ref, from_, to, on_update, on_delete, match in conn.execute(
            f"PRAGMA foreign_key_list({table})"
        )
    )
    indexes = sorted(
        (name, bool(unique), origin, tuple(c for _, _, c in conn.execute(f"PRAGMA index_info({name})")))
        for _seq, name, unique, origin, _partial in conn.execute(f"PRAGMA index_list({table})")
    )
    return {"columns": columns, "foreign_keys": foreign_keys, "indexes": indexes}


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    path = tmp_path_factory.mktemp("schema") / "alembic.db"
    conn = sqlite3.connect(path)
    conn.executescript(DDL.read_text(encoding="utf-8"))
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def ours_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "models.db"
    engine = create_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(engine, tables=[SQLModel.metadata.tables[t] for t in MIRRORED])
    engine.dispose()
    return path


@pytest.fixture(scope="module")
def ours(ours_file: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(ours_file)
    yield conn
    conn.close()


def test_the_models_are_exactly_the_mirrored_tables() -> None:
    assert sorted(str(m.__tablename__) for m in MODELS) == sorted(MIRRORED)
    # Every foreign key of the models resolves to a mirrored table.
    for name in MIRRORED:
        for fk in SQLModel.metadata.tables[name].foreign_keys:
            assert fk.column.table.name in MIRRORED, (name, fk)


@pytest.mark.parametrize("table", MIRRORED)
def test_the_models_match_the_applications_alembic_schema(
    table: str, real: sqlite3.Connection, ours: sqlite3.Connection
) -> None:
    expected, actual = describe(real, table), describe(ours, table)
    assert actual["columns"], f"the models create no table {table}"
    assert expected["columns"], f"{DDL.name} has no table {table}"
    assert actual["columns"] == expected["columns"]
    assert actual["foreign_keys"] == expected["foreign_keys"]
    assert actual["indexes"] == expected["indexes"]


def test_the_constraints_the_issue_names(ours: sqlite3.Connection) -> None:
    """Spelled out, so that a change to the DDL file and the models together is still seen."""
    columns = {c["name"]: c for c in describe(ours, "test_features")["columns"]}
    assert columns["feature_id"]["notnull"]
    assert columns["title"]["notnull"] and columns["title"]["default"] is None
    assert columns["user_stories"]["notnull"] and columns["user_stories"]["default"] == "'[]'"
    for flag in ("enable_default", "enable_content", "enable_visual"):
        assert columns[flag]["notnull"] and columns[flag]["default"] == "'0'", flag
    assert ("feature_id", "features", "id", "NO ACTION", "NO ACTION", "NONE") in describe(
        ours, "test_features"
    )["foreign_keys"]
    bugs = {c["name"]: c for c in describe(ours, "bugs")["columns"]}
    assert bugs["title"]["notnull"] and bugs["known"]["default"] == "0"


def test_the_ddl_file_is_what_a_real_cache_holds(real: sqlite3.Connection) -> None:
    """The file is the whole migrated schema: the FTS5 index, its triggers, the head revision."""
    names = {name for (name,) in real.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert names == {
        f"{t}_{op}" for t in ("bugs", "features", "products", "tests") for op in ("ai", "au", "ad")
    }
    assert real.execute("SELECT version_num FROM alembic_version").fetchall() == [("8699d94758fb",)]
    (sql,) = real.execute("SELECT sql FROM sqlite_master WHERE name = 'search_index'").fetchone()
    assert "fts5" in sql


PG_FOREIGN_KEYS = """
SELECT a.attname, ref.relname, refcol.attname FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class ref ON ref.oid = c.confrelid
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
JOIN pg_attribute refcol ON refcol.attrelid = c.confrelid AND refcol.attnum = c.confkey[1]
WHERE c.contype = 'f' AND t.relname = $1"""


@pytest.fixture(scope="module")
def postgres_copy(ours_file: Path) -> Iterator[str]:
    """A scratch PostgreSQL database made as the PostgreSQL tests make theirs (support.postgres)."""
    with scratch_database(ours_file) as url:
        yield url


@pytest.mark.parametrize("table", [pytest.param(t, marks=needs_server) for t in MIRRORED])
def test_the_postgresql_copy_the_tests_use_has_the_same_tables(
    table: str, postgres_copy: str, ours: sqlite3.Connection
) -> None:
    """pgcopy.SCHEMA, hand-written for PostgreSQL, has the models' columns in their order,
    the same NOT NULL, a default where they have one, and the same foreign keys."""
    columns = asyncio.run(
        fetch(
            postgres_copy,
            "SELECT column_name, is_nullable = 'NO', column_default IS NOT NULL "
            "FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
            table,
        )
    )
    foreign_keys = sorted(asyncio.run(fetch(postgres_copy, PG_FOREIGN_KEYS, table)))
    described = describe(ours, table)
    expected = [(c["name"], c["notnull"], c["default"] is not None) for c in described["columns"]]
    assert columns == expected
    assert foreign_keys == sorted((f, ref, to) for f, ref, to, *_ in described["foreign_keys"])
