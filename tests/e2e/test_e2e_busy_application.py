"""Backfill beside a busy application, on SQLite and on PostgreSQL (issue 18).

A process playing the application (support/application.py) writes steadily to ``tests``,
``bugs`` and ``test_features`` from before the backfill starts until after it ends, while the real
``backfill`` script fills ``test_features`` and ``bugs.test_feature_id`` from 5,000 tests and
about 20,000 bugs. The run stops itself after its fourth committed batch and is let go only once
the application has written 50 more times: whatever the machine's speed, the application writes
while the run is under way, on rows behind and ahead of its cursor.

What must hold: no application write fails, and its slowest is printed (and under its busy timeout
on SQLite, where a longer wait would have failed it). The backfill's tables are correct: a row the
application never touched is exact after the run; a row it touched while the run had it in flight
may have been written from the source row as the run read it, so after the application stops a
second run settles those (and writes nothing else), and then every row equals what a fresh run
makes of the final source rows.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from backfill_plugins.testmanagement import synthetic
from support.application import BUSY_TIMEOUT, Application, Latency, Write
from support.builtin_job import Expected
from support.cli import parse_json_output, run_cli, stats_by_name
from support.postgres import SERVER, execute, fetch, needs_server, scratch_database
from support.processes import Spawned
from support.sqlite import query

TESTS = 5000
"""About 20,000 bugs besides: 25,000 source rows."""
JOB = ("run", "test_features", "bug_attribution", "--quiet", "--json", "--no-validate")
STOP_AT = "test_features:committed:4"
WRITES_BEFORE = 20
WRITES_WHILE_STOPPED = 50
WRITES_AFTER = 20
LEDGER = ("backfill_errors", "backfill_ranges", "backfill_parts", "backfill_runs")
FEATURES = "SELECT * FROM test_features ORDER BY id"
ATTRIBUTION = "SELECT id, test_feature_id FROM bugs ORDER BY id"


class Target:
    """The database the application and the backfill share."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    @contextmanager
    def reference(self, folder: Path) -> Iterator[Target]:
        """A copy of this database's current source rows, derived tables emptied and no ledger,
        after one complete run: what a fresh backfill makes of them."""
        raise NotImplementedError
        yield self


class SqliteTarget(Target):
    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return query(self.path, sql)

    @contextmanager
    def reference(self, folder: Path) -> Iterator[Target]:
        copy = folder / "reference.db"
        with closing(sqlite3.connect(self.path)) as src, closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)  # the WAL's contents too
            dst.executescript(
                "DELETE FROM test_features; UPDATE bugs SET test_feature_id = NULL;"
                + "".join(f"DROP TABLE {t};" for t in LEDGER)
            )
        _run_job(str(copy))
        yield SqliteTarget(copy)


class PostgresTarget(Target):
    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return asyncio.run(fetch(self.url, sql))

    @contextmanager
    def reference(self, folder: Path) -> Iterator[Target]:
        assert SERVER
        name = f"{self.url.rsplit('/', 1)[1]}_ref"
        asyncio.run(execute(SERVER, f'CREATE DATABASE "{name}" TEMPLATE "{self.url.rsplit("/", 1)[1]}"'))
        url = SERVER.rsplit("/", 1)[0] + "/" + name
        try:
            asyncio.run(
                execute(
                    url,
                    "UPDATE bugs SET test_feature_id = NULL; DELETE FROM test_features;"
                    + "".join(f"DROP TABLE {t};" for t in LEDGER),
                )
            )
            _run_job(url)
            yield PostgresTarget(url)
        finally:
            asyncio.run(execute(SERVER, f'DROP DATABASE "{name}" WITH (FORCE)'))


def _run_job(url: str) -> dict[str, dict[str, Any]]:
    proc = run_cli([*JOB, "-d", url])
    assert proc.returncode == 0, proc.stderr
    return stats_by_name(parse_json_output(proc))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic cache, in WAL mode as the application keeps it; only ever copied."""
    path = tmp_path_factory.mktemp("busy") / "source.db"
    synthetic.build(path, TESTS, wal=True)
    return path


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("postgresql", marks=needs_server)])
def target(request: pytest.FixtureRequest, source: Path, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        path = tmp_path / "cache.db"
        shutil.copy(source, path)  # its last connection closed: the main file is all of it
        assert query(path, "PRAGMA journal_mode") == [("wal",)]
        yield SqliteTarget(path)
    else:
        with scratch_database(source) as url:
            yield PostgresTarget(url)


def _touched(writes: list[Write]) -> tuple[set[int], set[int]]:
    tests = {t for w in writes for t in w.tests}
    bugs = {b for w in writes for b in w.bugs}
    return tests, bugs


def test_backfill_beside_a_busy_application(target: Target, tmp_path: Path) -> None:
    app = Application(target.url, tmp_path / "application.jsonl")
    run: Spawned | None = None
    try:
        app.wait_writes(WRITES_BEFORE)
        began = time.monotonic()
        run = Spawned([*JOB, "-d", target.url], tmp_path / "run", env={"BACKFILL_STOP_AT": STOP_AT})
        run.wait_stopped()
        app.wait_writes(app.count() + WRITES_WHILE_STOPPED)
        run.resume()
        finished = run.wait()
        ended = time.monotonic()
        assert finished.returncode == 0, finished.stderr
        app.wait_writes(app.count() + WRITES_AFTER)
        writes = app.stop()
    finally:
        if run is not None:
            run.stop()
        app.kill()

    slowest = _slowest(writes)
    during = Latency.of([w for w in writes if began <= w.at <= ended])
    print(f"\napplication on {type(target).__name__}: {Latency.of(writes)}; while backfill ran: {during}")
    print(f"slowest write: {slowest.op}, {slowest.ms:.0f} ms")
    if isinstance(target, SqliteTarget):
        assert slowest.ms < BUSY_TIMEOUT * 1000

    check_settled(target, writes, json.loads(finished.stdout), tmp_path)


def check_settled(target: Target, writes: list[Write], first: dict[str, Any], folder: Path) -> None:
    """The tables after the first run (whose ``--json`` report is ``first``) and the application's
    ``writes``: exact on every row the application left alone; after a second run, equal to a
    fresh run on the final source rows, the second run having rewritten only the stale rows."""
    stats = stats_by_name(first)
    assert stats["test_features"]["processed"] >= TESTS
    touched_tests, touched_bugs = _touched(writes)
    assert touched_tests and touched_bugs
    after_first = (target.rows(FEATURES), target.rows(ATTRIBUTION))

    # The application writes every feature it lists and the backfill deletes nothing, so the
    # second run has nothing to insert: it only updates rows the first run wrote from a stale read.
    again = _run_job(target.url)
    print(
        f"second run updated {again['test_features']['updated']} test features "
        f"and {again['bug_attribution']['updated']} bugs"
    )
    assert again["test_features"]["inserted"] == 0

    with target.reference(folder) as reference:
        expected_features, expected_attribution = reference.rows(FEATURES), reference.rows(ATTRIBUTION)
    assert len(expected_features) > 10_000
    assert target.rows(FEATURES) == expected_features
    assert target.rows(ATTRIBUTION) == expected_attribution
    # The second run rewrote exactly the rows the first had left stale.
    assert again["test_features"]["updated"] == len(set(after_first[0]) - set(expected_features))
    assert again["bug_attribution"]["updated"] == len(set(after_first[1]) - set(expected_attribution))

    # The first run alone was exact on every row the application left alone.
    untouched = [r for r in expected_features if r[2] not in touched_tests]
    assert [r for r in after_first[0] if r[2] not in touched_tests] == untouched
    assert [r for r in after_first[1] if r[0] not in touched_bugs] == [
        r for r in expected_attribution if r[0] not in touched_bugs
    ]


LOCK_TIMEOUT = 1
"""``--lock-timeout`` in the test below, in seconds."""
HELD = "UPDATE bugs SET status = 'held by the application' WHERE id = $1"


def _slowest(writes: list[Write]) -> Write:
    """The slowest of the application's ``writes``, none of which may have failed."""
    failed = [w for w in writes if w.error is not None]
    assert failed == [], f"{len(failed)} of {len(writes)} application writes failed, first: {failed[:3]}"
    return max(writes, key=lambda w: w.ms)


def _held_bug(source: Path) -> tuple[int, int, int]:
    """A bug that the run attributes, well into ``bug_attribution``'s run, its test, and the
    number of the batch (of the default 500 rows) that holds it."""
    bug = min(b for b in Expected(source).attribution if b > 10_000)
    ((test,),) = query(source, "SELECT test_id FROM bugs WHERE id = ?", (bug,))
    ((before,),) = query(source, "SELECT count(*) FROM bugs WHERE id <= ?", (bug,))
    return bug, test, (before - 1) // 500 + 1


@contextmanager
def application_lock(url: str, sql: str, *args: object) -> Iterator[Callable[[], None]]:
    """An application transaction that has run ``sql`` (holding its row locks) and stays open
    until the ``commit`` it yields is called (rolled back on the way out otherwise)."""
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(
        asyncpg.connect(url, server_settings={"application_name": "application holding a lock"})
    )
    tx = conn.transaction()
    open_ = True

    def commit() -> None:
        nonlocal open_
        loop.run_until_complete(tx.commit())
        open_ = False

    try:
        loop.run_until_complete(tx.start())
        loop.run_until_complete(conn.execute(sql, *args))
        yield commit
    finally:
        if open_:
            loop.run_until_complete(tx.rollback())
        loop.run_until_complete(conn.close())
        loop.close()


@pytest.mark.parametrize("target", [pytest.param("postgresql", marks=needs_server)], indirect=True)
def test_postgresql_batch_meeting_a_long_application_lock_retries(
    target: Target, source: Path, tmp_path: Path
) -> None:
    """An application transaction holds a row lock the run needs for longer than
    ``--lock-timeout``: the run's batch gives up its locks and retries, the application's other
    writes are never blocked longer than the lock timeout and a batch, and once the lock goes
    the run finishes with correct tables."""
    bug, test, batch = _held_bug(source)
    app = Application(target.url, tmp_path / "application.jsonl", spare=[test])
    run: Spawned | None = None
    try:
        app.wait_writes(WRITES_BEFORE)
        with application_lock(target.url, HELD, bug) as commit:
            run = Spawned(
                [*JOB, "-d", target.url, "--lock-timeout", str(LOCK_TIMEOUT)],
                tmp_path / "run",
                env={"BACKFILL_STOP_AT": f"bug_attribution:retrying:{batch}"},
            )
            run.wait_stopped()  # its batch met the lock, timed out and is about to retry
            commit()
        run.resume()
        finished = run.wait()
        assert finished.returncode == 0, finished.stderr
        app.wait_writes(app.count() + WRITES_AFTER)
        writes = app.stop()
    finally:
        if run is not None:
            run.stop()
        app.kill()

    slowest = _slowest(writes)
    print(f"\napplication: {Latency.of(writes)}; slowest: {slowest.op}, {slowest.ms:.0f} ms")
    assert slowest.ms < (LOCK_TIMEOUT + 5) * 1000  # the lock timeout and one batch, loosely
    assert target.rows(f"SELECT status FROM bugs WHERE id = {bug}") == [("held by the application",)]
    check_settled(target, writes, json.loads(finished.stdout), tmp_path)
