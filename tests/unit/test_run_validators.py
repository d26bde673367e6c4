"""``run_validators`` beyond the coverage validator: metrics that cannot be fused into one query,
metrics that fail when run, which metrics a run computes, and the query shapes that must never be
fused. Real SQLite files; each test kills mutants of validation.py that survived the others.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import column, func, select, table
from sqlalchemy.dialects.postgresql import dialect as postgresql_dialect
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from backfill_core import (
    Database,
    EnvironmentProblem,
    Metric,
    MetricResult,
    UsageError,
    Validator,
    resolve_url,
)
from backfill_core.app.validation import fused, parse_thresholds, run_validators

DIALECTS = [sqlite_dialect(), postgresql_dialect()]  # type: ignore[no-untyped-call]
t = table("t", column("a"), column("b"))
u = table("u", column("a"))


def _count(source: Any, *where: Any) -> Any:
    return select(func.count()).select_from(source).where(*where)


class Handmade(Validator):
    name = "handmade"
    tables = {"t": ("a", "b"), "u": ("a",)}

    def __init__(self, *metrics: Metric) -> None:
        self._metrics = metrics

    def metrics(self) -> Sequence[Metric]:
        return self._metrics


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """t: a = 1..5, b = a % 2; u: a = 1..3."""
    path = tmp_path / "v.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (a INTEGER, b INTEGER)")
        conn.execute("CREATE TABLE u (a INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(a, a % 2) for a in range(1, 6)])
        conn.executemany("INSERT INTO u VALUES (?)", [(a,) for a in range(1, 4)])
    return path


def validate(
    path: Path,
    *metrics: Metric,
    thresholds: Mapping[str, float] | None = None,
    ran: Collection[str] | None = None,
) -> dict[str, MetricResult]:
    async def go() -> list[MetricResult]:
        async with Database(resolve_url(str(path))) as db:
            return await run_validators(db, [Handmade(*metrics)], thresholds, ran)

    return {m.name: m for m in asyncio.run(go())}


def test_a_metric_that_cannot_be_fused_runs_its_two_queries(path: Path) -> None:
    """Numerator and denominator on different tables: two queries, each counted right."""
    metric = Metric("u_over_t", "u rows per t row", _count(u, u.c.a > 1), _count(t), threshold=0.4)
    assert fused(metric, sqlite_dialect()) is None

    (result,) = validate(path, metric).values()

    assert (result.numerator, result.denominator, result.value, result.passed) == (2, 5, 0.4, True)


@pytest.mark.parametrize("fusable", [True, False], ids=["fused", "apart"])
def test_a_numerator_of_zero_is_reported_as_zero(path: Path, fusable: bool) -> None:
    denominator = _count(t) if fusable else _count(u)
    metric = Metric("none", "rows with a > 9", _count(t, t.c.a > 9), denominator, threshold=0.0)
    assert (fused(metric, sqlite_dialect()) is not None) == fusable

    (result,) = validate(path, metric).values()

    assert (result.numerator, result.value, result.passed) == (0, 0.0, True)


def test_a_metric_query_that_fails_is_an_environment_problem_naming_it(path: Path) -> None:
    """The query compiles, but the table has no such column: exit 3, saying which metric."""
    broken = Metric("broken", "d", _count(t, column("nope") > 1), _count(t))

    with pytest.raises(EnvironmentProblem) as info:
        validate(path, broken)

    message = str(info.value)
    assert message.startswith("validator 'handmade' could not compute 'broken': no such column: nope")
    assert message.endswith("(`backfill run --no-validate` skips validation)")
    assert info.value.exit_code == 3


def test_only_the_metrics_about_extractors_that_ran_are_computed(path: Path) -> None:
    metrics = [
        Metric("about_x", "d", _count(t, t.c.b == 1), _count(t), extractor="x"),
        Metric("about_y", "d", _count(t, t.c.b == 0), _count(t), extractor="y"),
        Metric("always", "d", _count(u, u.c.a > 2), _count(u)),
    ]

    assert set(validate(path, *metrics, ran=["x"])) == {"about_x", "always"}
    assert set(validate(path, *metrics)) == {"about_x", "about_y", "always"}


def test_a_threshold_for_a_metric_that_will_not_be_computed_is_refused(path: Path) -> None:
    metrics = [
        Metric("about_x", "d", _count(t, t.c.b == 1), _count(t), extractor="x"),
        Metric("about_y", "d", _count(t, t.c.b == 0), _count(t), extractor="y"),
    ]

    with pytest.raises(UsageError) as info:
        validate(path, *metrics, thresholds={"handmade.about_y": 0.5}, ran=["x"])

    assert "handmade.about_y" in str(info.value)
    assert set(validate(path, *metrics, thresholds={"handmade.about_x": 0.5}, ran=["x"])) == {"about_x"}


def test_the_refusal_names_the_unknown_and_the_known(path: Path) -> None:
    """The message docs/cli.md shows: the names refused, then every name that would do."""
    metrics = [
        Metric("about_x", "d", _count(t, t.c.b == 1), _count(t), extractor="x"),
        Metric("info", "d", _count(t, t.c.b == 0), _count(t), threshold=None),
    ]

    with pytest.raises(UsageError) as info:
        validate(path, *metrics, thresholds={"handmade.b": 0.5, "handmade.a": 0.5}, ran=["x"])
    with pytest.raises(UsageError) as none_known:  # no metric about y: nothing would do
        validate(path, metrics[0], thresholds={"handmade.a": 0.5}, ran=["y"])

    assert str(info.value) == (
        "--threshold names no metric being validated: handmade.a, handmade.b "
        "(known: handmade, handmade.about_x)"
    )
    assert str(none_known.value).endswith("(known: none)")


@pytest.mark.parametrize("dialect", DIALECTS, ids=["sqlite", "postgresql"])
@pytest.mark.parametrize(
    "clause",
    [
        lambda q: q.group_by(t.c.b),
        lambda q: q.having(func.count() > 0),
        lambda q: q.limit(1),
        lambda q: q.offset(1),
        lambda q: q.distinct(),
    ],
    ids=["group-by", "having", "limit", "offset", "distinct"],
)
def test_a_shared_clause_that_changes_the_count_keeps_the_queries_apart(clause: Any, dialect: Any) -> None:
    """The numerator is the denominator plus a condition, and both have the same extra clause:
    still not one query, as a GROUP BY, HAVING, LIMIT, OFFSET or DISTINCT changes what
    count(*) counts. (The two dialects render LIMIT and OFFSET differently, HAVING after a
    newline.)"""
    denominator = clause(_count(t, t.c.a > 1))
    numerator = clause(_count(t, t.c.a > 1, t.c.b == 1))
    assert fused(Metric("m", "d", denominator.where(t.c.b == 1), denominator), dialect) is None
    assert fused(Metric("m", "d", numerator, denominator), dialect) is None


def test_the_same_queries_without_the_clause_are_fused() -> None:
    """The guard above is what keeps them apart, not some other difference."""
    for dialect in DIALECTS:
        metric = Metric("m", "d", _count(t, t.c.a > 1, t.c.b == 1), _count(t, t.c.a > 1))
        assert fused(metric, dialect) is not None


@pytest.mark.parametrize("value", ["0.5X", "X50%", "50%X", "0.5 %%X"])
def test_a_threshold_with_anything_after_the_number_is_refused(value: str) -> None:
    with pytest.raises(UsageError):
        parse_thresholds([f"coverage={value}"])
