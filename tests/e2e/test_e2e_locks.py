"""A backfill beside an application that holds locks: a batch held up past --lock-timeout (on
SQLite, the busy timeout) is rolled back and tried again, and finishes once the lock goes; when
its retries are spent the run stops with exit 3, resumable, with nothing recorded as failed.

The real ``backfill`` script on a SQLite file and on a scratch database of the PostgreSQL server.
Each moment is chosen from what the run has done: a stop point, or its line on stderr saying it
is retrying, never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from support.backends import GOOD, KINDS, Backend, MakeBackend, backends
from support.cli import run_cli
from support.postgres import needs_server
from support.processes import Spawned, wait_for

TESTS = 30
BATCH = 10
RUN = ["run", "test_features", "-q", "--no-validate", "--batch-size", str(BATCH), "--lock-timeout", "0.2"]
QUICK = {"BACKFILL_BUSY_TIMEOUT": "0.2"}
"""SQLite gives up waiting for the write lock after 0.2 s, as PostgreSQL does with --lock-timeout 0.2."""


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    with backends(request.param, tmp_path) as made:
        yield made


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Spawned]]:
    """``spawn(args, env)``: ``backfill ARGS`` in the background, killed if the test leaves it."""
    spawned: list[Spawned] = []

    def start(args: list[str], env: dict[str, str]) -> Spawned:
        proc = Spawned(args, tmp_path / "procs", env)
        spawned.append(proc)
        return proc

    yield start
    for proc in spawned:
        proc.stop()


class Holder:
    """The application holding a lock in a transaction of its own, until :meth:`release`: on
    PostgreSQL a row lock (``SELECT … FOR UPDATE``), on SQLite the file's write lock."""

    def __init__(self, db: Backend) -> None:
        self.db = db
        self._loop = asyncio.new_event_loop()
        self._lite: sqlite3.Connection | None = None
        self._pg: Any = None

    def sql(self, statement: str) -> Any:
        """Run ``statement`` in the holder's transaction (PostgreSQL); what it returns."""
        if self._pg is None:
            self._pg = self._loop.run_until_complete(asyncpg.connect(self.db.url))
            self._loop.run_until_complete(self._pg.execute("BEGIN"))
        return self._loop.run_until_complete(self._pg.fetch(statement))

    def take(self, feature: int = 5001) -> None:
        """Lock what the batch of ``feature``'s test needs: the features row its test_features
        row references (whose foreign key check takes FOR KEY SHARE), or the SQLite file."""
        if self.db.kind == "sqlite":
            self._lite = sqlite3.connect(self.db.url, isolation_level=None)
            self._lite.execute("BEGIN IMMEDIATE")
        else:
            self.sql(f"SELECT id FROM features WHERE id = {feature} FOR UPDATE")

    def pid(self) -> int:
        return int(self.sql("SELECT pg_backend_pid()")[0][0])

    def release(self, verb: str = "ROLLBACK") -> None:
        if self._lite is not None:
            self._lite.execute(verb)
            self._lite.close()
            self._lite = None
        if self._pg is not None:
            self._loop.run_until_complete(self._pg.execute(verb))
            self._loop.run_until_complete(self._pg.close())
            self._pg = None

    def close(self) -> None:
        self.release()
        self._loop.close()


@pytest.fixture
def holder_of() -> Iterator[Callable[[Backend], Holder]]:
    made: list[Holder] = []

    def make(db: Backend) -> Holder:
        made.append(Holder(db))
        return made[-1]

    yield make
    for h in made:
        h.close()


def _ledger(db: Backend) -> list[tuple[Any, ...]]:
    return db.rows("SELECT status, processed, record_errors, batch_errors, lock_retries FROM backfill_runs")


def _retrying(proc: Spawned) -> Callable[[], bool]:
    return lambda: "lock retry 1 of" in proc.err_path.read_text()


def test_a_batch_held_up_by_a_lock_is_retried_and_finishes_once_the_lock_goes(
    make: MakeBackend, spawn: Callable[..., Spawned], holder_of: Callable[[Backend], Holder]
) -> None:
    db = make([GOOD] * TESTS)
    holder = holder_of(db)
    # Stopped once the run is recorded, before its first batch: the lock is taken then (on
    # SQLite, earlier would stop the ledger's own start).
    proc = spawn(
        [*RUN, "--lock-retries", "100", "--json", "-d", db.url],
        {**QUICK, "BACKFILL_STOP_AT": "test_features:started"},
    )
    proc.wait_stopped()
    holder.take()
    proc.resume()
    assert wait_for(_retrying(proc), proc), proc.err_path.read_text()
    holder.release()
    done = proc.wait()
    assert done.returncode == 0, done.stderr
    cause = "database is locked" if db.kind == "sqlite" else "lock timeout"
    assert (
        f"test_features: the batch of keys 1 to {BATCH} gave way to another transaction's lock ({cause}) "
        "and was rolled back; lock retry 1 of 100 in " in done.stderr
    )
    (stats,) = json.loads(done.stdout)["extractors"]
    assert stats["lock_retries"] >= 1 and stats["errors"] == 0 and stats["inserted"] == TESTS
    assert _ledger(db) == [("succeeded", TESTS, 0, 0, stats["lock_retries"])]
    assert db.feature_tests() == list(range(1, TESTS + 1))


@pytest.mark.parametrize("make", [pytest.param("postgresql", marks=needs_server)], indirect=True)
def test_a_run_waiting_between_lock_retries_keeps_its_heartbeat_fresh_on_postgresql(
    make: MakeBackend, spawn: Callable[..., Spawned], holder_of: Callable[[Backend], Holder]
) -> None:
    """Its retries may wait longer than BACKFILL_STALE_AFTER: another host must not take the run
    for dead meanwhile. (On SQLite the heartbeat's write would wait for the file's lock.)"""
    db = make([GOOD] * TESTS)
    holder = holder_of(db)
    proc = spawn([*RUN, "--lock-retries", "100", "-d", db.url], {"BACKFILL_STOP_AT": "test_features:started"})
    proc.wait_stopped()
    holder.take()
    [(before,)] = db.rows("SELECT heartbeat_at FROM backfill_runs")
    proc.resume()
    assert wait_for(lambda: "lock retry 2 of" in proc.err_path.read_text(), proc)
    [(waiting, message)] = db.rows("SELECT heartbeat_at, message FROM backfill_runs")
    holder.release()
    done = proc.wait()

    assert done.returncode == 0, done.stderr
    assert waiting > before
    assert message == f"waiting for a lock: test_features: the batch of keys 1 to {BATCH}"
    assert db.rows("SELECT status, message FROM backfill_runs") == [("succeeded", None)]


def test_spent_lock_retries_stop_the_run_resumable_with_no_row_recorded_as_failed(
    make: MakeBackend, spawn: Callable[..., Spawned], holder_of: Callable[[Backend], Holder]
) -> None:
    db = make([GOOD] * TESTS)
    holder = holder_of(db)
    cmd = [*RUN, "--lock-retries", "2", "-d", db.url]
    proc = spawn(cmd, {**QUICK, "BACKFILL_STOP_AT": "test_features:started"})
    proc.wait_stopped()
    holder.take()
    proc.resume()
    done = proc.wait()
    assert done.returncode == 3, done.stderr
    assert "lock retry 2 of 2" in done.stderr
    assert "gave way to another transaction's lock on 3 tries" in done.stderr
    assert "none of its rows is recorded as failed" in done.stderr and "to resume" in done.stderr
    assert db.rows("SELECT COUNT(*) FROM backfill_errors") == [(0,)]
    assert db.feature_tests() == []
    if db.kind == "postgresql":
        assert _ledger(db) == [("failed", 0, 0, 0, 2)]
    else:  # the lock the run lost to is the whole file's: the run could not record its end
        assert _ledger(db) == [("running", 0, 0, 0, 0)]
    holder.release()

    again = run_cli(cmd, QUICK)
    assert again.returncode == 0, again.stderr
    assert "run 1 of test_features from the start" in again.stderr  # resumed, or taken over
    assert db.feature_tests() == list(range(1, TESTS + 1))
    assert _ledger(db)[0][:4] == ("succeeded", TESTS, 0, 0)


def test_the_ledgers_own_writes_wait_out_a_lock_between_two_extractors(
    tmp_path: Path, spawn: Callable[..., Spawned], holder_of: Callable[[Backend], Holder]
) -> None:
    """SQLite only: its lock is the whole file's, so the ledger's writes meet it too (on
    PostgreSQL they touch only backfill's own rows). Taken once test_features' last batch has
    committed, the lock meets the record of how its run ended; that, and bug_attribution's start,
    are tried again, and both runs end recorded as succeeded."""
    with backends("sqlite", tmp_path) as make:
        db = make([GOOD] * TESTS)
    holder = holder_of(db)
    cmd = ["run", "test_features", "bug_attribution", *RUN[2:], "--lock-retries", "100", "-d", db.url]
    proc = spawn(cmd, {**QUICK, "BACKFILL_STOP_AT": f"test_features:committed:{TESTS // BATCH}"})
    proc.wait_stopped()
    holder.take()
    proc.resume()
    assert wait_for(_retrying(proc), proc), proc.err_path.read_text()
    holder.release()
    done = proc.wait()
    assert done.returncode == 0, done.stderr
    assert "test_features: recording how its run ended gave way to another transaction's lock" in done.stderr
    assert db.rows("SELECT extractor, status FROM backfill_runs ORDER BY id") == [
        ("test_features", "succeeded"),
        ("bug_attribution", "succeeded"),
    ]
    assert db.feature_tests() == list(range(1, TESTS + 1))


# -- PostgreSQL only: what pg_stat_activity shows, and conflicts SQLite cannot have -----------------
# (SQLite's one lock is the whole file's, taken by BEGIN IMMEDIATE before a batch reads anything:
# a batch there never meets a lock half-way, in the row isolation path or in a deadlock.)


@pytest.fixture(params=[pytest.param("postgresql", marks=needs_server)])
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    with backends(request.param, tmp_path) as made:
        yield made


def _activity(db: Backend) -> list[tuple[Any, ...]]:
    """(application_name, state, wait_event_type) of the other sessions on the database."""
    return db.rows(
        "SELECT application_name, state, wait_event_type FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY application_name"
    )


def _waiting_on_a_lock(db: Backend) -> Callable[[], bool]:
    return lambda: ("backfill:test_features", "active", "Lock") in _activity(db)


def test_stopped_while_retrying_the_run_holds_no_lock_and_shows_its_name(
    pg: MakeBackend, spawn: Callable[..., Spawned], holder_of: Callable[[Backend], Holder]
) -> None:
    """Between tries the batch's transaction is rolled back: nothing of the application waits
    on it, and pg_stat_activity names the process by its extractor."""
    db = pg([GOOD] * TESTS)
    holder = holder_of(db)
    holder.take(5000 + BATCH + 1)  # a row the second batch needs
    proc = spawn([*RUN, "--json", "-d", db.url], {"BACKFILL_STOP_AT": "test_features:retrying:2"})
    proc.wait_stopped()
    activity = _activity(db)
    assert ("backfill:test_features", "idle", "Client") in activity, activity
    assert not [a for a in activity if a[2] == "Lock"], activity  # nothing on this database waits
    assert db.feature_tests() == list(range(1, BATCH + 1))  # the first batch is committed
    holder.release()
    proc.resume()
    done = proc.wait()
    assert done.returncode == 0, done.stderr
    (stats,) = json.loads(done.stdout)["extractors"]
    assert stats["lock_retries"] == 1
    assert db.feature_tests() == list(range(1, TESTS + 1))


def test_a_lock_met_while_isolating_refused_rows_is_retried_never_recorded_as_a_row_error(
    pg: MakeBackend, spawn: Callable[..., Spawned], holder_of: Callable[[Backend], Holder]
) -> None:
    """A CHECK constraint refuses test 3's row, so the batch's write is refused and its rows are
    written apart to find the one to blame; there test 7's feature is locked. The lock ends the
    batch (and, retries spent, the run); only once it is gone is test 3 recorded, as the one row
    refused."""
    db = pg([GOOD] * BATCH)
    db.execute("ALTER TABLE test_features ADD CONSTRAINT not_test_3 CHECK (test_id <> 3)")
    holder = holder_of(db)
    holder.take(5007)
    cmd = [*RUN, "--lock-retries", "1", "--max-error-rate", "1", "-d", db.url]
    first = run_cli(cmd)
    assert first.returncode == 3, first.stderr
    assert "gave way to another transaction's lock on 2 tries (the last: lock timeout)" in first.stderr
    assert _ledger(db) == [("failed", 0, 0, 0, 1)]
    assert db.rows("SELECT COUNT(*) FROM backfill_errors") == [(0,)]
    holder.release()

    again = run_cli([*cmd, "--json"])
    assert again.returncode == 0, again.stderr
    assert _ledger(db) == [("succeeded", BATCH, 0, 1, 1)]
    assert db.rows("SELECT key, tier, kind FROM backfill_errors") == [("3", "batch", "write")]
    assert db.feature_tests() == [t for t in range(1, BATCH + 1) if t != 3]


def test_a_deadlock_rolls_the_batch_back_and_it_is_retried(
    pg: MakeBackend, spawn: Callable[..., Spawned], holder_of: Callable[[Backend], Holder]
) -> None:
    """A real deadlock, in a known order: the foreign key to features is checked at COMMIT
    (DEFERRABLE INITIALLY DEFERRED). With the batch's rows written but not committed (stop point
    ``written``), the application locks test 3's feature, then inserts test 3's test_features row
    and waits for the batch. At COMMIT the batch needs that feature: each waits for the other, and
    the batch's server process finds the deadlock (the application's never looks) and gives way."""
    db = pg([GOOD] * BATCH)
    db.execute(
        "ALTER TABLE test_features ALTER CONSTRAINT test_features_feature_id_fkey "
        "DEFERRABLE INITIALLY DEFERRED"
    )
    # A lock timeout longer than the server's deadlock_timeout (1 s): the deadlock is found first.
    cmd = [*RUN, "--lock-timeout", "60", "--json", "-d", db.url]
    proc = spawn(cmd, {"BACKFILL_STOP_AT": "test_features:written:1"})
    proc.wait_stopped()
    holder = holder_of(db)
    holder.sql("SET LOCAL deadlock_timeout = '1h'")
    holder.take(5003)
    app = holder.pid()
    # The application's insert waits for the batch's uncommitted row 1003; run it in a thread.
    inserting = asyncio.new_event_loop()
    blocked = inserting.run_in_executor(
        None,
        holder.sql,
        "INSERT INTO test_features (id, customer_id, test_id, feature_id, title) "
        "VALUES (1003, 7, 3, 5003, 'written by the application')",
    )
    assert wait_for(
        lambda: db.rows(f"SELECT wait_event_type FROM pg_stat_activity WHERE pid = {app}") == [("Lock",)],
        proc,
    )
    proc.resume()
    inserting.run_until_complete(blocked)  # the batch gave way, so the application's insert went through
    holder.release("COMMIT")
    inserting.close()
    done = proc.wait()
    assert done.returncode == 0, done.stderr
    assert "gave way to another transaction's lock (deadlock)" in done.stderr
    (stats,) = json.loads(done.stdout)["extractors"]
    assert (stats["lock_retries"], stats["inserted"], stats["updated"]) == (1, BATCH - 1, 1)
    assert db.rows("SELECT title FROM test_features WHERE id = 1003") == [("feature of test 3",)]
    assert _ledger(db) == [("succeeded", BATCH, 0, 0, 1)]


def test_a_serialization_failure_rolls_the_batch_back_and_it_is_retried(
    pg: MakeBackend, spawn: Callable[..., Spawned], holder_of: Callable[[Backend], Holder]
) -> None:
    """On a database whose transactions are REPEATABLE READ, the batch updates a row that the
    application changed and commits after the batch's snapshot: a serialization failure."""
    db = pg([GOOD] * BATCH)
    first = run_cli([*RUN, "-d", db.url])
    assert first.returncode == 0, first.stderr
    db.execute("UPDATE tests SET data = replace(data, 'feature of test 4', 'renamed') WHERE id = 4")
    db.execute(
        f"ALTER DATABASE {db.url.rsplit('/', 1)[1]} SET default_transaction_isolation = 'repeatable read'"
    )
    holder = holder_of(db)
    holder.sql("UPDATE test_features SET description = 'the application''s' WHERE id = 1004")
    proc = spawn([*RUN, "--json", "--restart", "--lock-timeout", "0", "-d", db.url], {})
    assert wait_for(_waiting_on_a_lock(db), proc), proc.err_path.read_text()
    holder.release("COMMIT")
    done = proc.wait()
    assert done.returncode == 0, done.stderr
    assert "gave way to another transaction's lock (serialization failure)" in done.stderr
    (stats,) = json.loads(done.stdout)["extractors"]
    assert (stats["lock_retries"], stats["updated"]) == (1, 1)
    # Tried again, the batch read the application's row and wrote its own values over it.
    assert db.rows("SELECT title, description FROM test_features WHERE id = 1004") == [("renamed", None)]
