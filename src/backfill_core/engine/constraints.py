"""What the database would refuse: a dry run checks its planned rows against the target tables'
NOT NULL, UNIQUE, CHECK and (where the database enforces them) foreign-key constraints, so that
its counts are those of the real run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection as SyncConnection

from backfill_core.engine.overlay import Overlay
from backfill_core.engine.planner import Plan, Target
from backfill_core.store.connection import Connection
from backfill_core.store.database import Database

Select = Callable[
    [Connection, str, tuple[str, ...], tuple[str, ...], set[Any]],
    Awaitable[dict[tuple[Any, ...], dict[str, Any]]],
]
"""The engine's lookup: the rows of a table (as dicts of some columns) whose key columns have
one of the given values, keyed by those values."""


class WouldBeRefused(Exception):
    """A planned write breaks a constraint: the real run's write would fail on it."""


@dataclass
class TableRules:
    """The constraints of one table that a write can break."""

    columns: tuple[str, ...]
    required: dict[str, bool] = field(default_factory=dict)
    """NOT NULL columns a write must give a value (True) or may leave to a default (False)."""
    unique: list[tuple[str, ...]] = field(default_factory=list)
    foreign_keys: list[tuple[tuple[str, ...], str, tuple[str, ...]]] = field(default_factory=list)
    """(local columns, referenced table, referenced columns), only where the database enforces them."""
    checks: list[str] = field(default_factory=list)
    """The SQL text of each CHECK constraint."""
    casts: dict[str, str | None] = field(default_factory=dict)
    """The type to cast a value to for a CHECK to see it as the column would (None on SQLite,
    whose columns take values as they come)."""


async def reflect(db: Database, tables: Sequence[str]) -> dict[str, TableRules]:
    """The rules of ``tables``, read from the database's catalogue."""
    async with db.sqlalchemy() as conn:
        enforced = True
        if db.is_sqlite:
            enforced = bool((await conn.execute(text("PRAGMA foreign_keys"))).scalar())
        return await conn.run_sync(_reflect, list(tables), enforced)


def _reflect(conn: SyncConnection, tables: list[str], enforce_fks: bool) -> dict[str, TableRules]:
    inspector = inspect(conn)
    out = {}
    for name in tables:
        columns = inspector.get_columns(name)
        pk = tuple(inspector.get_pk_constraint(name).get("constrained_columns") or ())
        rules = TableRules(tuple(c["name"] for c in columns))
        for c in columns:
            if c["nullable"]:
                continue
            # A single INTEGER primary key is SQLite's rowid, and PostgreSQL's serial and identity
            # columns have a default: both fill themselves in.
            auto = pk == (c["name"],) and (
                (conn.dialect.name == "sqlite" and str(c["type"]).upper() == "INTEGER") or c.get("identity")
            )
            rules.required[c["name"]] = not (auto or c.get("default") is not None)
        uniques = [tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)]
        for index in inspector.get_indexes(name):
            if index.get("unique") and all(index["column_names"]):
                uniques.append(tuple(c for c in index["column_names"] if c))
        rules.unique = [u for u in dict.fromkeys(uniques) if u and u != pk]
        if enforce_fks:
            rules.foreign_keys = [
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"] or pk))
                for f in inspector.get_foreign_keys(name)
            ]
        rules.checks = [c["sqltext"] for c in inspector.get_check_constraints(name)]
        sqlite = conn.dialect.name == "sqlite"
        rules.casts = {
            c["name"]: None if sqlite else c["type"].compile(dialect=conn.dialect) for c in columns
        }
        out[name] = rules
    return out


class Refusals:
    """Checks a dry run's planned batches against the target tables' ``rules``, looking rows
    up the way the engine does (``select``), and seeing what the dry run would have written
    before (``overlay``)."""

    def __init__(
        self, rules: Mapping[str, TableRules], db: Database, select: Select, overlay: Overlay | None
    ) -> None:
        self.rules, self.db, self._select, self.overlay = rules, db, select, overlay

    async def check(self, conn: Connection, plan: Plan) -> None:
        """Raise WouldBeRefused if the database would refuse a write of ``plan``."""
        for target, w in plan.writes.items():
            rules = self.rules.get(w.table)
            if rules is None:
                continue
            table, key_cols = w.table, w.key_cols
            rows = [(row, True) for row in w.inserts]
            rows += [({**dict(zip(key_cols, key, strict=True)), **new}, False) for key, new in w.updates]
            for row, inserted in rows:
                col = _missing_value(rules, row, inserted)
                if col is not None:
                    raise WouldBeRefused(f"NOT NULL constraint failed: {table}.{col}")
            for cols in rules.unique:
                await self._unique(conn, table, key_cols, cols, [r for r, _ in rows])
            for local, parent, parent_cols in rules.foreign_keys:
                await self._foreign_key(conn, plan, table, local, parent, parent_cols, [r for r, _ in rows])
            if rules.checks:
                await self._checks(conn, rules, target, plan, rows)

    async def _unique(
        self,
        conn: Connection,
        table: str,
        key_cols: tuple[str, ...],
        cols: tuple[str, ...],
        rows: list[dict[str, Any]],
    ) -> None:
        owners: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in rows:
            if not all(c in row for c in cols):
                continue  # a column the write leaves as it is
            values = tuple(row[c] for c in cols)
            if None in values:
                continue  # NULLs never collide
            key = tuple(row[c] for c in key_cols)
            if owners.setdefault(values, key) != key:
                raise WouldBeRefused(f"UNIQUE constraint failed: {table}.{', '.join(cols)}")
        if not owners:
            return
        existing = await self._select(
            conn, table, tuple(dict.fromkeys((*cols, *key_cols))), cols, set(owners)
        )
        for values, row in existing.items():
            if tuple(row[c] for c in key_cols) != owners[values]:
                raise WouldBeRefused(f"UNIQUE constraint failed: {table}.{', '.join(cols)}")

    async def _foreign_key(
        self,
        conn: Connection,
        plan: Plan,
        table: str,
        local: tuple[str, ...],
        parent: str,
        parent_cols: tuple[str, ...],
        rows: list[dict[str, Any]],
    ) -> None:
        wanted = {
            values
            for row in rows
            if all(c in row for c in local) and None not in (values := tuple(row[c] for c in local))
        }
        if not wanted:
            return
        found = set(await self._select(conn, parent, parent_cols, parent_cols, wanted))
        target = (parent, parent_cols)
        found |= plan.merged.get(target, {}).keys()
        found -= {k for k, row in plan.merged.get(target, {}).items() if row is None}
        if self.overlay is not None:
            for key, row in self.overlay.rows(target, wanted).items():
                if row is None:
                    found.discard(key)
                else:
                    found.add(key)
        missing = sorted(wanted - found, key=repr)
        if missing:
            raise WouldBeRefused(
                f"FOREIGN KEY constraint failed: {table}({', '.join(local)}) = {missing[0]!r} is not in "
                f"{parent}({', '.join(parent_cols)})"
            )

    async def _checks(
        self,
        conn: Connection,
        rules: TableRules,
        target: Target,
        plan: Plan,
        rows: list[tuple[dict[str, Any], bool]],
    ) -> None:
        table, key_cols = target
        updated = {tuple(row[c] for c in key_cols) for row, inserted in rows if not inserted}
        current = await self._select(conn, table, rules.columns, key_cols, updated) if updated else {}
        if self.overlay is not None and updated:
            for key, row in self.overlay.rows(target, updated).items():
                current[key] = {**current.get(key, {}), **(row or {})}
        columns = [(c, rules.casts.get(c)) for c in rules.columns]
        for row, inserted in rows:
            full = row if inserted else {**current.get(tuple(row[c] for c in key_cols), {}), **row}
            params = [full.get(c) for c in rules.columns]
            for expression in rules.checks:
                sql = self.db.statements.check(table, columns, expression)
                if (await conn.fetch(sql, params))[0][0]:
                    raise WouldBeRefused(f"CHECK constraint failed: {table} ({expression})")


def _missing_value(rules: TableRules, row: Mapping[str, Any], inserted: bool) -> str | None:
    """The NOT NULL column ``row`` leaves NULL, as SQLite names it, or None."""
    for col, needs_value in rules.required.items():
        if col in row:
            if row[col] is None:
                return col
        elif inserted and needs_value:
            return col
    return None
