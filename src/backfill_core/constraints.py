"""What the database would refuse: a dry run checks its planned rows against the target tables'
NOT NULL, UNIQUE, CHECK and (where the database enforces them) foreign-key constraints, so that
its counts are those of the real run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from backfill_core.database import Database


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
    async with db.reading() as conn:
        enforced = True
        if db.is_sqlite:
            enforced = bool((await conn.execute(text("PRAGMA foreign_keys"))).scalar())
        return await conn.run_sync(_reflect, list(tables), enforced)


def _reflect(conn: Connection, tables: list[str], enforce_fks: bool) -> dict[str, TableRules]:
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


def missing_values(rules: TableRules, row: Mapping[str, Any], inserted: bool) -> str | None:
    """The NOT NULL column ``row`` leaves NULL, as SQLite names it, or None."""
    for col, needs_value in rules.required.items():
        if col in row:
            if row[col] is None:
                return col
        elif inserted and needs_value:
            return col
    return None
