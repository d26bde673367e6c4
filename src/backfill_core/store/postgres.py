"""The PostgreSQL adapter: SQLAlchemy's AsyncConnection on the asyncpg driver."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backfill_core.store.connection import Fatal, LockConflict, RowsRefused, translated
from backfill_core.store.statements import KeyLookup, RowWrites, Statements

ARRAY_TYPES = """
SELECT a.attname, format_type(t.typarray, -1)
FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = CAST($1 AS regclass) AND a.attnum > 0 AND NOT a.attisdropped AND t.typarray <> 0
"""
"""Each column of a table (named as a query names it, quoted if need be) and the type of an array
of its values, as SQL names it (``integer[]``). A type modifier of -1 names the type without one,
in a form SQL reads back as such (``bpchar[]``, not ``character[]``, which is
``character(1)[]``), so that a cast to it never cuts a value short or rounds it."""


ARRAY_WRITTEN = frozenset(
    (
        "smallint[]",
        "integer[]",
        "bigint[]",
        "boolean[]",
        "text[]",
        "character varying[]",
        "real[]",
        "double precision[]",
        "numeric[]",
        "date[]",
        "timestamp without time zone[]",
        "timestamp with time zone[]",
        "uuid[]",
    )
)
"""The array types (see ARRAY_TYPES) of the columns that rows are written to as arrays (see
``Statements.array_write``): types whose values the driver sends as it sends one value, and that
compare equal on the server only when they do in Python (not ``bpchar``, ``citext`` or JSON), so
that a batch's distinct keys stay distinct."""
CLIENT_SIDE = "22000"
"""The SQLSTATE of asyncpg's error for a value it cannot send (``invalid input for query
argument``), raised before anything is sent: the transaction goes on."""
CONFLICTS = {"55P03": "lock timeout", "40P01": "deadlock", "40001": "serialization failure"}
"""The SQLSTATEs of a transaction that gave way to another's lock, and what each is called."""
STATEMENT_TIMEOUT = 300.0
"""Seconds a statement of a batch may run (``statement_timeout``), or twice the lock timeout if
that is longer: far beyond any healthy batch's statement (at most 5,000 keys looked up, or one
batch's rows written), so that it only ends a statement the server cannot get through."""
TIMEOUTS = "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)"
NAMED = "SELECT set_config('application_name', $1, false)"
PING_AFTER = 1.0
"""Seconds a pooled connection may sit idle before it is pinged as it is checked out again: one
that was in use a moment ago is taken as alive, which spares a batch's connections a round trip
on every checkout; one the server or the network may have dropped meanwhile is replaced."""
READ_ONLY = {"default_transaction_read_only": "on"}
"""The session setting of a read-only database's connections (``server_settings``): every
transaction, including a statement run outside one, is read-only."""


def statement_timeout(lock_timeout: float) -> float:
    """The ``statement_timeout`` of a batch whose ``lock_timeout`` is ``lock_timeout`` seconds."""
    return max(STATEMENT_TIMEOUT, 2 * lock_timeout)


def milliseconds(seconds: float) -> str:
    """``seconds`` as a PostgreSQL setting in whole milliseconds, rounded up: a positive timeout
    never becomes 0, which PostgreSQL reads as no timeout at all."""
    return f"{math.ceil(seconds * 1000)}ms"


def _translated(
    error: exc.DBAPIError | OverflowError,
    action: str,
    fatal: Fatal,
    statement: str = "",
    *,
    write: bool = False,
) -> Exception:
    """``translated``, and LockConflict for a transaction that gave way to another's lock. A
    ``write``'s data exception (SQLSTATE class 22: a value too long or out of range for its
    column, or one the driver cannot send for its type) is RowsRefused, as SQLite's DataError is."""
    orig = getattr(error, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or ""
    cause = CONFLICTS.get(sqlstate)
    if cause is not None:
        return LockConflict(str(fatal(error, action, statement)), cause)
    if write and sqlstate.startswith("22"):
        return RowsRefused(str(orig).strip())
    return translated(error, action, fatal, statement)


class PostgresConnection:
    """A batch's transaction on a pooled asyncpg connection; ``action`` words its failures."""

    __slots__ = ("_action", "_adapter", "_conn")

    def __init__(self, conn: AsyncConnection, adapter: PostgresAdapter, action: str) -> None:
        self._conn, self._adapter, self._action = conn, adapter, action

    async def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """The rows of ``sql``; a composite-key lookup runs with one array of values per key
        column (see ``Statements.array_lookup``), typed as its column is."""
        try:
            if isinstance(sql, KeyLookup):
                types = await self._adapter.array_types(self._conn, sql.table)
                if all(c in types for c in sql.key_cols):  # else (no array type) the list of row values
                    arrays = tuple(types[c] for c in sql.key_cols)
                    array_sql = self._adapter.statements.array_lookup(
                        sql.table, sql.columns, sql.key_cols, arrays, sql.order_by
                    )
                    width = len(arrays)
                    columns = tuple(list(params[i::width]) for i in range(width))
                    return (await self._conn.exec_driver_sql(array_sql, columns)).all()
            return (await self._conn.exec_driver_sql(sql, tuple(params))).all()
        except (exc.DBAPIError, OverflowError) as e:
            raise _translated(e, self._action, self._adapter.fatal, sql) from e

    async def fetch_source(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """As :meth:`fetch`: PostgreSQL refuses text that is not valid in the database's encoding
        on input, so every value it returns decodes."""
        return await self.fetch(sql, params)

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        try:
            await self._conn.exec_driver_sql(str(sql), tuple(params))  # a RowWrites too
        except (exc.DBAPIError, OverflowError) as e:
            raise _translated(e, self._action, self._adapter.fatal, write=True) from e

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run ``sql`` once per row; a write of many rows runs as one statement with an array of
        values per column (``Statements.array_write``) where the columns' types allow it."""
        try:
            if isinstance(sql, RowWrites) and len(rows) > 1 and await self._as_arrays(sql, rows):
                return
            await self._conn.exec_driver_sql(str(sql), [tuple(r) for r in rows])  # asyncpg takes a str
        except (exc.DBAPIError, OverflowError) as e:
            raise _translated(e, self._action, self._adapter.fatal, write=True) from e

    async def _as_arrays(self, write: RowWrites, rows: Sequence[Sequence[Any]]) -> bool:
        """Write ``rows`` with one statement; False if their columns' types do not allow it, or a
        value cannot be sent as an array's (the rows written one by one then say which)."""
        types = await self._adapter.array_types(self._conn, write.table)
        arrays = tuple(types.get(c, "") for c in write.params)
        if not ARRAY_WRITTEN.issuperset(arrays):
            return False
        sql = self._adapter.statements.array_write(write, arrays)
        try:
            await self._conn.exec_driver_sql(sql, tuple(map(list, zip(*rows, strict=True))))
        except exc.DBAPIError as e:
            if getattr(e.orig, "sqlstate", None) == CLIENT_SIDE:
                return False
            raise
        return True

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        try:
            async with self._conn.begin_nested():
                yield
        except exc.DBAPIError as e:  # of the savepoint's own statements: the block's are translated
            raise _translated(e, self._action, self._adapter.fatal) from e


class PostgresAdapter:
    """A PostgreSQL database through ``engine`` (SQLAlchemy on asyncpg); read-only when asked."""

    def __init__(self, engine: AsyncEngine, *, read_only: bool, fatal: Fatal, application_name: str) -> None:
        self._engine = engine
        self.fatal = fatal
        self.application_name = application_name
        """What ``pg_stat_activity`` shows for this process's connections: each takes it on
        when it is next checked out of the pool."""
        self._statements: Statements | None = None
        self._array_type_cache: dict[str, dict[str, str]] = {}
        event.listen(engine.sync_engine.pool, "checkout", self._checkout)
        event.listen(engine.sync_engine.pool, "checkin", _checked_in)

    def _checkout(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        """Ping a connection that was idle for more than PING_AFTER seconds (a dead one is
        replaced by the pool), then give it this process's application_name."""
        idle = time.monotonic() - record.info.get("checked_in", math.inf)
        if idle > PING_AFTER:
            try:
                dbapi_connection.run_async(lambda raw: raw.execute(";"))
            except Exception as e:
                raise exc.DisconnectionError(f"a pooled connection did not answer: {e}") from e
        self._name(dbapi_connection, record)

    def _name(self, dbapi_connection: Any, record: Any) -> None:
        """Give a connection being checked out this process's application_name, if it has another.

        Set for the session, outside any transaction, so a rollback does not undo it; a
        connection that cannot take it fails its first statement instead, with a message.
        """
        name = self.application_name
        if record.info.get("application_name") == name:
            return
        with contextlib.suppress(Exception):
            dbapi_connection.run_async(lambda raw: raw.execute(NAMED, name))
            record.info["application_name"] = name

    def engine(self, *, write: bool) -> AsyncEngine:
        """The engine, for SQLAlchemy-level work; one serves reads and writes alike."""
        return self._engine

    @property
    def statements(self) -> Statements:
        if self._statements is None:
            self._statements = Statements(self._engine.sync_engine.dialect)
        return self._statements

    @asynccontextmanager
    async def writing(self, *, lock_timeout: float | None = None) -> AsyncIterator[PostgresConnection]:
        """One write transaction: committed on success, else rolled back. With ``lock_timeout``
        (seconds; 0: none), a batch's: its lock waits and statements are bounded (``SET LOCAL``)."""
        try:
            async with self._engine.begin() as conn:
                if lock_timeout is not None:
                    bounds = (milliseconds(lock_timeout), milliseconds(statement_timeout(lock_timeout)))
                    await conn.exec_driver_sql(TIMEOUTS, bounds)
                yield PostgresConnection(conn, self, "write to")
        except exc.DBAPIError as e:  # of connecting, beginning or committing
            raise _translated(e, "write to", self.fatal) from e

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[PostgresConnection]:
        """A connection for a batch's reads, each statement on its own (autocommit): no BEGIN
        or ROLLBACK around them."""
        try:
            async with self._engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                yield PostgresConnection(conn, self, "read from")
        except exc.DBAPIError as e:
            raise _translated(e, "read from", self.fatal) from e

    def translated(self, error: exc.DBAPIError, action: str) -> Exception:
        """What an error of SQLAlchemy-level work becomes (see ``Database.sqlalchemy``)."""
        return _translated(error, action, self.fatal)

    async def array_types(self, conn: AsyncConnection, table: str) -> Mapping[str, str]:
        """The array type of each column of ``table`` (see ARRAY_TYPES), read once per run."""
        found = self._array_type_cache.get(table)
        if found is None:
            quoted = self._engine.sync_engine.dialect.identifier_preparer.quote(table)
            rows: Sequence[Sequence[Any]] = (await conn.exec_driver_sql(ARRAY_TYPES, (quoted,))).all()
            found = self._array_type_cache[table] = {str(r[0]): str(r[1]) for r in rows}
        return found

    async def close(self) -> None:
        await self._engine.dispose()


def _checked_in(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()
