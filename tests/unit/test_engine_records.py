"""What the engine records about a run: a write the database refuses is a *batch* error carrying
the database's own message, in the summary and in the ledger's counters; the plugin that did the
work is named; and a --retry-errors run clears the errors of keys whose source rows are gone.

Real SQLite files (and, for the retry, a scratch PostgreSQL database when
BACKFILL_TEST_POSTGRES_URL is set). Each test kills mutants of engine.py that survived the rest
of the fast tests.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from backfill_core import (
    Extractor,
    Registry,
    Row,
    RunOptions,
    RunReport,
    Upsert,
    hookimpl,
    make_registry,
    resolve_url,
    run_backfill,
)
from backfill_core.engine.stats import ErrorLog, ExtractorStats
from backfill_plugins.testmanagement import plugin
from support.backends import BROKEN, GOOD, KINDS, Backend, MakeBackend, backends

SCHEMA = """
CREATE TABLE features (id INTEGER PRIMARY KEY);
CREATE TABLE tests (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, data TEXT);
CREATE TABLE test_features (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, test_id INTEGER NOT NULL,
    feature_id INTEGER,
    title TEXT NOT NULL DEFAULT '' CONSTRAINT no_forbidden_title CHECK (title <> 'FORBIDDEN'),
    description TEXT, howtofind TEXT, user_stories TEXT NOT NULL DEFAULT '[]',
    enable_default BOOLEAN, enable_content BOOLEAN, enable_visual BOOLEAN
);
CREATE TABLE bugs (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, test_id INTEGER,
                   raw_data TEXT, test_feature_id INTEGER);
"""


def database(path: Path, features: Sequence[dict[str, Any]]) -> Path:
    """Test 1 has a good feature (id 1), then one test per feature given (ids 2, 3, ...); every
    feature is of product feature 50, which the features table holds."""
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
        conn.execute("INSERT INTO features (id) VALUES (50)")
        for test_id, given in enumerate([{"id": 1, "title": "fine"}, *features], 1):
            feature = {"feature_id": 50, **given}
            conn.execute(
                "INSERT INTO tests (id, customer_id, data) VALUES (?, 1, ?)",
                (test_id, json.dumps({"features": [feature]})),
            )
    return path


def run(
    url: str, *, retry_errors: bool = False, registry: Registry | None = None
) -> tuple[ExtractorStats, RunReport]:
    report = RunReport(database=url, errors=ErrorLog(keep=100))
    options = RunOptions(max_error_rate=1.0)
    registry = registry or make_registry(plugin)
    names = ["test_features"]
    url_ = resolve_url(url)
    asyncio.run(
        run_backfill(registry, names, url_, options, report, validate=False, retry_errors=retry_errors)
    )
    (stats,) = report.extractors
    return stats, report


def ledger(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_a_refused_write_is_a_batch_error_with_the_databases_own_message(tmp_path: Path) -> None:
    """The message is sqlite3's, not SQLAlchemy's wrapping of it (with the SQL and parameters).
    Two rows refused in one batch: two batch errors."""
    forbidden = {"title": "FORBIDDEN"}
    path = database(
        tmp_path / "w.db", [{"id": 2, **forbidden}, {"id": 3, "title": "ok"}, {"id": 4, **forbidden}]
    )
    message = "CHECK constraint failed: no_forbidden_title"

    stats, report = run(str(path))

    errors = [(e.key, e.tier, e.kind, e.message) for e in report.errors.first]
    assert errors == [(2, "batch", "write", message), (4, "batch", "write", message)]
    assert stats.errors == {("batch", "write"): 2}
    assert (stats.processed, stats.inserted) == (4, 2)
    assert ledger(path, "SELECT record_errors, batch_errors FROM backfill_runs") == [(0, 2)]
    assert ledger(path, "SELECT key, tier, kind, message FROM backfill_errors ORDER BY key") == [
        ("2", "batch", "write", message),
        ("4", "batch", "write", message),
    ]


class HugeNumber(Extractor):
    """Writes an integer no SQLite column can hold: the driver raises OverflowError, which has
    no ``orig`` as a DBAPIError has."""

    name = "huge"
    source = "src"
    columns = ("id",)
    writes = {"dst": ("id", "n")}

    def extract(self, row: Row) -> list[Upsert]:
        return [Upsert("dst", {"id": row["id"]}, {"n": 2**70 if row["id"] == 2 else row["id"]})]


class HugePlugin:
    @hookimpl
    def register_extractors(self, register: Callable[[Extractor], None]) -> None:
        register(HugeNumber())


def test_an_integer_the_driver_cannot_send_is_a_batch_error_with_its_message(tmp_path: Path) -> None:
    path = tmp_path / "huge.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE src (id INTEGER PRIMARY KEY); CREATE TABLE dst (id INTEGER PRIMARY KEY, n INTEGER);"
        )
        conn.executemany("INSERT INTO src VALUES (?)", [(1,), (2,), (3,)])

    report = RunReport(database=str(path), errors=ErrorLog(keep=10))
    work = run_backfill(
        make_registry(HugePlugin()), ["huge"], resolve_url(str(path)), RunOptions(max_error_rate=1.0), report
    )
    asyncio.run(work)

    assert [(e.key, e.tier, e.kind, e.message) for e in report.errors.first] == [
        (2, "batch", "write", "Python int too large to convert to SQLite INTEGER")
    ]
    assert ledger(path, "SELECT id, n FROM dst ORDER BY id") == [(1, 1), (3, 3)]


def test_an_empty_source_table_is_a_run_of_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)

    stats, _ = run(str(path))

    assert (stats.processed, stats.total, stats.error_count, stats.stopped) == (0, 0, 0, None)
    assert ledger(path, "SELECT status, processed FROM backfill_runs") == [("succeeded", 0)]


def test_the_progress_bar_is_named_sized_and_advanced_by_each_batch(tmp_path: Path) -> None:
    path = database(tmp_path / "bar.db", [{"id": n, "title": "t"} for n in range(2, 8)])
    bars: list[tuple[str, int, list[int]]] = []

    class Bar:
        def __init__(self, name: str, total: int) -> None:
            self.steps: list[int] = []
            bars.append((name, total, self.steps))

        def update(self, n: int) -> None:
            self.steps.append(n)

        def close(self) -> None:
            pass

    report = RunReport(database=str(path))
    options = RunOptions(batch_size=3, max_error_rate=1.0)
    work = run_backfill(
        make_registry(plugin),
        ["test_features"],
        resolve_url(str(path)),
        options,
        report,
        validate=False,
        progress=Bar,
    )
    asyncio.run(work)

    assert bars == [("test_features", 7, [3, 3, 1])]


def test_the_stats_name_the_plugin_that_did_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the command line loads it: by its entry point, from its distribution."""
    monkeypatch.setenv("BACKFILL_LOAD_PLUGINS", "")  # the built-in plugin only
    stats, report = run(str(database(tmp_path / "p.db", [])), registry=Registry.discover())

    assert stats.plugin == f"testmanagement (backfill {version('backfill')})"
    assert report.to_dict()["extractors"][0]["plugin"] == stats.plugin


@pytest.fixture(params=KINDS)
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    with backends(request.param, tmp_path) as make:
        yield make


def test_a_retry_clears_the_errors_of_source_rows_that_are_gone(make_db: MakeBackend) -> None:
    """Tests 1 and 2 fail; test 2 is then deleted. The retry processes test 1, which fails
    again (recorded under the retry), and clears test 2's error from the first run."""
    db: Backend = make_db([BROKEN, BROKEN, GOOD])
    first, _ = run(db.url)
    assert first.error_count == 2
    db.execute("DELETE FROM tests WHERE id = 2")

    retry, _ = run(db.url, retry_errors=True)

    assert (retry.processed, retry.error_count) == (1, 1)
    assert db.rows("SELECT run_id, key FROM backfill_errors ORDER BY run_id, key") == [(2, "1")]


def test_each_batch_that_writes_commits_its_checkpoint_with_it(tmp_path: Path) -> None:
    """docs/architecture.md: the checkpoint of a batch that changes something is written in the
    batch's own transaction, also when a refused row sent the batch through isolation. Read
    from another connection as each batch's progress is reported (after its commit)."""
    features = [{"id": n, "title": "FORBIDDEN" if n == 2 else "t"} for n in range(2, 8)]
    path = database(tmp_path / "ck.db", features)  # tests 1..7
    seen: list[tuple[Any, ...]] = []

    class Watch:
        def __init__(self, _name: str, _total: int) -> None:
            pass

        def update(self, _n: int) -> None:
            seen.extend(ledger(path, "SELECT last_key, processed, batch_errors FROM backfill_runs"))

        def close(self) -> None:
            pass

    report = RunReport(database=str(path))
    options = RunOptions(batch_size=3, max_error_rate=1.0)
    work = run_backfill(
        make_registry(plugin),
        ["test_features"],
        resolve_url(str(path)),
        options,
        report,
        validate=False,
        progress=Watch,
    )
    asyncio.run(work)

    assert seen == [("3", 3, 1), ("6", 6, 1), ("7", 7, 1)]


def test_a_rerun_that_changes_nothing_still_ends_with_its_last_key(tmp_path: Path) -> None:
    """Batches that change nothing are folded into later checkpoints; the last of them is
    written when the run ends, with the last key read."""
    path = database(tmp_path / "rerun.db", [{"id": n, "title": "t"} for n in range(2, 8)])
    run(str(path))

    again, _ = run(str(path))

    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 7)
    assert ledger(path, "SELECT id, status, last_key, processed FROM backfill_runs ORDER BY id") == [
        (1, "succeeded", "7", 7),
        (2, "succeeded", "7", 7),
    ]


def test_skipped_features_are_counted_by_kind(tmp_path: Path) -> None:
    """A feature without feature_id is skipped, not an error (the built-in job's rule)."""
    path = database(tmp_path / "skip.db", [{"id": 2, "feature_id": None}, {"id": 3, "feature_id": None}])

    stats, _ = run(str(path))

    assert (stats.inserted, stats.error_count) == (1, 0)
    assert dict(stats.skipped) == {"no-feature-id": 2}
