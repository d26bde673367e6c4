"""The tables this plugin fills. backfill never creates tables: apply ``DDL`` first."""

from __future__ import annotations

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

BUG_SEVERITIES_DDL = """CREATE TABLE IF NOT EXISTS bug_severities (
    bug_id INTEGER PRIMARY KEY REFERENCES bugs(id),
    severity TEXT NOT NULL
);
"""
"""``bug_severities``: one row per bug, filled by ``bug_severity``."""

BUG_STEPS_DDL = """CREATE TABLE IF NOT EXISTS bug_steps (
    bug_id INTEGER NOT NULL REFERENCES bugs(id),
    step_no INTEGER NOT NULL,
    step TEXT NOT NULL,
    PRIMARY KEY (bug_id, step_no)
);
"""
"""``bug_steps``: one row per step of a bug, numbered from 1, filled by ``bug_steps``."""

DDL = BUG_SEVERITIES_DDL + BUG_STEPS_DDL
"""Both tables, for SQLite and PostgreSQL alike; ``backfill example-ddl`` prints it (and so does
its first name, ``backfill severity-ddl``)."""


class BugSeverity(SQLModel, table=True):
    """A row of ``bug_severities``.

    The model leaves out the foreign key to ``bugs``, which belongs to the application and may
    have no model in this process; ``DDL`` has it.
    """

    __tablename__ = "bug_severities"

    bug_id: int = Field(primary_key=True)
    severity: str = Field(sa_column=Column(Text, nullable=False))


class BugStep(SQLModel, table=True):
    """A row of ``bug_steps``: step ``step_no`` (from 1) of bug ``bug_id``.

    ``(bug_id, step_no)`` is the primary key: ``bug_id`` is the parent of a ``Children`` change,
    ``step_no`` its key. As for ``BugSeverity``, the foreign key to ``bugs`` is only in ``DDL``.
    """

    __tablename__ = "bug_steps"

    bug_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    step_no: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    step: str = Field(sa_column=Column(Text, nullable=False))
