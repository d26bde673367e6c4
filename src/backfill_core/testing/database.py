"""Temporary SQLite databases for extractor tests: tables from models or DDL, rows, snapshots."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import quote

from sqlalchemy import Table, create_engine
from sqlalchemy.exc import NoReferencedTableError
from sqlalchemy.schema import sort_tables

from backfill_core.extractor import Extractor
from backfill_core.jsonvalue import dump_json

SchemaItem: TypeAlias = "str | type | Table | Extractor"
"""DDL text, a SQLModel/SQLAlchemy model class, a Table, or an extractor (its model tables)."""
Schema: TypeAlias = "str | type | Table | Extractor | Iterable[str | type | Table | Extractor]"
Rows: TypeAlias = "Mapping[str, Iterable[Mapping[str, Any]]]"
"""Rows to insert, by table name."""

LEDGER_TABLES = frozenset({"backfill_runs", "backfill_errors"})
"""backfill's own bookkeeping, left out of snapshots."""

__all__ = ["Schema", "create_database", "insert_rows", "snapshot", "tables_of"]


def _table(model: object) -> Table | None:
    if isinstance(model, Table):
        return model
    table = getattr(model, "__table__", None)
    return table if isinstance(table, Table) else None


def tables_of(extractor: Extractor) -> list[Table]:
    """The tables ``extractor`` reads and writes, from its model classes, plus every table their
    foreign keys reference (so ``Ref`` lookups find a table), dependencies first.

    A source or written table given by name only has no model to create it from: that is a
    ValueError asking for ``schema=``.
    """
    found: dict[str, Table] = {}
    pending = []
    for model in (extractor.source, *extractor.writes):
        table = _table(model)
        if table is None:
            raise ValueError(
                f"{extractor!r} names table {model!r} without a model class, so its schema is "
                "unknown; pass schema= (model classes, Tables or CREATE TABLE statements)"
            )
        pending.append(table)
    while pending:
        table = pending.pop()
        if table.name in found:
            continue
        found[table.name] = table
        for fk in table.foreign_keys:
            try:
                pending.append(fk.column.table)
            except NoReferencedTableError as e:
                raise ValueError(
                    f"{extractor!r}: table {table.name!r} references a table that no imported model "
                    f"defines ({e}); pass schema= explicitly"
                ) from None
    return sort_tables(found.values())


def _items(schema: Schema) -> list[SchemaItem]:
    if isinstance(schema, str | Table | Extractor) or _table(schema) is not None:
        return [schema]  # type: ignore[list-item]
    return list(schema)  # type: ignore[arg-type]


def create_database(path: Path | str, schema: Schema, rows: Rows | None = None) -> Path:
    """Create a new SQLite file at ``path`` with ``schema`` and insert ``rows``.

    ``schema`` is one item or a list of: model classes and Tables (created dependencies first),
    extractors (their model tables, see :func:`tables_of`), and SQL DDL text (run as a script,
    after the models). dict and list values in ``rows`` are stored as JSON text. ``path`` must
    not exist.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; create_database makes a new file")
    tables: dict[str, Table] = {}
    scripts: list[str] = []
    for item in _items(schema):
        if isinstance(item, str):
            scripts.append(item)
        elif isinstance(item, Extractor):
            tables.update((t.name, t) for t in tables_of(item))
        else:
            table = _table(item)
            if table is None:
                raise TypeError(
                    f"schema item {item!r} is not DDL text, a model class, a Table or an extractor"
                )
            tables[table.name] = table
    sqlite3.connect(path).close()  # the file exists even with no tables yet
    if tables:
        engine = create_engine(f"sqlite:///{path}")
        try:
            with engine.begin() as sa_conn:
                for table in sort_tables(tables.values()):
                    table.create(sa_conn)
        finally:
            engine.dispose()
    conn = sqlite3.connect(path)
    try:
        for script in scripts:
            conn.executescript(script)
        for table_name, table_rows in (rows or {}).items():
            insert_rows(conn, table_name, table_rows)
        conn.commit()
    finally:
        conn.close()
    return path


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _stored(value: Any) -> Any:
    return dump_json(value) if isinstance(value, dict | list) else value


def _filler(declared: str) -> Any:
    """A neutral value for a column of SQLite type ``declared`` (its affinity decides)."""
    upper = declared.upper()
    if "INT" in upper or "BOOL" in upper:
        return 0
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return ""
    if "DATE" in upper or "TIME" in upper:
        return "1970-01-01 00:00:00"
    return 0


def required_fillers(conn: sqlite3.Connection, table: str) -> dict[str, Any]:
    """A neutral value for each NOT NULL column of ``table`` that has no default."""
    return {
        name: _filler(declared)
        for _cid, name, declared, notnull, default, pk in conn.execute(
            f"PRAGMA table_info({quote_name(table)})"
        )
        if notnull and default is None and not pk
    }


def insert_rows(
    conn: sqlite3.Connection,
    table: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    skip_rejected: bool = False,
    fill_required: bool = False,
) -> list[Mapping[str, Any]]:
    """Insert ``rows`` into ``table``; return the rows inserted.

    With ``skip_rejected``, a row the table's constraints refuse (NOT NULL, UNIQUE, CHECK, a
    duplicate key) is left out instead of raising: no such row can exist in that table. With
    ``fill_required``, NOT NULL columns without a default that a row leaves out get a neutral
    value (0, '' or the epoch), as generated rows hold only the columns an extractor reads.
    """
    inserted = []
    fillers = required_fillers(conn, table) if fill_required else {}
    for row in rows:
        values = {**{c: v for c, v in fillers.items() if c not in row}, **row}
        cols = list(values)
        sql = (
            f"INSERT INTO {quote_name(table)} ({', '.join(map(quote_name, cols))}) "
            f"VALUES ({', '.join('?' for _ in cols)})"
        )
        try:
            conn.execute(sql, [_stored(values[c]) for c in cols])
        except sqlite3.IntegrityError:
            if not skip_rejected:
                raise
            continue
        inserted.append(row)
    return inserted


def snapshot(path: Path | str, tables: Sequence[str] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (default: all but backfill's ledger), in a stable order."""
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    try:
        if tables is None:
            names = [
                r[0]
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                if r[0] not in LEDGER_TABLES and not r[0].startswith("sqlite_")
            ]
        else:
            names = list(tables)
        return {n: sorted(conn.execute(f"SELECT * FROM {quote_name(n)}").fetchall(), key=repr) for n in names}
    finally:
        conn.close()
