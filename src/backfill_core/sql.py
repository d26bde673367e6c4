"""Portable SQL helpers for validators' queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import NullType


class json_value(FunctionElement[Any]):
    """The value at a path inside a JSON text column; NULL where the text is not valid JSON.

    ``json_value(bugs.c.raw_data, "test_feature", "id")``. On SQLite, needs its JSON functions;
    on PostgreSQL, any version (before 16, see :data:`SAFE_JSONB_FUNCTION`).
    """

    type = NullType()
    inherit_cache = True

    def __init__(self, column: ColumnElement[Any], *path: str) -> None:
        self.path = path
        super().__init__(column)


SAFE_JSONB = "pg_temp.backfill_jsonb"
"""Before PostgreSQL 16 (which has ``pg_input_is_valid``), the function that reads JSON text as
jsonb, NULL where it is not valid; a query that names it runs after SAFE_JSONB_FUNCTION."""
SAFE_JSONB_FUNCTION = f"""CREATE OR REPLACE FUNCTION {SAFE_JSONB}(t text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL RESTRICTED AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END $$"""
"""Creates SAFE_JSONB in the session's temporary schema, which needs no right beyond TEMPORARY
on the database (PUBLIC has it unless revoked) and leaves nothing behind: the engine runs it in
the metric's own transaction and rolls that back. ``data_exception`` is what jsonb's input
raises for any text it refuses, the errors ``pg_input_is_valid`` reports as false."""


def has_input_validation(dialect: Dialect) -> bool:
    """Whether this PostgreSQL server can test text before parsing it (16 or later)."""
    return (dialect.server_version_info or (0,)) >= (16,)


def safe_jsonb(compiler: SQLCompiler, text: str) -> str:
    """SQL for the jsonb value of the SQL text expression ``text``; NULL where it is not JSON."""
    if has_input_validation(compiler.dialect):
        return f"CASE WHEN pg_input_is_valid({text}, 'jsonb') THEN ({text})::jsonb END"
    return f"{SAFE_JSONB}({text})"


def needs_safe_jsonb(sql: str) -> bool:
    """Whether compiled ``sql`` calls SAFE_JSONB, which must be created first."""
    return SAFE_JSONB in sql


@compiles(json_value, "sqlite")
def _sqlite(element: json_value, compiler: SQLCompiler, **kw: Any) -> str:
    col = compiler.process(next(iter(element.clauses)), **kw)
    path = "$" + "".join(f".{p}" for p in element.path)
    return f"CASE WHEN json_valid({col}) THEN json_extract({col}, '{path}') END"


@compiles(json_value, "postgresql")
def _postgresql(element: json_value, compiler: SQLCompiler, **kw: Any) -> str:
    # One key at a time with -> and ->>, which never index into an array, as SQLite's $.a.b
    # does not (#> '{a,0}' would read an array's first element).
    value = safe_jsonb(compiler, compiler.process(next(iter(element.clauses)), **kw))
    if not element.path:
        return f"({value} #>> '{{}}')"
    *inner, last = (p.replace("'", "''") for p in element.path)
    return "(" + value + "".join(f" -> '{p}'" for p in inner) + f" ->> '{last}')"
