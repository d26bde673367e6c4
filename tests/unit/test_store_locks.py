"""Lock conflicts at the store: both adapters turn a transaction that gave way to another's lock
into LockConflict; PostgreSQL bounds a batch's lock waits and statements, and names its
connections; and the engine's backoff between tries. On a real SQLite file and the PostgreSQL
server named by BACKFILL_TEST_POSTGRES_URL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from backfill_core import Database, DatabaseUnavailable, resolve_url
from backfill_core.engine.retry import Backoff, with_retries
from backfill_core.store.connection import LockConflict
from support.postgres import empty_database, execute, needs_server

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_server)])
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database with an ``items`` table holding row 1; SQLite waits 0.1 s for a lock."""
    monkeypatch.setenv("BACKFILL_BUSY_TIMEOUT", "0.1")
    if request.param == "sqlite":
        path = tmp_path / "items.db"
        with closing(sqlite3.connect(path)) as conn:
            conn.executescript(f"{ITEMS}; INSERT INTO items VALUES (1, 0);")
        yield str(path)
        return
    with empty_database() as pg_url:
        asyncio.run(execute(pg_url, f"{ITEMS}; INSERT INTO items VALUES (1, 0);"))
        yield pg_url


class Holder:
    """Another connection, as the application's, holding a lock on row 1 of ``items`` (on SQLite
    the write lock of the whole file) until :meth:`release`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lite: sqlite3.Connection | None = None
        self._pg: Any = None

    async def take(self) -> None:
        if "://" not in self.url:
            self._lite = sqlite3.connect(self.url, isolation_level=None)
            self._lite.execute("BEGIN IMMEDIATE")
            return
        self._pg = await asyncpg.connect(self.url)
        await self._pg.execute("BEGIN; UPDATE items SET n = n + 1 WHERE id = 1")

    async def release(self) -> None:
        if self._lite is not None:
            self._lite.execute("ROLLBACK")
            self._lite.close()
        if self._pg is not None:
            await self._pg.execute("ROLLBACK")
            await self._pg.close()


async def _update(db: Database, n: int) -> None:
    async with db.writing(lock_timeout=0.1) as conn:
        await conn.execute("UPDATE items SET n = ? WHERE id = 1".replace("?", _mark(db)), (n,))


def _mark(db: Database) -> str:
    return "?" if db.is_sqlite else "$1"


def test_a_write_that_gives_way_to_a_lock_raises_lock_conflict_and_commits_nothing(url: str) -> None:
    async def go() -> tuple[LockConflict, list[Any]]:
        holder = Holder(url)
        async with Database(resolve_url(url)) as db:
            await holder.take()
            try:
                with pytest.raises(LockConflict) as caught:
                    await _update(db, 5)
            finally:
                await holder.release()
            await _update(db, 7)  # the lock is gone: the same write goes through
            async with db.reading() as conn:
                rows = [tuple(r) for r in await conn.fetch("SELECT id, n FROM items", ())]
        return caught.value, rows

    error, rows = asyncio.run(go())
    assert isinstance(error, DatabaseUnavailable)  # where it is not tried again, it ends the run
    if "://" in url:
        assert error.cause == "lock timeout"
        assert "lock timeout" in str(error) and "pg_locks" in str(error)
    else:
        assert error.cause == "database is locked"
        assert "database is locked" in str(error) and "BACKFILL_BUSY_TIMEOUT" in str(error)
    assert rows == [(1, 7)]


@pytest.mark.parametrize(
    ("lock_timeout", "expected"),
    [(2.5, ("2500ms", "5min")), (0.0001, ("1ms", "5min")), (0, ("0", "5min")), (400, ("400s", "800s"))],
)
@pytest.mark.parametrize("_", [pytest.param("postgresql", marks=needs_server)])
def test_a_batch_transaction_bounds_its_lock_waits_and_statements_locally(
    _: str, lock_timeout: float, expected: tuple[str, str]
) -> None:
    """SET LOCAL: the values hold in the batch's transaction only; a positive timeout is never
    rounded down to 0 (no timeout at all)."""
    settings = "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"

    async def go(pg_url: str) -> tuple[Any, Any, Any]:
        async with Database(resolve_url(pg_url)) as db:
            async with db.writing(lock_timeout=lock_timeout) as conn:
                inside = tuple((await conn.fetch(settings, ()))[0])
            async with db.writing() as conn:
                after = tuple((await conn.fetch(settings, ()))[0])
            async with db.reading() as conn:
                reading = tuple((await conn.fetch(settings, ()))[0])
        return inside, after, reading

    with empty_database() as pg_url:
        inside, after, reading = asyncio.run(go(pg_url))
    assert inside == expected
    assert after == reading == ("0", "0")  # the server's defaults


@pytest.mark.parametrize("_", [pytest.param("postgresql", marks=needs_server)])
def test_connections_show_what_they_are_doing_in_pg_stat_activity(_: str) -> None:
    """``backfill`` by default, the name given within ``named``, on every connection checked out
    then, as another session sees it in pg_stat_activity."""
    me = "SELECT current_setting('application_name'), pg_backend_pid()"
    seen = "SELECT application_name FROM pg_stat_activity WHERE pid = $1"

    async def go(pg_url: str) -> list[str]:
        names = []
        observer = await asyncpg.connect(pg_url)
        try:
            async with Database(resolve_url(pg_url)) as db:
                async with db.sqlalchemy() as sa:
                    names.append((await sa.exec_driver_sql(me)).one()[0])
                with db.named("backfill:test_features"):
                    async with db.writing(lock_timeout=1) as conn:
                        name, pid = (await conn.fetch(me, ()))[0]
                        names += [name, await observer.fetchval(seen, pid)]
                    async with db.reading() as conn:
                        names.append((await conn.fetch(me, ()))[0][0])
                    async with db.sqlalchemy(write=True) as sa:
                        names.append((await sa.exec_driver_sql(me)).one()[0])
                async with db.writing() as conn:
                    names.append((await conn.fetch(me, ()))[0][0])
        finally:
            await observer.close()
        return names

    with empty_database() as pg_url:
        names = asyncio.run(go(pg_url))
    assert names == ["backfill", *["backfill:test_features"] * 4, "backfill"]


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(retries=10, first=0.1, cap=2.0)
    lowest = [backoff.delay(n, lambda: 0.0) for n in range(1, 8)]
    highest = [backoff.delay(n, lambda: 0.999999) for n in range(1, 8)]
    assert lowest == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert highest == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0], rel=1e-5)
    assert all(lo <= backoff.delay(n) <= hi for n, lo, hi in zip(range(1, 8), lowest, highest, strict=True))


def _conflict() -> LockConflict:
    return LockConflict("could not write to db: canceling statement due to lock timeout", "lock timeout")


def test_a_conflict_is_tried_again_after_a_wait_and_told_of() -> None:
    waits: list[float] = []
    told: list[tuple[int, float]] = []
    tries: list[int] = []

    async def attempt(retries: int) -> str:
        tries.append(retries)
        if retries < 2:
            raise _conflict()
        return "done"

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    result = asyncio.run(
        with_retries(
            attempt,
            Backoff(3),
            conflicted=lambda e, n, delay: told.append((n, delay)),
            what="x: a batch",
            sleep=sleep,
        )
    )
    assert result == "done" and tries == [0, 1, 2]
    assert told == [(1, waits[0]), (2, waits[1])]


@pytest.mark.parametrize("retries", [0, 2])
def test_spent_retries_end_the_run_saying_which_lock_and_what_to_do(retries: int) -> None:
    async def attempt(_retries: int) -> None:
        raise _conflict()

    async def sleep(_seconds: float) -> None:
        pass

    with pytest.raises(DatabaseUnavailable) as caught:
        asyncio.run(
            with_retries(
                attempt,
                Backoff(retries),
                conflicted=lambda *_: None,
                what="test_features: the batch of keys 1 to 10",
                sleep=sleep,
            )
        )
    message = str(caught.value)
    assert not isinstance(caught.value, LockConflict)  # nothing above tries it again
    tries = f"on {retries + 1} tries" if retries else "on its only try (--lock-retries 0)"
    batch = "test_features: the batch of keys 1 to 10"
    assert f"{batch} gave way to another transaction's lock {tries}" in message
    assert "(the last: lock timeout): could not write to db: canceling statement due to lock" in message
    assert "none of its rows is recorded as failed" in message
    assert "run the same command to resume" in message and "--lock-retries" in message
