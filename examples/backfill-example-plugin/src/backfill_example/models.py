"""The table this plugin fills. backfill never creates tables: apply ``DDL`` first."""

from __future__ import annotations

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

DDL = """CREATE TABLE IF NOT EXISTS bug_severities (
    bug_id INTEGER PRIMARY KEY REFERENCES bugs(id),
    severity TEXT NOT NULL
);
"""
"""The table, for SQLite and PostgreSQL alike; ``backfill severity-ddl`` prints it."""


class BugSeverity(SQLModel, table=True):
    """A row of ``bug_severities``.

    The model leaves out the foreign key to ``bugs``, which belongs to the application and may
    have no model in this process; ``DDL`` has it.
    """

    __tablename__ = "bug_severities"

    bug_id: int = Field(primary_key=True)
    severity: str = Field(sa_column=Column(Text, nullable=False))
