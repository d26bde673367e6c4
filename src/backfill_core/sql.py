"""Portable SQL helpers for validators' queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import NullType


class json_value(FunctionElement[Any]):
    """The value at a path inside a JSON text column; NULL where the text is not valid JSON.

    ``json_value(bugs.c.raw_data, "test_feature", "id")``. Needs SQLite's JSON functions, or
    PostgreSQL 16 or later.
    """

    type = NullType()
    inherit_cache = True

    def __init__(self, column: ColumnElement[Any], *path: str) -> None:
        self.path = path
        super().__init__(column)


def require_input_validation(compiler: SQLCompiler) -> None:
    """Raise CompileError unless the PostgreSQL server can test JSON text before parsing it
    (``pg_input_is_valid``, PostgreSQL 16 or later)."""
    version = compiler.dialect.server_version_info or (0,)
    if version < (16,):
        raise CompileError(
            "reading JSON text safely needs PostgreSQL 16 or later (pg_input_is_valid); "
            f"this server is {'.'.join(map(str, version))}"
        )


@compiles(json_value, "sqlite")
def _sqlite(element: json_value, compiler: SQLCompiler, **kw: Any) -> str:
    col = compiler.process(next(iter(element.clauses)), **kw)
    path = "$" + "".join(f".{p}" for p in element.path)
    return f"CASE WHEN json_valid({col}) THEN json_extract({col}, '{path}') END"


@compiles(json_value, "postgresql")
def _postgresql(element: json_value, compiler: SQLCompiler, **kw: Any) -> str:
    require_input_validation(compiler)
    col = compiler.process(next(iter(element.clauses)), **kw)
    path = "{" + ",".join(element.path) + "}"
    return f"CASE WHEN pg_input_is_valid({col}, 'jsonb') THEN (({col})::jsonb #>> '{path}') END"
