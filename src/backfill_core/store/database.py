"""The target database: its URL, opening and closing it, its schema, and the words for its failures.

What each database's driver needs is in its adapter (sqlite.py, postgres.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import exc, inspect, text
from sqlalchemy.engine import URL, Connection as SyncConnection, Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from backfill_core.errors import DatabaseUnavailable, SchemaMissing
from backfill_core.store.connection import Connection, RowsRefused
from backfill_core.store.encoding import is_decode_failure
from backfill_core.store.postgres import CONFLICTS, READ_ONLY, PostgresAdapter, statement_timeout
from backfill_core.store.sqlite import SQLiteAdapter, hot_journal
from backfill_core.store.statements import Statements

DATABASE_ENV = "BACKFILL_DATABASE_URL"
BUSY_TIMEOUT_ENV = "BACKFILL_BUSY_TIMEOUT"
DEFAULT_DATABASE = Path("~/.testio-mcp/cache.db")
DEFAULT_BUSY_TIMEOUT = 10.0
APPLICATION_NAME = "backfill"
"""What ``pg_stat_activity`` shows for a backfill connection doing nothing more specific."""
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
    """The target database: its URL, its adapter (see sqlite.py and postgres.py), its schema.

    A batch's statements run on a :class:`~backfill_core.store.connection.Connection` from
    :meth:`writing` or :meth:`reading`; SQLAlchemy Core statements and schema inspection run on
    :meth:`sqlalchemy`. A database failure leaves each of them as RowsRefused when the rows
    written are to blame, else as DatabaseUnavailable (see :meth:`fatal`).
    """

    def __init__(
        self, url: URL, *, read_only: bool = False, application_name: str = APPLICATION_NAME
    ) -> None:
        self.url = url
        self.read_only = read_only
        self.is_sqlite = url.get_backend_name() == "sqlite"
        self._adapter: SQLiteAdapter | PostgresAdapter | None = None
        self._statements: Statements | None = None
        self._application_name = application_name

    @contextmanager
    def named(self, application_name: str) -> Iterator[None]:
        """Within the block, this process's PostgreSQL connections show ``application_name``
        (``backfill:test_features``) in ``pg_stat_activity``; SQLite has no such thing."""
        before = self._application_name
        self._set_name(application_name)
        try:
            yield
        finally:
            self._set_name(before)

    def _set_name(self, application_name: str) -> None:
        self._application_name = application_name
        if isinstance(self._adapter, PostgresAdapter):
            self._adapter.application_name = application_name

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def display_url(self) -> str:
        """The URL as it may be printed: never with its password."""
        return display(self.url)

    @property
    def sa_dialect(self) -> Dialect:
        """SQLAlchemy's dialect, with the server version known once the database is open."""
        return self._open_adapter().engine(write=False).sync_engine.dialect

    @property
    def statements(self) -> Statements:
        """SQL text for the statements run per batch, in this database's dialect."""
        if self._statements is None:
            self._statements = Statements(self.sa_dialect)
        return self._statements

    async def __aenter__(self) -> Database:
        self._adapter = self._sqlite() if self.is_sqlite else self._postgres()
        try:
            async with self._adapter.engine(write=False).connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as e:
            await self.close()
            raise self.fatal(e, "connect to") from e
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._adapter is not None:
            adapter, self._adapter = self._adapter, None
            await adapter.close()

    def _sqlite(self) -> SQLiteAdapter:
        path = self.url.database
        if not path or path == ":memory:":
            raise DatabaseUnavailable("an in-memory SQLite database has nothing to backfill")
        if not Path(path).is_file():
            raise DatabaseUnavailable(
                f"database file {path} does not exist; pass --database PATH or set {DATABASE_ENV}"
            )
        return SQLiteAdapter(
            self.url, path, read_only=self.read_only, timeout=busy_timeout(), fatal=self.fatal
        )

    def _postgres(self) -> PostgresAdapter:
        try:
            settings = {"server_settings": READ_ONLY} if self.read_only else {}
            engine = create_async_engine(self.url, connect_args=settings)
        except ModuleNotFoundError as e:
            raise DatabaseUnavailable(
                f"the driver for {self.url.drivername} is not installed ({e.name}); "
                "for PostgreSQL run: pip install 'backfill[postgres]'"
            ) from None
        except exc.ArgumentError as e:
            raise DatabaseUnavailable(f"cannot use database URL {self.display_url}: {e}") from None
        return PostgresAdapter(
            engine, read_only=self.read_only, fatal=self.fatal, application_name=self._application_name
        )

    def _open_adapter(self) -> SQLiteAdapter | PostgresAdapter:
        assert self._adapter is not None, "database is not open"
        return self._adapter

    def writing(self, *, lock_timeout: float | None = None) -> AbstractAsyncContextManager[Connection]:
        """One write transaction for a batch: committed on success, rolled back on any exception.

        With ``lock_timeout`` (seconds, 0 for none), PostgreSQL bounds the transaction's lock waits
        and its statements (``SET LOCAL lock_timeout`` and ``statement_timeout``); SQLite waits
        for a lock up to its busy timeout either way. A transaction that gives way to another's
        lock raises LockConflict.
        """
        return self._open_adapter().writing(lock_timeout=lock_timeout)

    def reading(self) -> AbstractAsyncContextManager[Connection]:
        """One read transaction for a batch's reads (a page, or a dry run's planning)."""
        return self._open_adapter().reading()

    @asynccontextmanager
    async def sqlalchemy(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A SQLAlchemy connection for Core statements and schema inspection: with ``write``, in
        one write transaction, committed on success and rolled back on any exception; else for
        reads, its transaction rolled back at the end. A transaction that gives way to another's
        lock raises LockConflict, which a caller may try again."""
        adapter = self._open_adapter()
        engine = adapter.engine(write=write)
        action = "write to" if write else "read from"
        opened = engine.begin() if write else engine.connect()
        try:
            async with opened as conn:
                yield conn
        except exc.DBAPIError as e:
            raise adapter.translated(e, action) from e

    async def check_schema(self, needed: Mapping[str, Iterable[str]]) -> None:
        """Raise SchemaMissing naming the first table or column of ``needed`` that does not exist."""
        gap = await self.schema_gap(needed)
        if gap is not None:
            raise gap.error(self.display_url)

    async def schema_gap(self, needed: Mapping[str, Iterable[str]]) -> SchemaGap | None:
        """The first table of ``needed`` that does not exist, or lacks some of its columns."""
        try:
            async with self.sqlalchemy() as conn:
                found = await conn.run_sync(_columns_of, list(needed))
        except RowsRefused as e:
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

    def fatal(self, error: BaseException, action: str, statement: str = "") -> DatabaseUnavailable:
        """The run-ending error for a database failure that retrying a batch cannot fix, running
        ``statement`` when one is known."""
        text = str(getattr(error, "orig", None) or error)
        lowered = text.lower()
        state = getattr(getattr(error, "orig", None), "sqlstate", None) or getattr(error, "sqlstate", None)
        if is_decode_failure(getattr(error, "orig", None) or error):
            hint = (
                "a row it read holds TEXT that is not valid UTF-8; correct or remove that value, "
                "then run the same command to resume; committed batches are kept"
            )
        elif state == "3D000":  # invalid_catalog_name: the database in the URL is not on the server
            hint = (
                f"the database {self.url.database!r} named in the URL does not exist on that server; "
                f"create it (`createdb {self.url.database}`) and the application's tables, or fix the URL"
            )
        elif state == "28000" and "role" in lowered:  # the URL's user is not on the server
            hint = "the user named in the URL does not exist on that server; fix the URL or create the role"
        elif state in CONFLICTS:
            hint = (
                f"a {CONFLICTS[state]}: another transaction holds locks this one needs; "
                "pg_stat_activity and pg_locks show which"
            )
        elif state == "57014" and "statement timeout" in lowered:
            hint = (
                "a statement of the batch ran longer than the statement timeout "
                f"({statement_timeout(0):g}s, or twice --lock-timeout); the server is overloaded or "
                "the batch too big: lower --batch-size"
            )
        elif "locked" in lowered:
            hint = (
                f"another process held a lock for more than {busy_timeout():g}s; retry when it "
                f"is done, or raise {BUSY_TIMEOUT_ENV}"
            )
        elif "disk is full" in lowered or "no space" in lowered:
            hint = "the disk is full; free space and run again (committed batches are kept)"
        elif self.read_only and self.is_sqlite and hot_journal(self.url.database or ""):
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
        elif statement:
            hint = "the database refused that statement; its message above says why"
        else:
            hint = "check that the database is reachable and the URL is right"
        failed = f", running `{shorten(statement)}`" if statement else ""
        return DatabaseUnavailable(f"could not {action} {self.display_url}: {text.strip()}{failed} ({hint})")


def shorten(statement: str, width: int = 300) -> str:
    """``statement`` on one line, cut to ``width`` characters, as a message shows it."""
    line = re.sub(r"\?(, \?)+", "?, …", " ".join(statement.split()))
    return line if len(line) <= width else line[: width - 1] + "…"


def _columns_of(sync_conn: SyncConnection, names: list[str]) -> dict[str, set[str] | None]:
    inspector = inspect(sync_conn)
    return {
        name: {c["name"] for c in inspector.get_columns(name)} if inspector.has_table(name) else None
        for name in names
    }
