"""The SQLite adapter: every detail of the sqlite3 and aiosqlite drivers.

A batch runs on a stdlib sqlite3 connection used from the event loop's own thread: its statements
run back to back, with no hand-off to a driver thread per statement (that hand-off, and
SQLAlchemy's statement handling around it, cost several times SQLite's own work). A signal is
handled between batches. SQLAlchemy-level work (schema inspection, the ledger's start and finish,
validation) goes through aiosqlite engines.

The file must exist (it is never created), a read-only database opens it read-only, every
connection waits up to the busy timeout for other writers, and write transactions start with
``BEGIN IMMEDIATE`` so a batch never fails half-way on a lock upgrade.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from sqlalchemy import event, exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backfill_core.store.connection import Fatal, LockConflict, RowsRefused, translated
from backfill_core.store.encoding import fetch_rows

REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, OverflowError)
"""The errors of rows SQLite will not take; OverflowError is the sqlite3 module refusing an
integer beyond 64 bits."""
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
WAL_FILES = ("-wal", "-shm")
BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
"""The result codes (primary, as ``& 0xFF`` gives them) of a statement that gave way to another
connection's lock, here only once the busy timeout has passed."""


def is_locked(error: BaseException | None) -> bool:
    """Whether ``error`` is SQLite's ``database is locked`` (or ``… table is locked``)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in BUSY
    return isinstance(error, sqlite3.OperationalError) and "is locked" in str(error)


def uri(path: str, *, read_only: bool) -> str:
    """The URI that opens the existing file at ``path``, read-only or read-write, never creating it."""
    return f"file:{quote(path)}?mode={'ro' if read_only else 'rw'}"


def connect(path: str, *, read_only: bool, timeout: float) -> sqlite3.Connection:
    """A sqlite3 connection to the file at ``path`` that leaves transactions to its user (no
    implicit BEGIN) and waits up to ``timeout`` seconds for another writer's lock."""
    return sqlite3.connect(uri(path, read_only=read_only), uri=True, timeout=timeout, isolation_level=None)


def hot_journal(path: str) -> bool:
    """Whether the rollback journal of the database at ``path`` may hold a transaction to roll
    back: it begins with the journal header (a persisted journal between transactions has a
    zeroed one)."""
    try:
        with open(f"{path}-journal", "rb") as f:
            return f.read(len(JOURNAL_MAGIC)) == JOURNAL_MAGIC
    except OSError:
        return False


class SQLiteConnection:
    """A batch's transaction on the sqlite3 connection; ``action`` words its failures."""

    __slots__ = ("_action", "_con", "_fatal")

    def __init__(self, con: sqlite3.Connection, action: str, fatal: Fatal) -> None:
        self._con, self._action, self._fatal = con, action, fatal

    def _translated(self, error: sqlite3.Error | OverflowError, statement: str = "") -> Exception:
        if isinstance(error, REFUSED):
            return RowsRefused(str(error).strip())
        if is_locked(error):
            return LockConflict(str(self._fatal(error, self._action, statement)), "database is locked")
        return self._fatal(error, self._action, statement)

    def run(self, sql: str) -> None:
        """Run a statement without parameters (BEGIN, COMMIT, SAVEPOINT…)."""
        try:
            self._con.execute(sql)
        except (sqlite3.Error, OverflowError) as e:
            raise self._translated(e) from e

    async def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        try:
            return self._con.execute(sql, params).fetchall()
        except (sqlite3.Error, OverflowError) as e:
            raise self._translated(e, sql) from e

    async def fetch_source(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        try:
            return fetch_rows(self._con, sql, params)
        except (sqlite3.Error, OverflowError) as e:
            raise self._translated(e, sql) from e

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        try:
            self._con.execute(sql, params)
        except (sqlite3.Error, OverflowError) as e:
            raise self._translated(e) from e

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self._con.executemany(sql, rows)
        except (sqlite3.Error, OverflowError) as e:
            raise self._translated(e) from e

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self.run("SAVEPOINT batch")
        try:
            yield
        except BaseException:
            self.run("ROLLBACK TO batch")
            self.run("RELEASE batch")
            raise
        self.run("RELEASE batch")


class SQLiteAdapter:
    """The SQLite file at ``path``: its aiosqlite engines and the sqlite3 connection for batches."""

    def __init__(self, url: URL, path: str, *, read_only: bool, timeout: float, fatal: Fatal) -> None:
        self.path, self.read_only, self.timeout = path, read_only, timeout
        self._fatal = fatal
        url = url.set(database=uri(path, read_only=read_only), query={"uri": "true"})
        args = {"timeout": timeout, "check_same_thread": False}
        self._reader = create_async_engine(url, connect_args=args)
        self._writer = create_async_engine(url, connect_args=args)
        for engine, begin in ((self._reader, "BEGIN"), (self._writer, "BEGIN IMMEDIATE")):
            _sqlite_transactions(engine, begin)
        self._con: sqlite3.Connection | None = None
        self._writing: SQLiteConnection | None = None
        self._reading: SQLiteConnection | None = None
        self._journal_persisted = False
        # Whether the WAL's files were there before this process opened the file (see close).
        self._wal_found = any(os.path.exists(f"{path}{suffix}") for suffix in WAL_FILES)

    def engine(self, *, write: bool) -> AsyncEngine:
        """The aiosqlite engine for SQLAlchemy-level reads, or write transactions."""
        return self._writer if write else self._reader

    def translated(self, error: exc.DBAPIError, action: str) -> Exception:
        """What an error of SQLAlchemy-level work (the aiosqlite engines) becomes."""
        if is_locked(error.orig):
            return LockConflict(str(self._fatal(error, action)), "database is locked")
        return translated(error, action, self._fatal)

    @asynccontextmanager
    async def writing(self, *, lock_timeout: float | None = None) -> AsyncIterator[SQLiteConnection]:
        """One write transaction (``BEGIN IMMEDIATE``): committed on success, else rolled back.
        A lock is waited for up to the busy timeout; ``lock_timeout`` is PostgreSQL's."""
        self._open()
        assert self._writing is not None
        async with self._transaction(self._writing, "BEGIN IMMEDIATE") as conn:
            yield conn

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[SQLiteConnection]:
        """One read transaction: its statements see one state of the database."""
        self._open()
        assert self._reading is not None
        async with self._transaction(self._reading, "BEGIN") as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self, conn: SQLiteConnection, begin: str) -> AsyncIterator[SQLiteConnection]:
        con = self._con
        assert con is not None
        conn.run(begin)
        try:
            yield conn
            conn.run("COMMIT")
        except BaseException:
            if con.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                    con.execute("ROLLBACK")
            raise

    def _open(self) -> None:
        if self._con is not None:
            return
        try:
            con = connect(self.path, read_only=self.read_only, timeout=self.timeout)
            if not self.read_only:
                self._persist_journal(con)
        except sqlite3.Error as e:
            raise self._fatal(e, "connect to") from e
        self._con = con
        self._writing = SQLiteConnection(con, "write to", self._fatal)
        self._reading = SQLiteConnection(con, "read from", self._fatal)

    def _persist_journal(self, con: sqlite3.Connection) -> None:
        """Keep this connection's rollback journal between batches instead of deleting it.

        Creating and deleting the journal file cost about a quarter of each small commit. PERSIST
        is as safe (the journal's header is zeroed instead) and applies to this connection only;
        :meth:`close` goes back to DELETE, which removes the file. Other modes (WAL) are left alone.
        """
        (mode,) = con.execute("PRAGMA journal_mode").fetchone()
        if mode == "delete":
            con.execute("PRAGMA journal_mode = PERSIST")
            self._journal_persisted = True

    async def close(self) -> None:
        if self._con is not None:
            if self._journal_persisted:
                with contextlib.suppress(sqlite3.Error):  # else a zeroed journal stays: harmless
                    self._con.execute("PRAGMA journal_mode = DELETE")
                self._journal_persisted = False
            self._con.close()
            self._con = self._writing = self._reading = None
        for engine in (self._reader, self._writer):
            await engine.dispose()
        if self.read_only and not self._wal_found:
            self._remove_wal()

    def _remove_wal(self) -> None:
        """Have SQLite remove the -wal and -shm files that this read-only process made it create.

        On a WAL file the connection that closes last checkpoints the WAL and removes both files,
        but a read-only one cannot, so they would stay. A connection that may write, opened for one
        read and closed, does it as SQLite always does: only when no other connection has the file
        open (then the WAL holds nothing this process wrote, and the file is left byte for byte as
        it was). Where the file cannot be written, they stay.
        """
        if not any(os.path.exists(f"{self.path}{suffix}") for suffix in WAL_FILES):
            return
        with contextlib.suppress(sqlite3.Error):
            con = connect(self.path, read_only=False, timeout=self.timeout)
            try:
                con.execute("PRAGMA schema_version").fetchone()
            finally:
                con.close()


def _sqlite_transactions(engine: AsyncEngine, begin: str) -> None:
    """Let SQLAlchemy, not the sqlite3 module, decide when transactions start."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)
