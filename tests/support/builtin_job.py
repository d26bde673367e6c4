"""The built-in job's synthetic SQLite databases: built, copied, run once; their tables read
back (from a SQLite file or either kind of ``Backend``); and ``Expected``, what a correct run must
make of them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from backfill_plugins.testmanagement import synthetic
from support.cli import run_cli
from support.db import Where, query, table_rows
from support.once import made_once


def build_db(path: Path, tests: int, seed: int = 1) -> Path:
    """A new synthetic database of ``tests`` tests (about four bugs each) at ``path``."""
    synthetic.build(path, tests, seed=seed)
    return path


def build_template(path: Path, tests: int) -> Path:
    """A new synthetic database that no test may write to: copy it with ``writable_copy``."""
    build_db(path, tests)
    path.chmod(0o444)
    return path


def shared_template(factory: pytest.TempPathFactory, tests: int) -> Path:
    """The synthetic database of ``tests`` tests that no test may write to, built once per test run
    (``made_once``): copy it with ``writable_copy``."""
    return made_once(factory, f"synthetic-{tests}.db", lambda path: build_template(path, tests))


def writable_copy(template: Path, path: Path) -> Path:
    """A private, writable copy of ``template`` at ``path``."""
    shutil.copy(template, path)
    path.chmod(0o644)
    return path


def after_run(template: Path, path: Path, args: Sequence[object]) -> Path:
    """A read-only copy of ``template`` at ``path`` after ``backfill ARGS`` (which names ``path``)
    succeeded on it."""
    writable_copy(template, path)
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr
    path.chmod(0o444)
    return path


DATA_TABLES = ("tests", "test_features", "bugs")
"""The application's tables: what a backfill may change (backfill's own bookkeeping aside)."""


def snapshot(path: Where, tables: tuple[str, ...] = DATA_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Full contents of the application's tables."""
    return {name: table_rows(path, name) for name in tables}


def features(path: Where, up_to_test: int | None = None) -> list[tuple[Any, ...]]:
    """All columns of test_features, by id (only the features of tests <= ``up_to_test``)."""
    if up_to_test is None:
        return query(path, "SELECT * FROM test_features ORDER BY id")
    return query(path, "SELECT * FROM test_features WHERE test_id <= ? ORDER BY id", (up_to_test,))


def features_by_test(path: Where) -> dict[int, set[int]]:
    """test_id -> the ids of its rows in test_features."""
    out: dict[int, set[int]] = {}
    for test_id, feature_id in query(path, "SELECT test_id, id FROM test_features"):
        out.setdefault(test_id, set()).add(feature_id)
    return out


def attribution_column(path: Where) -> list[tuple[int, int | None]]:
    """(id, test_feature_id) of every bug, by id."""
    return [(r[0], r[1]) for r in query(path, "SELECT id, test_feature_id FROM bugs ORDER BY id")]


def attributions(path: Where) -> dict[int, int]:
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

    def __init__(self, path: Where) -> None:
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
