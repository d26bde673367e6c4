"""Helpers for the end-to-end tests: run the real ``backfill`` script, read SQLite files.

Imported by ``conftest.py`` and the test modules (this directory is on ``sys.path``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cli_support
from backfill_plugins.testmanagement import synthetic
from cli_support import (
    BACKFILL as BACKFILL,  # re-exported for the test modules
    Env,
    make_env as make_env,
)

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    args: list[str], env: Env | None = None, *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``backfill ARGS`` as a real subprocess and capture its output."""
    return cli_support.run_cli(args, env, timeout=timeout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection: the tests' own reads must never change the file."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = connect_ro(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def scalar(path: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return query(path, sql, params)[0][0]


def table_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table``, in primary-key order: the table's full contents."""
    return query(path, f"SELECT * FROM {table} ORDER BY rowid")


DATA_TABLES = ("tests", "test_features", "bugs")
"""The application's tables: what a backfill may change (backfill's own bookkeeping aside)."""


def snapshot(path: Path, tables: tuple[str, ...] = DATA_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Full contents of the application's tables."""
    return {name: table_rows(path, name) for name in tables}


def parse_json_output(proc: subprocess.CompletedProcess[str]) -> Any:
    """stdout must be exactly one JSON document."""
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:  # pragma: no cover - a failure message, not a branch
        raise AssertionError(f"stdout is not one JSON document ({e}):\n{proc.stdout}\n{proc.stderr}") from e


def stats_by_name(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["extractor"]: s for s in report["extractors"]}


def build_db(path: Path, tests: int, seed: int = 1) -> Path:
    synthetic.build(path, tests, seed=seed)
    return path


def plugin_env(site: Path, overrides: Env | None = None) -> dict[str, str | None]:
    """Overrides that make the fixture plugin packages installed in ``site`` visible."""
    existing = os.environ.get("PYTHONPATH")
    path = str(site) if not existing else os.pathsep.join([str(site), existing])
    return {"PYTHONPATH": path, **(overrides or {})}


def drop_column(path: Path, table: str, column: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.commit()
    finally:
        conn.close()


def features_by_test(path: Path) -> dict[int, set[int]]:
    """test_id -> the ids of its rows in test_features."""
    out: dict[int, set[int]] = {}
    for test_id, feature_id in query(path, "SELECT test_id, id FROM test_features"):
        out.setdefault(test_id, set()).add(feature_id)
    return out


def attributions(path: Path) -> dict[int, int]:
    """bug id -> test_feature_id, for the bugs that have one."""
    return dict(query(path, "SELECT id, test_feature_id FROM bugs WHERE test_feature_id IS NOT NULL"))


class Expected:
    """What a correct run must produce, worked out independently from the raw JSON.

    The synthetic generator's messy rows come in known shapes: truncated JSON (invalid-json),
    ``features`` that is not a list (invalid-shape), a feature id that is not an integer
    (invalid-type), the JSON ``null`` (no features, no error); bugs with truncated JSON
    (invalid-json) or naming a feature that does not exist or belongs to another customer
    (integrity). Its odd features follow the application's rules: one without ``id`` or
    ``feature_id`` is skipped, one whose ``feature_id`` is not in ``features`` is refused alone
    (its test's integrity error, the test's other features written). Any other shape fails the
    test, so the oracle never guesses.
    """

    def __init__(self, path: Path) -> None:
        self.features: dict[int, set[int]] = {}
        """test_id -> feature ids, for tests that have features."""
        self.test_errors: dict[int, str] = {}
        self.attribution: dict[int, int] = {}
        """bug id -> test_feature_id, for bugs that must be attributed."""
        self.bug_errors: dict[int, str] = {}
        self.tests = 0
        self.bugs = 0
        owner: dict[int, int] = {}
        self.skipped: dict[str, int] = {}
        known = {i for (i,) in query(path, "SELECT id FROM features")}
        for test_id, customer, data in query(path, "SELECT id, customer_id, data FROM tests"):
            self.tests += 1
            try:
                doc = json.loads(data)
            except ValueError:
                self.test_errors[test_id] = "invalid-json"
                continue
            if doc is None:
                continue
            features = doc["features"]
            if not isinstance(features, list):
                self.test_errors[test_id] = "invalid-shape"
                continue
            listed = []
            skips = []
            for f in features:
                if not f.get("id") or not f.get("feature_id"):
                    skips.append("no-id" if not f.get("id") else "no-feature-id")
                else:
                    listed.append(f)
            if any(not isinstance(f["id"], int) or f.get("title", "") is None for f in listed):
                self.test_errors[test_id] = "invalid-type"  # a failed test skips nothing
                continue
            for kind in skips:
                self.skipped[kind] = self.skipped.get(kind, 0) + 1
            written = {f["id"] for f in listed if f["feature_id"] in known}
            if len(written) < len(listed):
                self.test_errors[test_id] = "integrity"
            if written:
                self.features[test_id] = written
            owner.update((i, customer) for i in written)
        for bug_id, customer, raw in query(path, "SELECT id, customer_id, raw_data FROM bugs"):
            self.bugs += 1
            try:
                doc = json.loads(raw)
            except ValueError:
                self.bug_errors[bug_id] = "invalid-json"
                continue
            named = doc["test_feature"]
            if named is None:
                continue
            if owner.get(named["id"]) != customer:
                self.bug_errors[bug_id] = "integrity"
                continue
            self.attribution[bug_id] = named["id"]

    @property
    def feature_rows(self) -> int:
        return sum(len(ids) for ids in self.features.values())

    def error_kinds(self, extractor: str) -> dict[str, int]:
        errors = self.test_errors if extractor == "test_features" else self.bug_errors
        counts: dict[str, int] = {}
        for kind in errors.values():
            counts[kind] = counts.get(kind, 0) + 1
        return counts
