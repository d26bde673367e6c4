"""``severity_coverage``: do the bugs that name a severity have their row? ``steps_coverage``: do
the bugs that list steps have rows, and those that list none have none?"""

from __future__ import annotations

from backfill_core import Metric, Validator
from backfill_core.sql import json_value
from sqlalchemy import column, func, select, table

bugs = table("bugs", column("id"), column("raw_data"))
severities = table("bug_severities", column("bug_id"))
steps = table("bug_steps", column("bug_id"))


class SeverityCoverage(Validator):
    name = "severity_coverage"
    description = "bugs whose JSON names a severity have a bug_severities row"
    covers = ("bug_severity",)
    tables = {"bugs": ("id", "raw_data"), "bug_severities": ("bug_id",)}

    def __init__(self, threshold: float = 0.98) -> None:
        self.threshold = threshold

    def metrics(self) -> list[Metric]:
        names_one = json_value(bugs.c.raw_data, "severity").is_not(None)
        has_row = bugs.c.id.in_(select(severities.c.bug_id))
        return [
            Metric(
                "bugs_with_severity",
                "bugs naming a severity that have a bug_severities row",
                select(func.count()).select_from(bugs).where(names_one, has_row),
                select(func.count()).select_from(bugs).where(names_one),
                self.threshold,
                "bug_severity",
            )
        ]


class StepsCoverage(Validator):
    """Two metrics of ``bug_steps``, read from the JSON text with ``json_value`` alone, so that
    they count the same on SQLite and PostgreSQL.

    ``json_value(raw_data, "steps")`` gives a list as its JSON text, and both databases write an
    empty list as ``[]`` (as they do the text ``"[]"``, which the extractor refuses). A longer
    list's text differs between them (spaces), and counting its items needs functions that
    differ too, so the metrics do not compare the number of rows with the number of steps: a
    bug naming steps is covered when it has at least one row. Steps that are not a list, or
    hold an item that is not text, are record errors and lower ``bugs_with_steps``, as an
    unknown severity lowers ``severity_coverage``.
    """

    name = "steps_coverage"
    description = "bugs whose JSON names steps have bug_steps rows; those with steps: [] have none"
    covers = ("bug_steps",)
    tables = {"bugs": ("id", "raw_data"), "bug_steps": ("bug_id",)}

    def __init__(self, threshold: float = 0.98) -> None:
        self.threshold = threshold

    def metrics(self) -> list[Metric]:
        listed = json_value(bugs.c.raw_data, "steps")
        has_rows = bugs.c.id.in_(select(steps.c.bug_id))
        return [
            Metric(
                "bugs_with_steps",
                "bugs naming steps (not []) that have bug_steps rows",
                select(func.count()).select_from(bugs).where(listed.is_not(None), listed != "[]", has_rows),
                select(func.count()).select_from(bugs).where(listed.is_not(None), listed != "[]"),
                self.threshold,
                "bug_steps",
            ),
            Metric(
                "empty_steps_cleared",
                "bugs with steps: [] that have no bug_steps rows",
                select(func.count()).select_from(bugs).where(listed == "[]", ~has_rows),
                select(func.count()).select_from(bugs).where(listed == "[]"),
                self.threshold,
                "bug_steps",
            ),
        ]
