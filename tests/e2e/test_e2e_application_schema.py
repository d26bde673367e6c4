"""The built-in job on the application's own schema (testio-mcp 0.4.0, tests/data) writes what
the application writes, edge case by edge case.

The expected rows come from ``_application_row``, a transcription of the application's
``TestRepository._upsert_test_feature``, with one deliberate difference the docs state: a
feature whose ``feature_id`` is not in ``features`` is refused (an ``integrity`` error) rather
than written as a dangling reference. The application keeps its cache in SQLite only (FTS5,
SQLite upserts), so this test has no PostgreSQL twin; the built-in job's rules on PostgreSQL
are shown by tests/postgres with the same extractor.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from support.cli import run_cli

SCHEMA = Path(__file__).parent.parent / "data" / "testio_mcp_0_4_0.sql"
CUSTOMER = 7
KNOWN_FEATURES = range(1, 21)
NOW = "2026-12-01 10:00:00"


def _f(fid: Any, feature_id: Any, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": fid, "title": f"Feature {fid}", "description": "d", "howtofind": "h"}
    if feature_id != "missing":
        out["feature_id"] = feature_id
    out.update(user_stories=["A", "B"], enable_default=True, enable_content=False, enable_visual=False)
    out.update(more)
    return out


TESTS: dict[int, Any] = {
    1: {"features": [_f(101, 1), _f(102, 2), _f(103, 3)]},
    # without feature_id (missing, null, 0): skipped, the others written
    2: {"features": [_f(201, "missing"), _f(202, None), _f(203, 0), _f(204, 4), _f(205, 5)]},
    # without id: skipped
    3: {"features": [_f(None, 6), _f(0, 6), _f(303, 6)]},
    # an unknown feature: refused alone, the test's other features written
    4: {"features": [_f(401, 999), _f(402, 7), _f(403, 8)]},
    # enable_* null or missing: False (also over an existing True)
    5: {"features": [_f(501, 9, enable_visual=None, enable_default=None), {"id": 502, "feature_id": 10}]},
    # user_stories: the application's json.dumps text
    6: {"features": [_f(601, 11, user_stories=["„Warenkorb“", "Zahlung"]), _f(602, 12, user_stories=None)]},
    7: "{not json",
    8: {"title": "no features"},
}
BUGS = {
    1: {"test_feature": {"id": 101}},  # attributed
    2: {"test_feature": {"id": 401}},  # its feature was refused: integrity
    3: {"test_feature": {"id": 202}},  # its feature was skipped: integrity
    4: {"title": "no feature"},  # NULL
    5: {"test_feature": {"id": 601}},
}


def _application_row(test_id: int, feature: dict[str, Any]) -> tuple[Any, ...] | None:
    """What ``_upsert_test_feature`` stores for one listed feature (None: nothing)."""
    if not feature.get("id") or not feature.get("feature_id"):
        return None
    if feature["feature_id"] not in KNOWN_FEATURES:
        return None  # the deliberate difference: never a dangling feature_id
    return (
        feature["id"],
        CUSTOMER,
        test_id,
        feature["feature_id"],
        feature.get("title", ""),
        feature.get("description"),
        feature.get("howtofind"),
        json.dumps(feature.get("user_stories") or []),
        int(bool(feature.get("enable_default") or False)),
        int(bool(feature.get("enable_content") or False)),
        int(bool(feature.get("enable_visual") or False)),
    )


def _expected() -> list[tuple[Any, ...]]:
    rows = []
    for test_id, data in TESTS.items():
        for feature in data.get("features", []) if isinstance(data, dict) else []:
            row = _application_row(test_id, feature)
            if row:
                rows.append(row)
    return sorted(rows)


def _cache(path: Path) -> Path:
    """A cache as the application creates it: its schema, WAL, foreign keys off."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA.read_text())
    with conn:
        conn.execute(
            "INSERT INTO products (id, customer_id, title, data, last_synced) VALUES (1, ?, 'Shop', '{}', ?)",
            (CUSTOMER, NOW),
        )
        conn.executemany(
            "INSERT INTO features (id, product_id, title, user_stories, section_ids, raw_data, last_synced) "
            "VALUES (?, 1, ?, '[]', '[]', '{}', ?)",
            [(i, f"Feature {i}", NOW) for i in KNOWN_FEATURES],
        )
        conn.executemany(
            "INSERT INTO tests (id, customer_id, product_id, data, status) VALUES (?, ?, 1, ?, 'archived')",
            [(t, CUSTOMER, d if isinstance(d, str) else json.dumps(d)) for t, d in TESTS.items()],
        )
        conn.executemany(
            "INSERT INTO bugs (id, customer_id, test_id, title, raw_data) VALUES (?, ?, 1, 'bug', ?)",
            [(b, CUSTOMER, json.dumps(raw)) for b, raw in BUGS.items()],
        )
        # Written earlier by the application with enable_visual True; the test now says null.
        conn.execute(
            "INSERT INTO test_features (id, customer_id, test_id, feature_id, title, user_stories, "
            "enable_default, enable_content, enable_visual) VALUES (501, ?, 5, 9, 'old', '[]', 0, 0, 1)",
            (CUSTOMER,),
        )
    conn.close()
    return path


def _query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _counts(out: str) -> dict[str, tuple[Any, ...]]:
    return {
        x["extractor"]: (
            x["processed"],
            x["inserted"],
            x["updated"],
            x["unchanged"],
            x["errors_by_tier"],
            x["skipped"],
        )
        for x in json.loads(out)["extractors"]
    }


# A handful of rows, each an edge case: the shares of tests with features and of attributed bugs
# are low by design, so only the metric under test keeps its threshold.
LENIENT = ["--threshold", "coverage.tests_with_features=0", "--threshold", "coverage.bugs_attributed=0"]
JOB = ["run", "test_features", "bug_attribution", "--json", "-q", "--max-error-rate", "0.5", *LENIENT]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return _cache(tmp_path / "cache.db")


def test_the_built_in_job_writes_what_the_application_writes(cache: Path) -> None:
    assert _query(cache, "PRAGMA foreign_key_check") == []
    dry = run_cli([*JOB, "-d", cache, "--dry-run"])
    real = run_cli([*JOB, "-d", cache])
    assert dry.returncode == 0, dry.stderr
    assert real.returncode == 0, real.stderr
    assert _counts(dry.stdout) == _counts(real.stdout)

    assert _query(cache, "SELECT * FROM test_features ORDER BY id") == _expected()
    assert _query(cache, "PRAGMA foreign_key_check") == [], "the run wrote a dangling reference"
    report = {x["extractor"]: x for x in json.loads(real.stdout)["extractors"]}
    tf = report["test_features"]
    assert tf["skipped"] == {"no-feature-id": 3, "no-id": 2}, tf
    assert tf["errors_by_tier"] == {"record": {"integrity": 1, "invalid-json": 1}}, tf
    errors = {e["key"]: e["message"] for e in json.loads(real.stdout)["errors_first"]}
    assert "features.id=999 does not exist" in errors[4], errors

    bugs = dict(_query(cache, "SELECT id, test_feature_id FROM bugs"))
    assert bugs == {1: 101, 2: None, 3: None, 4: None, 5: 601}
    assert report["bug_attribution"]["errors_by_tier"] == {"record": {"integrity": 2}}

    (features_accounted,) = [
        m for m in json.loads(real.stdout)["validation"] if m["metric"] == "features_accounted"
    ]
    assert features_accounted["passed"] and features_accounted["value"] == 1.0, features_accounted


def test_a_second_run_after_the_application_rewrites_its_rows_changes_nothing(cache: Path) -> None:
    assert run_cli([*JOB, "-d", cache]).returncode == 0
    # The application re-syncs every test: each row rewritten its way.
    conn = sqlite3.connect(cache)
    with conn:
        conn.executemany(
            "UPDATE test_features SET customer_id = ?, test_id = ?, feature_id = ?, title = ?, "
            "description = ?, howtofind = ?, user_stories = ?, enable_default = ?, enable_content = ?, "
            "enable_visual = ? WHERE id = ?",
            [(*row[1:], row[0]) for row in _expected()],
        )
    conn.close()
    again = run_cli([*JOB, "-d", cache, "--restart"])
    assert again.returncode == 0, again.stderr
    for name, (_, inserted, updated, *_rest) in _counts(again.stdout).items():
        assert (inserted, updated) == (0, 0), (name, again.stdout)


def test_validation_sees_a_feature_that_went_missing(cache: Path) -> None:
    assert run_cli([*JOB, "-d", cache]).returncode == 0
    conn = sqlite3.connect(cache)
    with conn:
        conn.execute("UPDATE bugs SET test_feature_id = NULL WHERE test_feature_id = 102")
        conn.execute("DELETE FROM test_features WHERE id = 102")
    conn.close()
    checked = run_cli(["validate", "-d", cache, "--json", *LENIENT])
    assert checked.returncode == 1, checked.stdout + checked.stderr
    (m,) = [m for m in json.loads(checked.stdout)["validation"] if m["metric"] == "features_accounted"]
    assert not m["passed"] and m["denominator"] - m["numerator"] == 1, m
