"""How complete the test-management backfills are, over the whole database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, FromClause, Select, TableClause, column, func, select, table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from backfill_core import Metric, Validator
from backfill_core.sql import json_value, safe_jsonb

tests = table("tests", column("id"))
features = table("test_features", column("id"), column("test_id"), column("customer_id"))
bugs = table("bugs", column("id"), column("raw_data"), column("test_feature_id"))


def _count(t: FromClause, *where: ColumnElement[Any]) -> Select[Any]:
    return select(func.count()).select_from(t).where(*where)


class _Listed(TableClause):
    """The features ``tests.data`` lists with an ``id`` and a ``feature_id`` (those the
    application writes), one row each: ``test_id`` and the feature's ``id``, as SQLite's CAST
    to INTEGER makes it of any JSON value."""

    inherit_cache = True


listed = _Listed("listed_features", column("test_id"), column("id"))


class _Accounted(ColumnElement[bool]):
    """A listed feature is written, or its test has an error recorded by a ``test_features``
    run (a successful retry clears it); recorded errors count only where the ledger exists,
    as the ``backfill_ledger`` execution option says (before any run nothing was recorded).

    Each is an EXISTS that looks one row up by an index (test_features' primary key, the
    ledger's run and key), so the check costs the same per feature at any size: an
    ``IN (SELECT ...)`` here, in an OR, would be a subquery PostgreSQL scans in full for every
    feature once its hash table outgrows work_mem."""

    type = Boolean()
    inherit_cache = False  # it compiles by the execution option


_SQLITE_LISTED = """(SELECT t.id AS test_id, CAST(json_extract(f.value, '$.id') AS INTEGER) AS id
  FROM tests AS t, json_each(
    CASE WHEN json_valid(t.data) AND json_type(t.data, '$.features') = 'array'
    THEN json_extract(t.data, '$.features') ELSE '[]' END) AS f
  WHERE f.type = 'object'
  AND coalesce(json_extract(f.value, '$.id'), 0) NOT IN (0, '')
  AND coalesce(json_extract(f.value, '$.feature_id'), 0) NOT IN (0, '')) AS listed_features"""
# PostgreSQL gives each listed feature's id and its truth as SQLite's CAST(... AS INTEGER) and
# NOT IN (0, '') do for every JSON type: numbers truncated, true 1, false 0, text by its leading
# integer (after whitespace; none is 0), arrays and objects 0, all within 64 bits (a bigint, which
# test_features' integer key is looked up by); and no cast that could fail.
_POSTGRES_INTEGER = r"""least(greatest(CASE jsonb_typeof({v}) WHEN 'number' THEN trunc(({v})::numeric)
    WHEN 'boolean' THEN CASE WHEN ({v})::boolean THEN 1 ELSE 0 END
    WHEN 'string' THEN coalesce(substring({v} #>> '{{}}' FROM '^[ \t\n\f\v\r]*([+-]?[0-9]+)')::numeric, 0)
    ELSE 0 END, -9223372036854775808), 9223372036854775807)::bigint"""
_POSTGRES_TRUE = """CASE jsonb_typeof({v}) WHEN 'number' THEN ({v})::numeric <> 0
    WHEN 'boolean' THEN ({v})::boolean WHEN 'string' THEN {v} #>> '{{}}' <> ''
    WHEN 'null' THEN false ELSE {v} IS NOT NULL END"""
# strict: the elements of "features" when it is an array, else (silently) none.
_POSTGRES_LISTED = """(SELECT t.id AS test_id, {id} AS id
  FROM tests AS t
  CROSS JOIN LATERAL jsonb_path_query({data}, 'strict $.features[*]', '{{}}', true) AS f(value)
  WHERE jsonb_typeof(f.value) = 'object'
  AND {id_true}
  AND {feature_id_true}) AS listed_features"""
_WRITTEN = "EXISTS (SELECT 1 FROM test_features WHERE test_features.id = listed_features.id)"
_FAILED = """ OR EXISTS (SELECT 1 FROM backfill_runs AS r JOIN backfill_errors AS e ON e.run_id = r.id
    WHERE r.extractor = 'test_features' AND e.key = CAST(listed_features.test_id AS TEXT))"""
"""The ledger stores keys as JSON (encode_key): an integer key is its decimal text."""


@compiles(_Listed, "sqlite")
def _listed_sqlite(element: _Listed, compiler: SQLCompiler, **kw: Any) -> str:
    return _SQLITE_LISTED


@compiles(_Listed, "postgresql")
def _listed_postgresql(element: _Listed, compiler: SQLCompiler, **kw: Any) -> str:
    return _POSTGRES_LISTED.format(
        id=_POSTGRES_INTEGER.format(v="(f.value -> 'id')"),
        data=safe_jsonb(compiler, "t.data"),
        id_true=_POSTGRES_TRUE.format(v="(f.value -> 'id')"),
        feature_id_true=_POSTGRES_TRUE.format(v="(f.value -> 'feature_id')"),
    )


@compiles(_Accounted)
def _accounted(element: _Accounted, compiler: SQLCompiler, **kw: Any) -> str:
    failed = _FAILED if compiler.execution_options.get("backfill_ledger", False) else ""
    return f"({_WRITTEN}{failed})"


class CoverageValidator(Validator):
    """Shares of tests with features, of bugs attributed, of features with a customer, and
    whether every listed feature is accounted for."""

    name = "coverage"
    description = "coverage of test_features and bug attribution"
    covers = ("test_features", "bug_attribution")
    tables = {
        "tests": ("id",),
        "test_features": ("id", "test_id", "customer_id"),
        "bugs": ("id", "raw_data", "test_feature_id"),
    }
    """``features_accounted`` also reads the ledger (backfill_runs, backfill_errors) once a run
    has created it."""

    def __init__(self, threshold: float = 0.95) -> None:
        self.threshold = threshold

    def metrics(self) -> list[Metric]:
        # IN (subquery), not a correlated EXISTS: without an index on test_features.test_id the
        # latter scans test_features once per test. The engine runs it as a semi-join.
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
                "features_accounted",
                "listed features with id and feature_id that are written or whose test's error "
                "is recorded (none may be missing)",
                _count(listed, _Accounted()),
                _count(listed),
                1.0,
                "test_features",
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
