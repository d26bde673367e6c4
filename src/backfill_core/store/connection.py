"""What the engine runs a batch's statements on, and the errors that come out of it.

Each database has its adapter (``sqlite.py``, ``postgres.py``) that owns its driver's details and
hands out a :class:`Connection`; a driver's error leaves the adapter as :class:`RowsRefused` when
the rows written are to blame, as :class:`LockConflict` when another transaction's lock is, and as
the run-ending :class:`~backfill_core.errors.DatabaseUnavailable` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy import exc

from backfill_core.errors import DatabaseUnavailable


class Fatal(Protocol):
    """The run-ending error for a driver's error, what was being done (``write to``) and the
    statement that failed, if any, as :meth:`Database.fatal
    <backfill_core.store.database.Database.fatal>` words it."""

    def __call__(self, error: BaseException, action: str, statement: str = "") -> DatabaseUnavailable: ...


class RowsRefused(Exception):
    """The database refused the rows written: a constraint, or a value of the wrong type or too
    big for its column. Writing the rows apart finds the ones to blame; ``message`` is the
    driver's."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LockConflict(DatabaseUnavailable):
    """The transaction gave way to another's lock: a lock timeout, a deadlock or a serialization
    failure on PostgreSQL, ``database is locked`` past the busy timeout on SQLite. The transaction
    is rolled back; the same work may succeed when tried again. ``cause`` names the conflict
    (``lock timeout``); the message is the run-ending one, for when it is not tried again."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class Connection(Protocol):
    """One transaction's connection for a batch's driver-level SQL (see statements.py)."""

    async def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """The rows of ``sql`` run with ``params``."""
        ...

    async def fetch_source(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """The source rows of ``sql``, where a value that cannot be decoded as text does not fail
        the read: on SQLite, such a page comes back as ``encoding.Salvaged`` rows holding
        ``encoding.Undecodable`` values (PostgreSQL refuses such text on input)."""
        ...

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        """Run ``sql`` once with ``params``."""
        ...

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run ``sql`` once per row of parameters."""
        ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A savepoint in the transaction: rolled back to if the block raises."""
        ...


def translated(
    error: exc.DBAPIError | OverflowError, action: str, fatal: Fatal, statement: str = ""
) -> Exception:
    """What an error SQLAlchemy (or its driver) raised becomes: RowsRefused when the rows are to
    blame, else the run-ending error for ``action`` (running ``statement``, if given)."""
    if isinstance(error, exc.IntegrityError | exc.DataError | OverflowError):
        return RowsRefused(str(getattr(error, "orig", None) or error).strip())
    return fatal(error, action, statement)
