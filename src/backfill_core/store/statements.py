"""The statements the engine runs for every batch, rendered once as the driver's own SQL.

Executing plain SQL text with tuples of parameters skips SQLAlchemy's per-statement compilation
and per-row parameter processing, which otherwise cost more than the database's own work.
Both supported dialects share this syntax (SQLite 3.24+ and PostgreSQL 9.5+ for ``ON CONFLICT``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from sqlalchemy.engine import Dialect

Names = tuple[str, ...]


class KeyLookup(str):
    """The SQL text of a composite-key lookup (see :meth:`Statements.lookup`), with its shape, so
    that PostgreSQL can run it as :meth:`Statements.array_lookup` instead, with the same rows."""

    table: str
    columns: Names
    key_cols: Names
    order_by: str | None

    def __new__(
        cls, sql: str, table: str, columns: Names, key_cols: Names, order_by: str | None
    ) -> KeyLookup:
        self = super().__new__(cls, sql)
        self.table, self.columns, self.key_cols, self.order_by = table, columns, key_cols, order_by
        return self


class RowWrites(str):
    """The SQL text of a write of one row (an upsert, an update or a delete, see
    :meth:`Statements.upsert`), with its shape, so that PostgreSQL can write many rows at once
    as :meth:`Statements.array_write` instead."""

    kind: str
    """``upsert``, ``update`` or ``delete``."""
    table: str
    columns: Names
    key_cols: Names
    params: Names
    """The columns of the parameters, in their order."""

    def __new__(cls, sql: str, kind: str, table: str, columns: Names, key_cols: Names) -> RowWrites:
        self = super().__new__(cls, sql)
        self.kind, self.table, self.columns, self.key_cols = kind, table, columns, key_cols
        self.params = {"upsert": columns, "update": columns + key_cols, "delete": key_cols}[kind]
        return self


class Statements:
    """SQL text for keyset pages, key lookups, upserts and updates, cached by shape."""

    def __init__(self, dialect: Dialect) -> None:
        self._quote = dialect.identifier_preparer.quote
        self._sqlite = dialect.name == "sqlite"
        self._numbered = dialect.paramstyle in ("numeric", "numeric_dollar")
        self._mark = "$" if dialect.paramstyle == "numeric_dollar" else ":"
        if not self._numbered and dialect.paramstyle != "qmark":
            raise ValueError(f"unsupported parameter style {dialect.paramstyle!r}")
        self.page = lru_cache(maxsize=None)(self._page)
        self.lookup = lru_cache(maxsize=256)(self._lookup)
        self.array_lookup = lru_cache(maxsize=256)(self._array_lookup)
        self.array_write = lru_cache(maxsize=256)(self._array_write)
        self.upsert = lru_cache(maxsize=256)(self._upsert)
        self.update = lru_cache(maxsize=256)(self._update)
        self.delete = lru_cache(maxsize=256)(self._delete)
        self.increment = lru_cache(maxsize=16)(self._increment)
        self.insert = lru_cache(maxsize=16)(self._insert)
        self.delete_in = lru_cache(maxsize=16)(self._delete_in)

    def check(self, table: str, columns: Sequence[tuple[str, str | None]], expression: str) -> str:
        """Whether a row breaks CHECK ``expression``: 1 if it does, else 0 (true or NULL pass),
        for one row of ``columns`` given as (name, type to cast the parameter to, or None)."""
        values = ", ".join(
            (f"CAST({m} AS {cast})" if cast else m) + f" AS {self._quote(name)}"
            for m, (name, cast) in zip(self._marks(len(columns)), columns, strict=True)
        )
        return (
            f"SELECT CASE WHEN ({expression}) THEN 0 WHEN NOT ({expression}) THEN 1 ELSE 0 END "
            f"FROM (SELECT {values}) AS {self._quote(table)}"
        )

    def _marks(self, n: int) -> list[str]:
        if self._numbered:
            return [f"{self._mark}{i}" for i in range(1, n + 1)]
        return ["?"] * n

    def _names(self, names: Sequence[str]) -> str:
        return ", ".join(map(self._quote, names))

    def _page(
        self, table: str, columns: Names, key: str, limit: int | None, after: bool, upto: bool = False
    ) -> str:
        """Up to ``limit`` rows (all without one) with a non-NULL key, in key order; the key
        bounds are the parameters, the lower one (``key > ?``) first, then the upper one
        (``key <= ?``)."""
        k, where = self._quote(key), self._within(key, after, upto)
        limited = f" LIMIT {int(limit)}" if limit is not None else ""
        return f"SELECT {self._names(columns)} FROM {self._quote(table)} WHERE {where} ORDER BY {k}{limited}"

    def _within(self, key: str, after: bool, upto: bool) -> str:
        """A non-NULL ``key`` within the bounds given as parameters, lower then upper."""
        k = self._quote(key)
        marks = iter(self._marks(after + upto))
        where = f"{k} IS NOT NULL" + (f" AND {k} > {next(marks)}" if after else "")
        return where + (f" AND {k} <= {next(marks)}" if upto else "")

    def _lookup(
        self, table: str, columns: Names, key_cols: Names, n: int, order_by: str | None = None
    ) -> str:
        """The rows whose key is one of ``n`` keys, given flattened in key-column order.

        SQLite looks a composite key up by joining the distinct keys (a list of row values) to
        the table, the keys first, and so searches an index on the key's columns for each key,
        whatever their order in the index and their types; for ``(a, b) IN (…)`` it often scans
        the whole table instead (with an index on ``(b, a)`` over a text column, for one). On
        PostgreSQL a composite key's lookup is a :class:`KeyLookup`: a list of row values, typed
        by the columns they are compared with but planned as one OR branch per key, which
        :meth:`Database.fetch <backfill_core.database.Database.fetch>` runs as
        :meth:`array_lookup` instead.
        """
        q = self._quote
        width = len(key_cols)
        marks = self._marks(n * width)
        order = f" ORDER BY {q(order_by)}" if order_by else ""
        if width == 1:
            where = f"{q(key_cols[0])} IN ({', '.join(marks)})"
            return f"SELECT {self._names(columns)} FROM {q(table)} WHERE {where}{order}"
        rows = ", ".join(f"({', '.join(marks[i : i + width])})" for i in range(0, len(marks), width))
        if self._sqlite:
            keys = f"(SELECT DISTINCT * FROM (VALUES {rows})) AS k"  # columns column1, column2, …
            on = " AND ".join(f"t.{q(c)} = k.column{i}" for i, c in enumerate(key_cols, 1))
            order = f" ORDER BY t.{q(order_by)}" if order_by else ""
            selected = ", ".join(f"t.{q(c)}" for c in columns)
            return f"SELECT {selected} FROM {keys} CROSS JOIN {q(table)} AS t ON {on}{order}"
        where = f"({self._names(key_cols)}) IN ({rows})"
        sql = f"SELECT {self._names(columns)} FROM {q(table)} WHERE {where}{order}"
        return KeyLookup(sql, table, columns, key_cols, order_by)

    def _array_lookup(
        self, table: str, columns: Names, key_cols: Names, array_types: Names, order_by: str | None = None
    ) -> str:
        """The rows whose key is among the keys given as one array per key column (PostgreSQL):
        ``array_types`` are the arrays' types, one per key column, as ``integer[]``.

        One statement for any number of keys, which PostgreSQL plans in well under a
        millisecond (a semi-join on the key's index), where it plans a list of 1,500 row values
        in about half a second.
        """
        marks = self._marks(len(key_cols))
        arrays = ", ".join(f"CAST({m} AS {t})" for m, t in zip(marks, array_types, strict=True))
        order = f" ORDER BY {self._quote(order_by)}" if order_by else ""
        return (
            f"SELECT {self._names(columns)} FROM {self._quote(table)} "
            f"WHERE ({self._names(key_cols)}) IN (SELECT * FROM unnest({arrays})){order}"
        )

    def _insert(self, table: str, columns: Names) -> str:
        return (
            f"INSERT INTO {self._quote(table)} ({self._names(columns)}) "
            f"VALUES ({', '.join(self._marks(len(columns)))})"
        )

    def _upsert(self, table: str, columns: Names, key_cols: Names) -> str:
        """Insert ``columns``; on a key conflict update the non-key ones instead."""
        sql = self._insert(table, columns) + self._on_conflict(columns, key_cols)
        return sql if self._sqlite else RowWrites(sql, "upsert", table, columns, key_cols)

    def _on_conflict(self, columns: Names, key_cols: Names) -> str:
        rest = [self._quote(c) for c in columns if c not in key_cols]
        conflict = f" ON CONFLICT ({self._names(key_cols)}) DO "
        if not rest:
            return conflict + "NOTHING"
        return conflict + "UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in rest)

    def _update(self, table: str, columns: Names, key_cols: Names) -> str:
        """Set ``columns`` of the row keyed by ``key_cols``; parameters: values, then keys."""
        marks = self._marks(len(columns) + len(key_cols))
        sets = ", ".join(f"{self._quote(c)} = {m}" for c, m in zip(columns, marks, strict=False))
        where = " AND ".join(
            f"{self._quote(c)} = {m}" for c, m in zip(key_cols, marks[len(columns) :], strict=True)
        )
        sql = f"UPDATE {self._quote(table)} SET {sets} WHERE {where}"
        return sql if self._sqlite else RowWrites(sql, "update", table, columns, key_cols)

    def _delete(self, table: str, key_cols: Names) -> str:
        """Delete the row keyed by ``key_cols``; parameters: the key's values."""
        marks = self._marks(len(key_cols))
        where = " AND ".join(f"{self._quote(c)} = {m}" for c, m in zip(key_cols, marks, strict=True))
        sql = f"DELETE FROM {self._quote(table)} WHERE {where}"
        return sql if self._sqlite else RowWrites(sql, "delete", table, (), key_cols)

    def _array_write(self, write: RowWrites, array_types: Names) -> str:
        """``write`` for many rows at once (PostgreSQL): its parameters are one array per column
        of ``write.params``, of the types ``array_types`` (as ``integer[]``), a row's values at
        the same index of each; the rows' keys must differ.

        One statement per batch and table instead of one per row: the server plans and runs it
        once, where each row's statement cost it about as much as writing the row.
        """
        q, table = self._quote, self._quote(write.table)
        marks = self._marks(len(write.params))
        arrays = ", ".join(f"CAST({m} AS {t})" for m, t in zip(marks, array_types, strict=True))
        if write.kind == "upsert":
            into = f"INSERT INTO {table} ({self._names(write.columns)})"
            return f"{into} SELECT * FROM unnest({arrays}){self._on_conflict(write.columns, write.key_cols)}"
        if write.kind == "delete":
            keys = self._names(write.key_cols)
            return f"DELETE FROM {table} WHERE ({keys}) IN (SELECT * FROM unnest({arrays}))"
        names = [f"v{i}" for i in range(1, len(write.params) + 1)]
        sets = ", ".join(f"{q(c)} = v.{n}" for c, n in zip(write.columns, names, strict=False))
        where = " AND ".join(
            f"t.{q(c)} = v.{n}" for c, n in zip(write.key_cols, names[len(write.columns) :], strict=True)
        )
        values = f"unnest({arrays}) AS v({', '.join(names)})"
        return f"UPDATE {table} AS t SET {sets} FROM {values} WHERE {where}"

    def _increment(self, table: str, added: Names, assigned: Names, key: str) -> str:
        """Add to ``added`` and set ``assigned`` in the row keyed by ``key``, in that parameter order."""
        q = self._quote
        marks = self._marks(len(added) + len(assigned) + 1)
        sets = [f"{q(c)} = {q(c)} + {m}" for c, m in zip(added, marks, strict=False)]
        sets += [f"{q(c)} = {m}" for c, m in zip(assigned, marks[len(added) :], strict=False)]
        return f"UPDATE {q(table)} SET {', '.join(sets)} WHERE {q(key)} = {marks[-1]}"

    def _delete_in(self, table: str, column: str, in_column: str, n: int) -> str:
        """Delete the rows with ``column`` equal to the first parameter and ``in_column`` among
        the ``n`` after it."""
        marks = self._marks(n + 1)
        return (
            f"DELETE FROM {self._quote(table)} WHERE {self._quote(column)} = {marks[0]} "
            f"AND {self._quote(in_column)} IN ({', '.join(marks[1:])})"
        )
