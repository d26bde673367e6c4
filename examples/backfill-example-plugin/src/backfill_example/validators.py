"""``severity_coverage``: do the bugs that name a severity have their row?"""

from __future__ import annotations

from backfill_core import Metric, Validator
from backfill_core.sql import json_value
from sqlalchemy import column, func, select, table

bugs = table("bugs", column("id"), column("raw_data"))
severities = table("bug_severities", column("bug_id"))


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
