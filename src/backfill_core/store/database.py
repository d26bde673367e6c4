"""Opening the target database, and every SQLite-specific setting, in one place."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, event, exc, inspect, text
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from backfill_core.errors import DatabaseUnavailable, SchemaMissing
from backfill_core.store.statements import KeyLookup, Statements

BatchConnection = AsyncConnection | sqlite3.Connection
"""What the engine runs a batch's statements on (see Database.batch_transaction)."""
ARRAY_TYPES = """
SELECT a.attname, format_type(t.typarray, -1)
FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = CAST($1 AS regclass) AND a.attnum > 0 AND NOT a.attisdropped AND t.typarray <> 0
"""
"""PostgreSQL: each column of a table (named as a query names it, quoted if need be) and the type
of an array of its values, as SQL names it (``integer[]``). A type modifier of -1 names the type
without one, in a form SQL reads back as such (``bpchar[]``, not ``character[]``, which is
``character(1)[]``), so that a cast to it never cuts a value short or rounds it."""

DATABASE_ENV = "BACKFILL_DATABASE_URL"
BUSY_TIMEOUT_ENV = "BACKFILL_BUSY_TIMEOUT"
DEFAULT_DATABASE = Path("~/.testio-mcp/cache.db")
DEFAULT_BUSY_TIMEOUT = 10.0
ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def resolve_url(database: str | None) -> URL:
    """A SQLAlchemy URL from ``--database``, ``BACKFILL_DATABASE_URL`` or the default cache."""
    raw = database or os.environ.get(DATABASE_ENV) or str(DEFAULT_DATABASE)
    if "://" not in raw:
        return URL.create("sqlite+aiosqlite", database=str(Path(raw).expanduser().resolve()))
    try:
        url = make_url(raw)
    except (exc.ArgumentError, ValueError):
        shown = re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", raw)
        raise DatabaseUnavailable(
            f"cannot parse database URL {shown!r}; use dialect://user:password@host:port/database "
            "or a plain file path"
        ) from None
    backend = url.get_backend_name()
    if backend not in ASYNC_DRIVERS:
        raise DatabaseUnavailable(
            f"backfill works with SQLite and PostgreSQL databases, not {backend!r} ({display(url)})"
        )
    return url.set(drivername=ASYNC_DRIVERS[backend])  # the async driver, whichever one was named


def display(url: URL) -> str:
    """The URL as it may be printed: never with its password."""
    return url.render_as_string(hide_password=True)


@dataclass(frozen=True)
class SchemaGap:
    """The first table or columns that a plugin needs and the database lacks."""

    table: str
    columns: tuple[str, ...] = ()
    """The missing columns; empty when the table itself does not exist."""

    def describe(self, shown: str) -> str:
        if not self.columns:
            return f"table {self.table!r} does not exist in {shown}"
        return f"table {self.table!r} has no column {', '.join(map(repr, self.columns))} in {shown}"

    def error(
        self,
        shown: str,
        *,
        user: str = "",
        uses: str = "reads",
        before: str = "backfilling",
        leave_out: str = "",
    ) -> SchemaMissing:
        """The error that ends the command: what is missing, who needs it (``user``, as
        ``validator 'coverage' (plugin testmanagement)``, which ``uses`` it), and what to do
        ``before`` the command (``validating``) can go on; ``leave_out`` is the other way out when
        a table is missing."""
        fix = "add it" if self.columns else "create it"
        message = f"{self.describe(shown)}; "
        if user:
            message += f"{user} {uses} it. {fix.capitalize()}"
        else:
            message += fix
        message += f" (run the application's migrations) before {before}"
        if leave_out and not self.columns:
            message += f", or, if this database is another application's, {leave_out}"
        return SchemaMissing(message)


def busy_timeout() -> float:
    try:
        return float(os.environ.get(BUSY_TIMEOUT_ENV, DEFAULT_BUSY_TIMEOUT))
    except ValueError:
        return DEFAULT_BUSY_TIMEOUT


class Database:
    """The engines a run uses: one for reading batches, one for write transactions.

    On SQLite the file must exist (it is never created), a dry run opens it read-only, every
    connection waits up to the busy timeout for other writers, and write transactions start
    with ``BEGIN IMMEDIATE`` so a batch never fails half-way on a lock upgrade.
    """

    def __init__(self, url: URL, *, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        self.is_sqlite = url.get_backend_name() == "sqlite"
        self._reader: AsyncEngine | None = None
        self._writer: AsyncEngine | None = None
        self._statements: Statements | None = None
        self._sync: sqlite3.Connection | None = None
        self._journal_persisted = False
        self._array_type_cache: dict[str, dict[str, str]] = {}

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def shown(self) -> str:
        return display(self.url)

    @property
    def sa_dialect(self) -> Dialect:
        """SQLAlchemy's dialect, with the server version known once the database is open."""
        assert self._reader is not None, "database is not open"
        return self._reader.sync_engine.dialect

    @property
    def statements(self) -> Statements:
        """SQL text for the statements run per batch, in this database's dialect."""
        if self._statements is None:
            self._statements = Statements(self.sa_dialect)
        return self._statements

    async def __aenter__(self) -> Database:
        if self.is_sqlite:
            self._reader, self._writer = self._sqlite_engines()
        else:
            self._reader = self._writer = self._server_engine()
        try:
            async with self._reader.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as e:
            await self.close()
            raise self.fatal(e, "connect to") from e
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._sync is not None:
            if self._journal_persisted:
                with contextlib.suppress(sqlite3.Error):  # else a zeroed journal stays: harmless
                    self._sync.execute("PRAGMA journal_mode = DELETE")
                self._journal_persisted = False
            self._sync.close()
            self._sync = None
        for engine in {id(e): e for e in (self._reader, self._writer) if e is not None}.values():
            await engine.dispose()
        self._reader = self._writer = None

    def _sqlite_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        path = self.url.database
        if not path or path == ":memory:":
            raise DatabaseUnavailable("an in-memory SQLite database has nothing to backfill")
        if not Path(path).is_file():
            raise DatabaseUnavailable(
                f"database file {path} does not exist; pass --database PATH or set {DATABASE_ENV}"
            )
        mode = "ro" if self.read_only else "rw"
        url = self.url.set(database=f"file:{quote(path)}?mode={mode}", query={"uri": "true"})
        args = {"timeout": busy_timeout(), "check_same_thread": False}
        reader = create_async_engine(url, connect_args=args)
        writer = create_async_engine(url, connect_args=args)
        for engine, begin in ((reader, "BEGIN"), (writer, "BEGIN IMMEDIATE")):
            _sqlite_transactions(engine, begin)
        return reader, writer

    def _server_engine(self) -> AsyncEngine:
        try:
            engine = create_async_engine(self.url, pool_pre_ping=True)
        except ModuleNotFoundError as e:
            raise DatabaseUnavailable(
                f"the driver for {self.url.drivername} is not installed ({e.name}); "
                "for PostgreSQL run: pip install 'backfill[postgres]'"
            ) from None
        except exc.ArgumentError as e:
            raise DatabaseUnavailable(f"cannot use database URL {self.shown}: {e}") from None
        if self.read_only:
            event.listen(
                engine.sync_engine, "begin", lambda conn: conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            )
        return engine

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; each statement sees the latest committed data.

        A database failure that retrying cannot fix becomes DatabaseUnavailable.
        """
        assert self._reader is not None, "database is not open"
        async with self._fatal_on_failure("read from"), self._reader.connect() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed on success, rolled back on any exception.

        Constraint violations propagate for the caller to isolate; any other database failure
        becomes DatabaseUnavailable.
        """
        assert self._writer is not None, "database is not open"
        async with self._fatal_on_failure("write to"), self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _fatal_on_failure(self, action: str) -> AsyncIterator[None]:
        """Turn a database failure that isolating rows cannot fix into DatabaseUnavailable."""
        try:
            yield
        except exc.DBAPIError as e:
            if is_record_level(e):
                raise
            raise self.fatal(e, action) from e

    # -- the per-batch work: driver-level SQL on a batch connection --------------------------------
    #
    # On SQLite a batch connection is a stdlib sqlite3 connection used from the event loop's own
    # thread: each batch runs its statements back to back, with no hand-off to a driver thread
    # per statement (that hand-off, and SQLAlchemy's statement handling around it, cost several
    # times SQLite's own work). A signal is handled between batches, as before. On PostgreSQL it
    # is an SQLAlchemy AsyncConnection on the asyncpg engine.

    @asynccontextmanager
    async def batch_transaction(self) -> AsyncIterator[BatchConnection]:
        """A write transaction for one batch, as :meth:`transaction`; SQLite's is synchronous."""
        if not self.is_sqlite:
            async with self.transaction() as conn:
                yield conn
            return
        async with self._sqlite_transaction("BEGIN IMMEDIATE", "write to") as con:
            yield con

    @asynccontextmanager
    async def batch_reading(self) -> AsyncIterator[BatchConnection]:
        """A read-only snapshot for planning a dry run's batch."""
        if not self.is_sqlite:
            async with self.reading() as conn:
                yield conn
            return
        async with self._sqlite_transaction("BEGIN", "read from") as con:
            yield con

    @asynccontextmanager
    async def batch_pages(self) -> AsyncIterator[BatchConnection]:
        """A connection for reading one page of source rows, outside any transaction."""
        if not self.is_sqlite:
            async with self.reading() as conn:
                yield conn
            return
        async with self._fatal_on_failure("read from"):
            yield self._sqlite_sync()

    @asynccontextmanager
    async def _sqlite_transaction(self, begin: str, action: str) -> AsyncIterator[sqlite3.Connection]:
        con = self._sqlite_sync()
        async with self._fatal_on_failure(action):
            _sqlite_call(begin, con.execute)
            try:
                yield con
                _sqlite_call("COMMIT", con.execute)
            except BaseException:
                if con.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                        con.execute("ROLLBACK")
                raise

    def _sqlite_sync(self) -> sqlite3.Connection:
        if self._sync is None:
            path = self.url.database or ""
            mode = "ro" if self.read_only else "rw"
            try:
                self._sync = sqlite3.connect(
                    f"file:{quote(path)}?mode={mode}", uri=True, timeout=busy_timeout(), isolation_level=None
                )
                if not self.read_only:
                    self._persist_journal(self._sync)
            except sqlite3.Error as e:
                raise self.fatal(e, "connect to") from e
        return self._sync

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

    async def fetch(self, conn: BatchConnection, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """The rows of driver-level ``sql`` (see statements.py) run on batch connection ``conn``.

        On PostgreSQL a composite-key lookup runs with one array of values per key column (see
        ``Statements.array_lookup``), typed as its column is.
        """
        if isinstance(conn, sqlite3.Connection):
            return _sqlite_call(sql, _fetchall, conn, params)  # type: ignore[no-any-return]
        if isinstance(sql, KeyLookup):
            types = await self._array_types(conn, sql.table)
            if all(c in types for c in sql.key_cols):  # else (no array type) the list of row values
                arrays = tuple(types[c] for c in sql.key_cols)
                array_sql = self.statements.array_lookup(
                    sql.table, sql.columns, sql.key_cols, arrays, sql.order_by
                )
                width = len(arrays)
                columns = tuple(list(params[i::width]) for i in range(width))
                return (await conn.exec_driver_sql(array_sql, columns)).all()
        return (await conn.exec_driver_sql(sql, tuple(params))).all()

    async def _array_types(self, conn: AsyncConnection, table: str) -> Mapping[str, str]:
        """The array type of each column of ``table`` (see ARRAY_TYPES), read once per run."""
        found = self._array_type_cache.get(table)
        if found is None:
            quoted = self.sa_dialect.identifier_preparer.quote(table)
            rows: Sequence[Sequence[Any]] = (await conn.exec_driver_sql(ARRAY_TYPES, (quoted,))).all()
            found = self._array_type_cache[table] = {str(r[0]): str(r[1]) for r in rows}
        return found

    async def execute(self, conn: BatchConnection, sql: str, params: Sequence[Any]) -> None:
        """Run driver-level ``sql`` once, on batch connection ``conn``."""
        await self.execute_many(conn, sql, [params])

    async def execute_many(self, conn: BatchConnection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run driver-level ``sql`` once per row of parameters, on batch connection ``conn``."""
        if isinstance(conn, sqlite3.Connection):
            _sqlite_call(sql, conn.executemany, rows)
        else:
            await conn.exec_driver_sql(sql, [tuple(r) for r in rows])

    @asynccontextmanager
    async def savepoint(self, conn: BatchConnection) -> AsyncIterator[None]:
        """A savepoint inside ``conn``'s transaction: rolled back to if the block raises."""
        if not isinstance(conn, sqlite3.Connection):
            async with conn.begin_nested():
                yield
            return
        _sqlite_call("SAVEPOINT batch", conn.execute)
        try:
            yield
        except BaseException:
            _sqlite_call("ROLLBACK TO batch", conn.execute)
            _sqlite_call("RELEASE batch", conn.execute)
            raise
        _sqlite_call("RELEASE batch", conn.execute)

    async def check_schema(self, needed: Mapping[str, Iterable[str]]) -> None:
        """Raise SchemaMissing naming the first table or column of ``needed`` that does not exist."""
        gap = await self.schema_gap(needed)
        if gap is not None:
            raise gap.error(self.shown)

    async def schema_gap(self, needed: Mapping[str, Iterable[str]]) -> SchemaGap | None:
        """The first table of ``needed`` that does not exist, or lacks some of its columns."""
        try:
            async with self.reading() as conn:
                found = await conn.run_sync(_columns_of, list(needed))
        except exc.DBAPIError as e:
            raise self.fatal(e, "read the schema of") from e
        for name, columns in needed.items():
            have = found[name]
            if have is None:
                return SchemaGap(name)
            missing = tuple(dict.fromkeys(c for c in columns if c not in have))
            if missing:
                return SchemaGap(name, missing)
        return None

    async def lock(self, conn: AsyncConnection, name: str) -> None:
        """Serialise writers that claim ``name`` until ``conn``'s transaction ends.

        SQLite needs nothing: its write transactions (BEGIN IMMEDIATE) already exclude each other.
        """
        if self.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})

    def fatal(self, error: BaseException, action: str) -> DatabaseUnavailable:
        """The run-ending error for a database failure that retrying a batch cannot fix."""
        text = str(getattr(error, "orig", None) or error)
        lowered = text.lower()
        state = getattr(getattr(error, "orig", None), "sqlstate", None) or getattr(error, "sqlstate", None)
        if state == "3D000":  # invalid_catalog_name: the database in the URL is not on the server
            hint = (
                f"the database {self.url.database!r} named in the URL does not exist on that server; "
                f"create it (`createdb {self.url.database}`) and the application's tables, or fix the URL"
            )
        elif state == "28000" and "role" in lowered:  # the URL's user is not on the server
            hint = "the user named in the URL does not exist on that server; fix the URL or create the role"
        elif "locked" in lowered:
            hint = (
                f"another process held a lock for more than {busy_timeout():g}s; retry when it "
                f"is done, or raise {BUSY_TIMEOUT_ENV}"
            )
        elif "disk is full" in lowered or "no space" in lowered:
            hint = "the disk is full; free space and run again (committed batches are kept)"
        elif self.read_only and self.is_sqlite and _hot_journal(f"{self.url.database}-journal"):
            hint = (
                "a process that was writing to it died and left a hot journal, which only a "
                "connection that may write can roll back: run `backfill status` on it once, then "
                "the dry run"
            )
        elif "readonly" in lowered or "read-only" in lowered:
            hint = "the file is read-only for this user, or was moved or replaced while the run had it open"
        elif "on conflict" in lowered:
            hint = "the key columns of a plugin's Upsert need a PRIMARY KEY or UNIQUE constraint on them"
        elif "no such table" in lowered or "no such column" in lowered or "does not exist" in lowered:
            hint = "a table or column that a plugin reads or references is missing; run the migrations"
        else:
            hint = "check that the database is reachable and the URL is right"
        return DatabaseUnavailable(f"could not {action} {self.shown}: {text.strip()} ({hint})")


def _columns_of(sync_conn: Connection, names: list[str]) -> dict[str, set[str] | None]:
    inspector = inspect(sync_conn)
    return {
        name: {c["name"] for c in inspector.get_columns(name)} if inspector.has_table(name) else None
        for name in names
    }


def _sqlite_transactions(engine: AsyncEngine, begin: str) -> None:
    """Let SQLAlchemy, not the sqlite3 module, decide when transactions start."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


def _sqlite_call(sql: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``sql`` through a sqlite3 call; its errors become SQLAlchemy's (IntegrityError,
    OperationalError, …) as the async engine raises them, so one set of handlers serves both."""
    try:
        return fn(sql, *args)
    except sqlite3.Error as e:
        raise exc.DBAPIError.instance(sql, None, e, sqlite3.Error) from e


JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")


def _hot_journal(path: str) -> bool:
    """Whether a rollback journal at ``path`` may hold a transaction to roll back: it begins with
    the journal header (a persisted journal between transactions has a zeroed one)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(JOURNAL_MAGIC)) == JOURNAL_MAGIC
    except OSError:
        return False


def _fetchall(sql: str, con: sqlite3.Connection, params: Sequence[Any]) -> list[Any]:
    return con.execute(sql, params).fetchall()


def is_record_level(error: BaseException) -> bool:
    """Whether a failed write is caused by the rows written (so isolating them can help).

    OverflowError is the sqlite3 module refusing an integer beyond 64 bits.
    """
    return isinstance(error, exc.IntegrityError | exc.DataError | OverflowError)
