"""Upserts and updates addressed by composite keys, through the real engine, on SQLite and on
PostgreSQL: the rows written, the counts of a first run, a re-run, a dry run and a run after
rows changed, with keys of text and integer columns whose values look alike across columns.

PostgreSQL looks composite keys up with one array per key column (statements.py), SQLite with a
list of row values; both must find exactly the rows addressed. The PostgreSQL half runs in a
scratch database on the server named by BACKFILL_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from backfill_core import (
    Extractor,
    RunOptions,
    RunReport,
    Update,
    Upsert,
    hookimpl,
    make_registry,
    resolve_url,
    run_backfill,
)
from backfill_core.engine.stats import ErrorLog
from support.postgres import empty_database, execute, fetch, needs_server

SCHEMA = [
    "CREATE TABLE source (id INTEGER PRIMARY KEY, tag TEXT NOT NULL)",
    "CREATE TABLE pairs (a INTEGER NOT NULL, b TEXT NOT NULL, v TEXT, PRIMARY KEY (a, b))",
    "CREATE TABLE swaps (x INTEGER NOT NULL, y INTEGER NOT NULL, v TEXT, PRIMARY KEY (x, y))",
    "CREATE TABLE words (p TEXT NOT NULL, q TEXT NOT NULL, n INTEGER, PRIMARY KEY (p, q))",
    "CREATE TABLE totals (a INTEGER NOT NULL, b TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (a, b))",
]
SOURCES = 60
BATCH = 7
CHANGES_PER_ROW = 7
"""Six upserts (two rows in each of pairs, swaps and words) and one update (totals)."""


class Keyed(Extractor):
    """For source row ``i``: rows keyed (i, "i+1") and (i+1, "i") in pairs, (i, i+1000) and
    (i+1000, i) in swaps, ("wi", "iw") and ("iw", "wi") in words, and totals (i, "i") updated."""

    name = "keyed"
    source = "source"
    columns = ("id", "tag")
    writes = {
        "pairs": ("a", "b", "v"),
        "swaps": ("x", "y", "v"),
        "words": ("p", "q", "n"),
        "totals": ("a", "b", "n"),
    }

    def extract(self, row: Any) -> list[Upsert | Update]:
        i, tag = row["id"], row["tag"]
        return [
            Upsert("pairs", {"a": i, "b": str(i + 1)}, {"v": f"{tag}+"}),
            Upsert("pairs", {"b": str(i), "a": i + 1}, {"v": f"{tag}-"}),
            Upsert("swaps", {"x": i, "y": i + 1000}, {"v": tag}),
            Upsert("swaps", {"x": i + 1000, "y": i}, {"v": tag.upper()}),
            Upsert("words", {"p": f"w{i}", "q": f"{i}w"}, {"n": i}),
            Upsert("words", {"p": f"{i}w", "q": f"w{i}"}, {"n": -i}),
            Update("totals", {"a": i, "b": str(i)}, {"n": len(tag) * i}),
        ]


class Plugin:
    @hookimpl
    def register_extractors(self, register: Callable[[Extractor], None]) -> None:
        register(Keyed())


def expected(tags: dict[int, str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows after a run over source rows with ``tags``, sorted."""
    pairs: list[tuple[Any, ...]] = []
    swaps: list[tuple[Any, ...]] = []
    words: list[tuple[Any, ...]] = []
    totals: list[tuple[Any, ...]] = []
    for i, tag in tags.items():
        pairs += [(i, str(i + 1), f"{tag}+"), (i + 1, str(i), f"{tag}-")]
        swaps += [(i, i + 1000, tag), (i + 1000, i, tag.upper())]
        words += [(f"w{i}", f"{i}w", i), (f"{i}w", f"w{i}", -i)]
        totals += [(i, str(i), len(tag) * i), *decoys(i)]
    return {t: sorted(rows) for t, rows in zip(TABLES, (pairs, swaps, words, totals), strict=True)}


def decoys(i: int) -> list[tuple[Any, ...]]:
    """Rows of totals that look like (i, "i") and that no Update addresses: they keep n = 0."""
    return [(i, f" {i}", 0), (-i, str(i), 0), (i, f"{i}0", 0)]


TABLES = ("pairs", "swaps", "words", "totals")
ORDER = {"pairs": "a, b", "swaps": "x, y", "words": "p, q", "totals": "a, b"}


class Database:
    """A database holding SCHEMA, the source rows and totals' rows; ``url`` as --database takes it."""

    def __init__(self, url: str, sql: Callable[[str], list[tuple[Any, ...]]]) -> None:
        self.url = url
        self.sql = sql

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        return {t: sorted(self.sql(f"SELECT * FROM {t} ORDER BY {ORDER[t]}")) for t in TABLES}

    def run(self, *, dry_run: bool = False) -> tuple[int, int, int, int]:
        """(processed, inserted, updated, unchanged) of one run of ``keyed``; no errors allowed."""
        options = RunOptions(batch_size=BATCH, dry_run=dry_run)
        report = RunReport(database=self.url, dry_run=dry_run, errors=ErrorLog(keep=10))
        registry = make_registry(Plugin())
        asyncio.run(run_backfill(registry, ["keyed"], resolve_url(self.url), options, report))
        (stats,) = report.extractors
        assert not stats.errors, report.errors.first
        return stats.processed, stats.inserted, stats.updated, stats.unchanged


def _rows(tags: dict[int, str]) -> list[str]:
    source = [f"({i}, '{tag}')" for i, tag in tags.items()]
    totals = [f"({i}, '{i}', 0)" for i in tags] + [
        f"({a}, '{b}', {n})" for i in tags for a, b, n in decoys(i)
    ]
    return [
        f"INSERT INTO source (id, tag) VALUES {', '.join(source)}",
        f"INSERT INTO totals (a, b, n) VALUES {', '.join(totals)}",
    ]


TAGS = {i: f"t{i % 4}" for i in range(1, SOURCES + 1)}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_server)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    statements = [*SCHEMA, *_rows(TAGS)]
    if request.param == "sqlite":
        path = tmp_path / "keys.db"
        with closing(sqlite3.connect(path)) as conn, conn:
            for s in statements:
                conn.execute(s)

        def sqlite_sql(sql: str) -> list[tuple[Any, ...]]:
            with closing(sqlite3.connect(path)) as conn, conn:
                return conn.execute(sql).fetchall()

        yield Database(str(path), sqlite_sql)
        return
    with empty_database() as url:
        asyncio.run(execute(url, ";\n".join(statements)))
        yield Database(url, lambda sql: asyncio.run(fetch(url, sql)))


def test_composite_keys_insert_then_leave_unchanged(db: Database) -> None:
    before = db.tables()
    assert db.run(dry_run=True) == (SOURCES, 6 * SOURCES, SOURCES, 0)
    assert db.tables() == before

    assert db.run() == (SOURCES, 6 * SOURCES, SOURCES, 0)
    assert db.tables() == expected(TAGS)

    assert db.run() == (SOURCES, 0, 0, CHANGES_PER_ROW * SOURCES)
    assert db.tables() == expected(TAGS)


def test_composite_keys_update_exactly_the_rows_that_changed(db: Database) -> None:
    db.run()
    # Three target rows altered behind the engine's back, each next to a look-alike left alone,
    # and one source row changed: five of its seven rows change (its words do not read the tag).
    db.sql("UPDATE pairs SET v = 'altered' WHERE a = 3 AND b = '4'")
    db.sql("UPDATE swaps SET v = 'altered' WHERE x = 1010 AND y = 10")
    db.sql("UPDATE words SET n = 0 WHERE p = '20w' AND q = 'w20'")
    db.sql("UPDATE source SET tag = 'changed' WHERE id = 41")
    tags = {**TAGS, 41: "changed"}

    would = db.run(dry_run=True)
    assert would == (SOURCES, 0, 3 + 5, CHANGES_PER_ROW * SOURCES - 3 - 5)
    assert db.run() == would
    assert db.tables() == expected(tags)
