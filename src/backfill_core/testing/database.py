"""Temporary SQLite databases for extractor tests: tables from models or DDL, rows, snapshots."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

from sqlalchemy import Table, create_engine
from sqlalchemy.exc import NoReferencedTableError
from sqlalchemy.schema import sort_tables

from backfill_core.extractor import Extractor
from backfill_core.jsonvalue import dump_json
from backfill_core.store.sqlite import connect

SchemaItem: TypeAlias = "str | type | Table | Extractor"
"""DDL text, a SQLModel/SQLAlchemy model class, a Table, or an extractor (its model tables)."""
Schema: TypeAlias = "str | type | Table | Extractor | Iterable[str | type | Table | Extractor]"
"""A test database's schema: one SchemaItem or several."""
Rows: TypeAlias = "Mapping[str, Iterable[Mapping[str, Any]]]"
"""Rows to insert, by table name."""

LEDGER_TABLES = frozenset({"backfill_runs", "backfill_errors"})
"""backfill's own bookkeeping, left out of snapshots."""

__all__ = [
    "Inserted",
    "Schema",
    "create_database",
    "fillers",
    "insert_generated",
    "insert_rows",
    "required_columns",
    "snapshot",
    "tables_of",
]


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


def _without_rowid(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return bool(row and row[0] and re.search(r"\bWITHOUT\s+ROWID\s*;?\s*$", row[0], re.IGNORECASE))


def required_columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    """The columns of ``table`` an INSERT must give a value, with their declared types: NOT NULL
    (primary key columns included) with no default, except a rowid alias, which SQLite assigns."""
    info = list(conn.execute(f"PRAGMA table_info({quote_name(table)})"))
    pk = [r for r in info if r[5]]
    rowid_alias = len(pk) == 1 and pk[0][2].strip().upper() == "INTEGER" and not _without_rowid(conn, table)
    return {
        name: declared
        for _cid, name, declared, notnull, default, in_pk in info
        if notnull and (default is None or default.strip().upper() == "NULL") and not (in_pk and rowid_alias)
    }


_EPOCH = datetime(1970, 1, 1)


def fillers(column: str, declared: str, n: int) -> tuple[Any, Any]:
    """Two values for a required ``column`` of SQLite type ``declared`` that the n-th generated
    row leaves out, tried in turn: one distinct per row and positive (for UNIQUE and ``> 0``
    checks), then a neutral one (0, '', the epoch)."""
    upper = declared.upper()
    if "INT" in upper:
        return n, 0
    if "BOOL" in upper:
        return 1, 0
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return f"{column}-{n}", ""
    if "BLOB" in upper:
        return f"{column}-{n}".encode(), b""
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return float(n), 0.0
    if "DATE" in upper or "TIME" in upper:
        return (_EPOCH + timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S"), "1970-01-01 00:00:00"
    return n, 0


@dataclass
class Inserted:
    """What :func:`insert_generated` did with a batch of rows."""

    table: str
    kept: list[Mapping[str, Any]] = field(default_factory=list)
    """The rows the table accepted, as given (without the filled columns)."""
    refused: list[tuple[Mapping[str, Any], str]] = field(default_factory=list)
    """Each row the table refused, with why and what to do about it."""

    @property
    def reasons(self) -> Counter[str]:
        """How many rows were refused for each reason."""
        return Counter(why for _row, why in self.refused)


def _insert(conn: sqlite3.Connection, table: str, values: Mapping[str, Any]) -> None:
    cols = list(values)
    conn.execute(
        f"INSERT INTO {quote_name(table)} ({', '.join(map(quote_name, cols))}) "
        f"VALUES ({', '.join('?' for _ in cols)})",
        [_stored(values[c]) for c in cols],
    )


def _names(text: str, columns: Iterable[str]) -> list[str]:
    return [c for c in columns if re.search(rf"(?<![\w$]){re.escape(c)}(?![\w$])", text)]


def _why(error: sqlite3.IntegrityError, row: Mapping[str, Any], filled: Mapping[str, str]) -> str:
    """Why the table refused ``row`` (``filled``: the columns the kit filled, with their types),
    and what the test can do about it; the same text for every row refused the same way."""
    message = str(error)

    def generate_it(column: str) -> str:
        return (
            f"give it a default in the test schema or generate it "
            f"(rows(..., extra={{{column!r}: <strategy>}}))"
        )

    def filler_values(column: str) -> str:
        first, second = fillers(column, filled[column], 1)
        return f"{first!r}, ... and {second!r}"

    if m := re.fullmatch(r"NOT NULL constraint failed: [^.]+\.(.+)", message):
        column = m[1]
        if column in row:
            return f"NULL in {column!r}, which is NOT NULL"
        return f"column {column!r} is NOT NULL with no default; {generate_it(column)}"
    if m := re.fullmatch(r"CHECK constraint failed: (.+)", message, re.DOTALL):
        suspects = _names(m[1], filled)
        if suspects:
            column = suspects[0]
            return (
                f"column {column!r} is NOT NULL with no default, and the values the kit fills it "
                f"with ({filler_values(column)}) fail CHECK constraint {m[1]!r}; {generate_it(column)}"
            )
        also = f" (the kit filled {sorted(filled)})" if filled else ""
        return f"CHECK constraint {m[1]!r} refuses generated values{also}"
    if m := re.fullmatch(r"cannot store (\w+) value in (\w+) column [^.]+\.(.+)", message):
        column = m[3]
        if column in filled:
            return (
                f"column {column!r} ({m[2]}, STRICT) is NOT NULL with no default, and the kit's "
                f"values for it ({filler_values(column)}) do not fit; {generate_it(column)}"
            )
        return f"generated {m[1]} values do not fit {column!r}, a STRICT {m[2]} column"
    if m := re.fullmatch(r"UNIQUE constraint failed: (.+)", message):
        return f"a duplicate in {m[1]} (generated rows repeating a value, or a seed row holding it)"
    return message


def _insert_filled(
    conn: sqlite3.Connection, table: str, rows: Iterable[Mapping[str, Any]]
) -> Iterator[tuple[Mapping[str, Any], str | None]]:
    """Insert each row, filling the required columns it leaves out; yield it with why the table
    refused it (None: inserted)."""
    required = required_columns(conn, table)
    for n, row in enumerate(rows, 1):
        missing = {c: t for c, t in required.items() if c not in row}
        attempts = [{**{c: fillers(c, t, n)[i] for c, t in missing.items()}, **row} for i in (0, 1)]
        why = None
        for values in attempts if missing else [row]:
            try:
                _insert(conn, table, values)
            except sqlite3.IntegrityError as e:
                why = why or _why(e, row, missing)  # the first values the kit tried tell most
            else:
                why = None
                break
        yield row, why


def insert_generated(conn: sqlite3.Connection, table: str, rows: Iterable[Mapping[str, Any]]) -> Inserted:
    """Insert generated ``rows`` into ``table`` and say which the table refused, and why.

    A required column (see :func:`required_columns`) a row leaves out is filled by the kit
    (:func:`fillers`: a distinct value, then a neutral one if the table refuses that). A row the
    table still refuses (NOT NULL, UNIQUE, CHECK, a STRICT type) is left out: no such row can
    exist in that table.
    """
    result = Inserted(table)
    for row, why in _insert_filled(conn, table, rows):
        if why is None:
            result.kept.append(row)
        else:
            result.refused.append((row, why))
    return result


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
    ``fill_required``, required columns that a row leaves out are filled as
    :func:`insert_generated` does, as generated rows hold only the columns an extractor reads.
    """
    if fill_required:
        kept = []
        for row, why in _insert_filled(conn, table, rows):
            if why is None:
                kept.append(row)
            elif not skip_rejected:
                raise sqlite3.IntegrityError(f"{table} refused {row!r}: {why}")
        return kept
    kept = []
    for row in rows:
        try:
            _insert(conn, table, row)
        except sqlite3.IntegrityError:
            if not skip_rejected:
                raise
            continue
        kept.append(row)
    return kept


def snapshot(path: Path | str, tables: Sequence[str] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (default: all but backfill's ledger), in a stable order."""
    conn = connect(str(path), read_only=True, timeout=5.0)
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
