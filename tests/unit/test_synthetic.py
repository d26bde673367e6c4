"""The synthetic generator builds the application's real tables, filled the way it fills them."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from backfill_plugins.testmanagement import synthetic

TESTS = 1500
MIRRORED = ("products", "features", "tests", "test_features", "bugs", "users")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synthetic.Counts]:
    path = tmp_path_factory.mktemp("synthetic") / "cache.db"
    counts = synthetic.build(path, tests=TESTS, seed=11)
    path.chmod(0o444)
    return path, counts


@pytest.fixture(scope="module")
def conn(built: tuple[Path, synthetic.Counts]) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{built[0]}?mode=ro", uri=True)
    yield conn
    conn.close()


def _schema(conn: sqlite3.Connection) -> set[tuple[str, str, str]]:
    return set(
        conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN (?, ?, ?, ?, ?, ?)", MIRRORED
        )
    )


def test_the_tables_are_the_models(conn: sqlite3.Connection, tmp_path: Path) -> None:
    """The same CREATE TABLE and CREATE INDEX statements as the models' (which
    test_testmanagement_schema.py holds to the application's Alembic schema)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    SQLModel.metadata.create_all(engine, tables=[SQLModel.metadata.tables[t] for t in MIRRORED])
    engine.dispose()
    with sqlite3.connect(tmp_path / "models.db") as models:
        expected = _schema(models)
    assert _schema(conn) == expected
    assert len(expected) > len(MIRRORED)  # the indexes too


def test_the_file_is_opened_as_the_tests_need(
    conn: sqlite3.Connection, built: tuple[Path, synthetic.Counts], tmp_path: Path
) -> None:
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert synthetic.is_demo_database(built[0])
    wal = tmp_path / "wal.db"
    synthetic.build(wal, tests=5, wal=True)
    with sqlite3.connect(wal) as c:
        assert c.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_the_same_seed_gives_the_same_file(built: tuple[Path, synthetic.Counts], tmp_path: Path) -> None:
    again = tmp_path / "again.db"
    assert synthetic.build(again, tests=TESTS, seed=11) == built[1]
    digest = hashlib.sha256(again.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(built[0].read_bytes()).hexdigest()
    other = tmp_path / "other.db"
    synthetic.build(other, tests=TESTS, seed=12)
    assert hashlib.sha256(other.read_bytes()).hexdigest() != digest


def _documents(conn: sqlite3.Connection, sql: str) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Rows of ``sql`` (JSON text last) with their parsed JSON; malformed JSON is left out."""
    for *row, text in conn.execute(sql):
        try:
            yield tuple(row), json.loads(text)
        except ValueError:
            continue


def test_json_is_stored_as_the_application_stores_it(conn: sqlite3.Connection) -> None:
    """``json.dumps`` with its defaults: ASCII only, ", " and ": " between items."""
    checked = 0
    for sql in (
        "SELECT data FROM tests",
        "SELECT raw_data FROM bugs",
        "SELECT raw_data FROM features",
        "SELECT data FROM products",
        "SELECT user_stories FROM features",
    ):
        for (text,) in conn.execute(sql):
            try:
                doc = json.loads(text)
            except ValueError:
                continue  # a deliberately truncated document
            assert text == json.dumps(doc), text[:200]
            checked += 1
    assert checked > TESTS * 5
    assert conn.execute(r"SELECT count(*) FROM tests WHERE data LIKE '%\u201eWarenkorb\u201c%'").fetchone()[0]


def _kind(feature: dict[str, Any], cached: set[int]) -> str | None:
    """Which of the application's edge cases a listed feature is, if any."""
    if "id" not in feature:
        return "no-id"
    if feature["id"] is None:
        return "null-id"
    if "feature_id" not in feature:
        return "no-feature-id"
    if feature["feature_id"] is None:
        return "null-feature-id"
    if feature["feature_id"] == 0:
        return "zero-feature-id"
    if feature["feature_id"] not in cached:
        return "uncached-feature"
    return None


def test_listed_features_hold_the_edge_cases_the_application_meets(
    conn: sqlite3.Connection, built: tuple[Path, synthetic.Counts]
) -> None:
    counts = built[1]
    cached = dict(conn.execute("SELECT id, product_id FROM features"))
    owner = dict(conn.execute("SELECT id, customer_id FROM products"))
    kinds: Counter[str] = Counter()
    listed = 0
    for (test_id, customer, product), doc in _documents(
        conn, "SELECT id, customer_id, product_id, data FROM tests"
    ):
        if (
            not isinstance(doc, dict)
            or doc["features"] == "not a list"
            or doc["features"][0].get("id") == "abc"
        ):
            continue  # deliberately messy
        assert doc["id"] == test_id and doc["product"]["id"] == product and owner[product] == customer
        for feature in doc["features"]:
            listed += 1
            kind = _kind(feature, set(cached))
            if kind is None:
                assert cached[feature["feature_id"]] == product, "a test lists another product's feature"
            kinds[kind or "plain"] += 1
            kinds["flag null"] += feature.get("enable_visual", False) is None
            kinds["flag missing"] += "enable_visual" not in feature
            kinds["stories null"] += feature.get("user_stories", []) is None
            kinds["stories missing"] += "user_stories" not in feature
            kinds["no title"] += "title" not in feature
            kinds["non-ASCII stories"] += any(not s.isascii() for s in feature.get("user_stories") or [])
    assert listed == counts.listed_features
    assert listed - kinds["plain"] == counts.odd_features
    assert set(kinds) >= set(synthetic.ODD_KINDS) | {"plain", "flag null", "flag missing", "stories null"}
    assert {"stories missing", "no title", "non-ASCII stories"} <= set(kinds)
    assert 0.005 < counts.odd_features / listed < 0.02, kinds


def test_deliberately_messy_rows_are_still_there(
    conn: sqlite3.Connection, built: tuple[Path, synthetic.Counts]
) -> None:
    counts = built[1]
    assert counts.messy_tests > 0 and counts.messy_bugs > 0
    assert conn.execute("SELECT count(*) FROM tests WHERE NOT json_valid(data)").fetchone()[0] > 0
    assert conn.execute("SELECT count(*) FROM tests WHERE data = 'null'").fetchone()[0] > 0
    assert conn.execute("SELECT count(*) FROM bugs WHERE NOT json_valid(raw_data)").fetchone()[0] > 0
    named = "json_extract(CASE WHEN json_valid(raw_data) THEN raw_data END, '$.test_feature.id')"
    assert conn.execute(f"SELECT count(*) FROM bugs WHERE {named} >= 10000000").fetchone()[0] > 0


def test_every_table_backfill_reads_is_filled(
    conn: sqlite3.Connection, built: tuple[Path, synthetic.Counts]
) -> None:
    counts = built[1]
    rows = {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("products", "features", "tests", "bugs", "test_features")
    }
    assert rows == {
        "products": counts.products,
        "features": counts.features,
        "tests": TESTS,
        "bugs": counts.bugs,
        "test_features": 0,
    }
    assert counts.products > 0 and counts.features > counts.products
    assert conn.execute("SELECT count(*) FROM bugs WHERE test_feature_id IS NOT NULL").fetchone()[0] == 0
    # the columns the application derives from the JSON agree with it
    for (title, severity, known), raw in _documents(
        conn, "SELECT title, severity, known, raw_data FROM bugs"
    ):
        assert (title, severity, bool(known)) == (raw["title"], raw["severity"], raw["known"])


def test_a_small_database_gets_its_share_of_every_kind(tmp_path: Path) -> None:
    """Odd features and messy rows are dealt out evenly, their kinds in turn: 150 tests at 3%
    messy hold 4 or 5 messy tests, one of each kind at least."""
    path = tmp_path / "small.db"
    counts = synthetic.build(path, tests=150, messy=0.03, odd=0.02, seed=4)
    assert counts.messy_tests in (4, 5)
    assert int(counts.bugs * 0.03) <= counts.messy_bugs <= int(counts.bugs * 0.03) + 1
    assert int(counts.listed_features * 0.02) - 1 <= counts.odd_features
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        cached = {r[0] for r in conn.execute("SELECT id FROM features")}
        kinds: Counter[str] = Counter()
        for (text,) in conn.execute("SELECT data FROM tests"):
            try:
                doc = json.loads(text)
            except ValueError:
                kinds["truncated"] += 1
                continue
            if doc is None:
                kinds["null"] += 1
            elif doc["features"] == "not a list":
                kinds["not-a-list"] += 1
            elif doc["features"][0].get("id") == "abc":
                kinds["non-integer-id"] += 1
            else:
                kinds.update(k for f in doc["features"] if (k := _kind(f, cached)) is not None)
    assert set(kinds) == set(synthetic.MESSY_TESTS) | set(synthetic.ODD_KINDS)
