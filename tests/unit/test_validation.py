"""Thresholds, metric results, and the coverage validator run against real SQLite files."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import column, func, select, table
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from backfill_core import (
    Database,
    Metric,
    MetricResult,
    RunOptions,
    RunReport,
    SchemaMissing,
    UsageError,
    make_registry,
    resolve_url,
    run_backfill,
)
from backfill_core.app.validation import fused, metric_queries, parse_thresholds, run_validators
from backfill_plugins.testmanagement import plugin, synthetic
from backfill_plugins.testmanagement.validators import CoverageValidator

# -- parse_thresholds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], {}),
        (["coverage=0.9"], {"coverage": 0.9}),
        (["coverage=90%"], {"coverage": 0.9}),
        (["coverage.tests_with_features=1"], {"coverage.tests_with_features": 1.0}),
        (["coverage=0"], {"coverage": 0.0}),
        (["coverage=100%"], {"coverage": 1.0}),
        (["coverage=12.5%"], {"coverage": 0.125}),
        (["a=0.1", "b=20%", "a=0.3"], {"a": 0.3, "b": 0.2}),
    ],
)
def test_parse_thresholds(items: list[str], expected: dict[str, float]) -> None:
    assert parse_thresholds(items) == pytest.approx(expected)


@pytest.mark.parametrize(
    "item",
    [
        "coverage",
        "coverage=",
        "=0.5",
        "coverage=abc",
        "coverage=1.5",
        "coverage=-0.1",
        "coverage=101%",
        "coverage=-5%",
        "coverage=nan",
        "coverage=inf",
        "coverage=%",
        "coverage:0.9",
    ],
)
def test_bad_thresholds_are_usage_errors(item: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_thresholds(["coverage=0.5", item])
    assert repr(item) in str(info.value)
    assert info.value.exit_code == 2


# -- MetricResult -------------------------------------------------------------------------------


def result(num: int, den: int, threshold: float | None) -> MetricResult:
    return MetricResult("v", "m", "d", num, den, threshold)


def test_metric_result_value_and_passed() -> None:
    assert result(3, 4, 0.75).value == 0.75
    assert result(3, 4, 0.75).passed
    assert not result(3, 4, 0.76).passed
    assert result(4, 4, 1.0).passed
    assert result(0, 4, 0.0).passed
    assert not result(0, 4, 0.01).passed


def test_metric_result_without_threshold_always_passes() -> None:
    assert result(0, 10, None).passed
    assert result(0, 10, None).value == 0.0


def test_metric_result_with_zero_denominator_has_no_value_and_passes() -> None:
    r = result(0, 0, 0.99)
    assert r.value is None
    assert r.passed
    assert r.to_dict() == {
        "validator": "v",
        "metric": "m",
        "description": "d",
        "value": None,
        "numerator": 0,
        "denominator": 0,
        "threshold": 0.99,
        "passed": True,
    }


# -- CoverageValidator on SQLite ---------------------------------------------------------------

SCHEMA = """
CREATE TABLE tests (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, data TEXT);
CREATE TABLE test_features (
    id INTEGER PRIMARY KEY, customer_id INTEGER, test_id INTEGER NOT NULL, title TEXT
);
CREATE TABLE bugs (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, raw_data TEXT, test_feature_id INTEGER
);
"""


def handmade(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
        listed = [
            (1, '{"features": [{"id": 10, "feature_id": 5}, {"id": 11, "feature_id": 6}]}'),
            (2, '{"features": [{"id": 12, "feature_id": 5}, {"id": 99, "feature_id": 5}, {"id": 98}]}'),
            (3, '{"features": "not a list"}'),
            (4, "not json"),
        ]
        conn.executemany("INSERT INTO tests VALUES (?, 1, ?)", listed)
        conn.executemany(
            "INSERT INTO test_features VALUES (?, ?, ?, 't')",
            [(10, 1, 1), (11, 1, 1), (12, 2, 3), (13, None, 4)],
        )
        conn.executemany(
            "INSERT INTO bugs VALUES (?, 1, ?, ?)",
            [
                (1, '{"test_feature": {"id": 10}}', 10),  # names a feature, attributed
                (2, '{"test_feature": {"id": 12}}', None),  # names a feature, not attributed
                (3, '{"test_feature": null}', None),
                (4, "not json", 11),  # attributed, but names nothing readable
                (5, None, None),
                (6, '{"test_feature": {"id": "11"}}', 11),  # names a feature, attributed
                (7, "[1, 2]", None),
                (8, '{"test_feature": {"title": "no id"}}', None),
            ],
        )
    return path


def validate(path: Path, thresholds: Mapping[str, float] | None = None) -> dict[str, MetricResult]:
    async def go() -> list[MetricResult]:
        async with Database(resolve_url(str(path))) as db:
            return await run_validators(db, [CoverageValidator()], thresholds)

    return {m.name: m for m in asyncio.run(go())}


def names_a_feature(raw: str | None) -> bool:
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return False
    feature = data.get("test_feature") if isinstance(data, dict) else None
    return isinstance(feature, dict) and feature.get("id") is not None


def listed_features(data: str | None) -> list[int | None]:
    """The ids of the features a test's JSON lists with an id and a feature_id."""
    try:
        doc = json.loads(data) if data is not None else None
    except ValueError:
        return []
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list):
        return []
    return [_id(f["id"]) for f in features if isinstance(f, dict) and f.get("id") and f.get("feature_id")]


def _id(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return None  # never written: only a recorded error accounts for it


def counted(path: Path) -> dict[str, tuple[int, int]]:
    """The coverage numerators and denominators, counted in Python from plain SELECTs."""
    with sqlite3.connect(path) as conn:
        tests = [r[0] for r in conn.execute("SELECT id FROM tests")]
        listed = [
            (t, i) for t, data in conn.execute("SELECT id, data FROM tests") for i in listed_features(data)
        ]
        written = {r[0] for r in conn.execute("SELECT id FROM test_features")}
        failed = set()
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'backfill_errors'").fetchone():
            failed = {
                json.loads(k)
                for (k,) in conn.execute(
                    "SELECT e.key FROM backfill_errors e JOIN backfill_runs r ON r.id = e.run_id "
                    "WHERE r.extractor = 'test_features'"
                )
            }
        features = conn.execute("SELECT test_id, customer_id FROM test_features").fetchall()
        bugs = conn.execute("SELECT raw_data, test_feature_id FROM bugs").fetchall()
    with_features = {t for t, _ in features}
    naming = [b for b in bugs if names_a_feature(b[0])]
    return {
        "tests_with_features": (sum(t in with_features for t in tests), len(tests)),
        "bugs_attributed": (sum(b[1] is not None for b in naming), len(naming)),
        "bugs_attributed_all": (sum(b[1] is not None for b in bugs), len(bugs)),
        "features_accounted": (sum(i in written or t in failed for t, i in listed), len(listed)),
        "features_with_customer": (sum(c is not None for _, c in features), len(features)),
    }


def numbers(results: Mapping[str, MetricResult]) -> dict[str, tuple[int, int]]:
    return {name: (m.numerator, m.denominator) for name, m in results.items()}


def test_coverage_metrics_on_a_handmade_database(tmp_path: Path) -> None:
    path = handmade(tmp_path / "cov.db")
    results = validate(path)
    expected = {
        "tests_with_features": (3, 4),
        "bugs_attributed": (2, 3),
        "bugs_attributed_all": (3, 8),
        "features_accounted": (3, 4),  # feature 99 of test 2 is missing
        "features_with_customer": (3, 4),
    }
    assert numbers(results) == expected == counted(path)
    assert all(m.validator == "coverage" for m in results.values())
    assert results["tests_with_features"].threshold == 0.95
    assert not results["tests_with_features"].passed
    assert results["bugs_attributed_all"].threshold is None
    assert results["bugs_attributed_all"].passed


def test_threshold_for_a_validator_applies_to_its_thresholded_metrics(tmp_path: Path) -> None:
    results = validate(handmade(tmp_path / "cov.db"), {"coverage": 0.5})
    assert {n: m.threshold for n, m in results.items()} == {
        "tests_with_features": 0.5,
        "bugs_attributed": 0.5,
        "bugs_attributed_all": None,
        "features_accounted": 0.5,
        "features_with_customer": 0.5,
    }
    assert all(m.passed for m in results.values())


def test_threshold_for_one_metric_overrides_the_validator_threshold(tmp_path: Path) -> None:
    thresholds = {"coverage": 0.5, "coverage.bugs_attributed": 0.7}
    results = validate(handmade(tmp_path / "cov.db"), thresholds)
    assert results["bugs_attributed"].threshold == 0.7
    assert not results["bugs_attributed"].passed
    assert results["tests_with_features"].passed


def test_unknown_threshold_name_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        validate(handmade(tmp_path / "cov.db"), {"coverage.nope": 0.5})
    assert "coverage.nope" in str(info.value)


def test_empty_tables_give_no_value_and_pass(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    results = validate(path)
    assert {n: (m.value, m.passed) for n, m in results.items()} == {
        "tests_with_features": (None, True),
        "bugs_attributed": (None, True),
        "bugs_attributed_all": (None, True),
        "features_accounted": (None, True),
        "features_with_customer": (None, True),
    }


def test_missing_table_is_schema_missing(tmp_path: Path) -> None:
    path = tmp_path / "partial.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE tests (id INTEGER PRIMARY KEY)")
    with pytest.raises(SchemaMissing) as info:
        validate(path)
    assert "test_features" in str(info.value)


def test_coverage_after_a_backfill_matches_independent_counts(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.db"
    synthetic.build(path, tests=40, messy=0.1, seed=7)
    report = RunReport(database=str(path))
    options = RunOptions(max_error_rate=1.0)
    names = ["test_features", "bug_attribution"]
    registry = make_registry(plugin)
    asyncio.run(run_backfill(registry, names, resolve_url(str(path)), options, report))
    assert report.validation is not None
    from_run: dict[str, Any] = {m.name: (m.numerator, m.denominator) for m in report.validation}
    expected = counted(path)
    assert from_run == expected == numbers(validate(path))
    assert expected["tests_with_features"][0] > 0
    assert expected["bugs_attributed"][0] > 0


# -- one scan for a numerator and its denominator ---------------------------------------------------

t = table("t", column("a"), column("b"))
u = table("u", column("a"))


def _count(source: Any, *where: Any) -> Any:
    return select(func.count()).select_from(source).where(*where)


def test_every_coverage_metric_but_an_in_subquery_is_one_query_giving_the_same_counts(
    tmp_path: Path,
) -> None:
    path = handmade(tmp_path / "cov.db")

    async def go() -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
        async with Database(resolve_url(str(path))) as db, db.sqlalchemy() as conn:
            together, apart = {}, {}
            for m in CoverageValidator().metrics():
                queries = metric_queries(m, db.sa_dialect)
                if m.name == "tests_with_features":  # IN (SELECT ...): a semi-join on its own
                    assert fused(m, db.sa_dialect) is None
                    assert queries == [m.numerator, m.denominator]
                    together[m.name] = tuple([(await conn.execute(q)).scalar_one() for q in queries])
                else:
                    (both,) = queries
                    together[m.name] = tuple((await conn.execute(both)).one())
                apart[m.name] = tuple(
                    [(await conn.execute(q)).scalar_one() for q in (m.numerator, m.denominator)]
                )
            return together, apart

    together, apart = asyncio.run(go())
    assert together == apart == counted(path)


@pytest.mark.parametrize(
    ("numerator", "denominator"),
    [
        (_count(t, t.c.a > 1), _count(u, u.c.a > 1)),  # another table
        (_count(t, t.c.b == 2), _count(t, t.c.a > 1)),  # not the denominator's rows
        (_count(t, t.c.b == 2, t.c.a > 1), _count(t, t.c.a > 1)),  # its conditions in another order
        (select(func.sum(t.c.a)).select_from(t).where(t.c.a > 1, t.c.b == 2), _count(t, t.c.a > 1)),
        (_count(t, t.c.a > 1, t.c.b == 2), _count(t, t.c.a > 1).group_by(t.c.b)),
        (_count(t, t.c.a > 1, t.c.b == 2), _count(t, t.c.a > 1).limit(1)),
        (_count(t).distinct(), _count(t).distinct()),
        (_count(t, t.c.a > 1, t.c.b.in_(select(u.c.a))), _count(t, t.c.a > 1)),
        (_count(t, t.c.a > 1, t.c.b.not_in(select(u.c.a))), _count(t, t.c.a > 1)),
    ],
    ids=["other-table", "not-a-subset", "reordered", "sum", "group-by", "limit", "distinct", "in", "not-in"],
)
def test_queries_of_other_shapes_are_not_fused(numerator: Any, denominator: Any) -> None:
    metric = Metric("m", "d", numerator, denominator)
    assert fused(metric, sqlite_dialect()) is None


def test_an_exists_among_the_extra_conditions_is_fused() -> None:
    exists = select(u.c.a).where(u.c.a == t.c.b).exists()
    metric = Metric("m", "d", _count(t, t.c.a > 1, exists), _count(t, t.c.a > 1))
    assert fused(metric, sqlite_dialect()) is not None


def test_a_numerator_with_no_extra_condition_counts_the_same_rows() -> None:
    metric = Metric("m", "d", _count(t, t.c.a > 1), _count(t, t.c.a > 1))
    both = fused(metric, sqlite_dialect())
    assert both is not None
    assert str(both.compile(dialect=sqlite_dialect())).startswith("SELECT count(*) AS count_1, count(*)")
