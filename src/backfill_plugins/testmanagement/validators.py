"""How complete the test-management backfills are, over the whole database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, column, func, select, table

from backfill_core import Metric, Validator
from backfill_core.sql import json_value

tests = table("tests", column("id"))
features = table("test_features", column("id"), column("test_id"), column("customer_id"))
bugs = table("bugs", column("id"), column("raw_data"), column("test_feature_id"))


def _count(t: FromClause, *where: ColumnElement[Any]) -> Select[Any]:
    return select(func.count()).select_from(t).where(*where)


class CoverageValidator(Validator):
    """Shares of tests with features, of bugs attributed, of features with a customer."""

    name = "coverage"
    description = "coverage of test_features and bug attribution"
    covers = ("test_features", "bug_attribution")
    tables = {
        "tests": ("id",),
        "test_features": ("id", "test_id", "customer_id"),
        "bugs": ("id", "raw_data", "test_feature_id"),
    }

    def __init__(self, threshold: float = 0.95) -> None:
        self.threshold = threshold

    def metrics(self) -> list[Metric]:
        # IN (subquery), not a correlated EXISTS: without an index on test_features.test_id the
        # latter scans test_features once per test.
        has_feature = tests.c.id.in_(select(features.c.test_id))
        names_feature = json_value(bugs.c.raw_data, "test_feature", "id").is_not(None)
        attributed = bugs.c.test_feature_id.is_not(None)
        return [
            Metric(
                "tests_with_features",
                "tests with at least one test feature",
                _count(tests, has_feature),
                _count(tests),
                self.threshold,
                "test_features",
            ),
            Metric(
                "bugs_attributed",
                "bugs naming a test feature that are attributed",
                _count(bugs, names_feature, attributed),
                _count(bugs, names_feature),
                self.threshold,
                "bug_attribution",
            ),
            Metric(
                "bugs_attributed_all",
                "all bugs that are attributed",
                _count(bugs, attributed),
                _count(bugs),
                None,
                "bug_attribution",
            ),
            Metric(
                "features_with_customer",
                "test features with a customer_id",
                _count(features, features.c.customer_id.is_not(None)),
                _count(features),
                self.threshold,
                "test_features",
            ),
        ]
