"""Extraction in a worker process: it reads and extracts the next pages while this process writes.

Extractors are pure functions of a row, so a forked copy of the process can run them: a
``ProcessPoolExecutor`` (fork context, one process) is asked for the next pages of key ranges;
the worker reads each on its own read-only connection (SQLite or PostgreSQL), extracts it and
returns the :class:`~backfill_core.engine.batch.Batch` (or, when this process is waiting for it,
the unchecked :class:`~backfill_core.engine.batch.Extracts`, which this process converts: the
checking goes to whichever process has time for it). This process plans and writes each batch
in its own transaction, in key order, as it does with batches it extracts itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import multiprocessing
import os
import pickle
import signal
import sqlite3
import sys
import threading
import traceback
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import util
from typing import Any

from sqlalchemy.engine import URL

from backfill_core.engine.batch import Batch, Converter, Extracts, UndecodableKey
from backfill_core.engine.collector import GC_THRESHOLD
from backfill_core.engine.sources import Work, count_rows, page_end, page_sql
from backfill_core.errors import BackfillError
from backfill_core.store.database import Database
from backfill_core.store.encoding import fetch_rows
from backfill_core.store.records import ErrorRecord, KeyRange
from backfill_core.store.sqlite import connect

AHEAD = 2
"""Pages the worker may read and extract before this process takes them."""
PR_SET_PDEATHSIG = 1


class WorkerFailed(BackfillError):
    """The worker process died or failed; committed batches are kept."""


class _ExtractorCrashed(Exception):
    """``extract`` raised what is not an Exception in the worker (its report is the message)."""


def can_fork() -> bool:
    """Whether a worker can be forked here: Linux, and no other thread to fork over."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def can_run() -> bool:
    """Whether a worker is worth forking here: it can be, and there are two CPUs or more."""
    return can_fork() and len(os.sched_getaffinity(0)) >= 2


class ExtractionPool:
    """A forked worker process that reads and extracts pages for ``converters`` from
    ``database``, a SQLite file's path or a PostgreSQL URL; :meth:`close` it.

    Start it before opening any database connection or thread: the fork must inherit neither.
    OSError means the system has no process to spare. With ``share``, the worker leaves checking
    its changes to this process while this process waits for it (see _extract_page); one of
    several workers does not, since this process then waits for all of them at once.
    """

    def __init__(
        self, converters: Sequence[Converter], database: str | URL, timeout: float, *, share: bool = True
    ) -> None:
        for stream in (sys.stdout, sys.stderr):  # or the worker would print them again
            stream.flush()
        context = multiprocessing.get_context("fork")
        self.waiting = context.RawValue("b", 0)
        """Whether this process is waiting for the worker's next page (see _extract_page)."""
        self.share = share
        self._executor = ProcessPoolExecutor(
            1,
            mp_context=context,
            initializer=_start,
            initargs=({x.name: x for x in converters}, database, timeout, os.getpid(), self.waiting),
        )
        self._converters = {x.name: x for x in converters}
        try:
            self.pid: int = self._executor.submit(os.getpid).result()
        except BrokenProcessPool as e:
            raise OSError(f"the extraction worker did not start: {e}") from e
        self._process = next(p for p in multiprocessing.active_children() if p.pid == self.pid)

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def close(self) -> None:
        """Let the worker finish the page it is on, then end it."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._process.join()

    def pages(self, db: Database, converter: Converter, todo: Iterable[KeyRange], size: int) -> PooledPages:
        """The source pages of ``todo``, as :class:`~backfill_core.engine.sources.Pages` gives
        them, extracted by the worker."""
        return PooledPages(self, db, converter, todo, size)

    def submit(
        self, extractor: str, pages: tuple[str, str], start: tuple[Any] | None, upto: Any
    ) -> asyncio.Future[bytes]:
        """Have the worker read and extract a page (see :func:`_extract_page`)."""
        try:
            return asyncio.wrap_future(self._executor.submit(_extract_page, extractor, pages, start, upto))
        except (BrokenProcessPool, RuntimeError):
            raise self.died() from None

    async def result(self, page: asyncio.Future[bytes], extractor: str) -> Batch:
        try:
            if page.done() or not self.share:
                data = await page
            else:
                self.waiting.value = 1
                try:
                    data = await page
                finally:
                    self.waiting.value = 0
        except BrokenProcessPool:
            raise self.died() from None
        except (sqlite3.Error, UndecodableKey, BackfillError):
            raise
        except Exception as e:
            self.close()
            why = str(e) if isinstance(e, _ExtractorCrashed) else f": {type(e).__name__}: {e}"
            raise WorkerFailed(
                f"the extraction worker failed in extractor {extractor!r}{why}\n"
                "Committed batches are kept: run the same command to resume, with --no-worker to "
                "extract in the main process."
            ) from e
        got: Batch | Extracts = pickle.loads(data)
        return got if isinstance(got, Batch) else self._converters[extractor].convert(got)

    def died(self) -> WorkerFailed:
        self._process.join(5)
        code = self._process.exitcode
        if code is not None and code < 0:
            how = f"was killed by signal {-code}"
        elif code is not None:
            how = f"exited with status {code}"
        else:
            how = "stopped answering"
        return WorkerFailed(
            f"the extraction worker (pid {self.pid}) {how}. Committed batches are kept: run the "
            "same command to resume (--no-worker extracts in the main process)."
        )


class PooledPages:
    """A source (see sources.py): the pages of key ranges, read and extracted by the worker up to
    AHEAD pages ahead of the one this process is writing.

    The worker reads each range's pages in order, each starting after the last key of the one
    before (it keeps that key), so no page waits for the result of the one before it to be
    asked for. The pages asked for after a range's last one come back empty, or hold rows added
    to an open range meanwhile, and are dropped.
    """

    ranged = True
    lanes = 1

    def __init__(
        self, pool: ExtractionPool, db: Database, converter: Converter, todo: Iterable[KeyRange], size: int
    ) -> None:
        self.pool, self.db, self.converter, self.todo, self.size = pool, db, converter, todo, size

    async def count(self) -> int:
        self.todo = list(self.todo)
        return await count_rows(self.db, self.converter, self.todo)

    async def batches(self) -> AsyncGenerator[Work, None]:
        flight: deque[tuple[asyncio.Future[bytes], int]] = deque()
        try:
            for todo in self.todo:
                after = todo.after
                flight.append(self._read(todo, (after,)))
                while True:
                    while len(flight) <= AHEAD:
                        flight.append(self._read(todo, None))
                    batch, size = await self._take(flight)
                    end, done = page_end(todo, after, batch.keys, size)
                    if batch.keys or todo.upto is not None:
                        yield Work(batch, KeyRange(after, end), size=size)
                    if done:
                        break
                    after = end
                _drop(flight)
        finally:
            _drop(flight)

    def _read(self, todo: KeyRange, start: tuple[Any] | None) -> tuple[asyncio.Future[bytes], int]:
        """Have the worker read and extract the next page of ``todo``: after the key in
        ``start``, or where its last page ended."""
        # the size now: the loop may change it between batches
        x, size, upto = self.converter, self.size, todo.upto is not None
        pages = (page_sql(self.db, x, size, False, upto), page_sql(self.db, x, size, True, upto))
        return self.pool.submit(x.name, pages, start, todo.upto), size

    async def _take(self, flight: deque[tuple[asyncio.Future[bytes], int]]) -> tuple[Batch, int]:
        page, size = flight[0]
        try:
            batch = await self.pool.result(page, self.converter.name)
        except sqlite3.Error as e:
            raise self.db.fatal(e, "read from") from e
        flight.popleft()
        return batch, size


def _drop(flight: deque[tuple[asyncio.Future[bytes], int]]) -> None:
    """Forget the pages asked for and not taken (the worker finishes the one it is on)."""
    while flight:
        page, _ = flight.popleft()
        page.cancel()
        if page.done() and not page.cancelled():
            page.exception()  # retrieved: a failed page nobody wants is not an unhandled error


# -- the worker process ----------------------------------------------------------------------------

_converters: Mapping[str, Converter] = {}
_database: tuple[str | URL, float] = ("", 0.0)
_connection: sqlite3.Connection | _PostgresReader | None = None
_waiting: Any = None
_last: Any = None
"""The last key of the page the worker read last."""


def _start(
    converters: Mapping[str, Converter], database: str | URL, timeout: float, parent: int, waiting: Any
) -> None:
    """Set the worker up: it dies with its parent, leaves signals to it, and keeps what the fork
    inherited out of the cycle collector's scans."""
    global _converters, _database, _waiting
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what a Ctrl-C stops
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)  # the parent's event loop's, inherited
    gc.freeze()
    gc.set_threshold(max(GC_THRESHOLD, gc.get_threshold()[0]), *gc.get_threshold()[1:])
    _converters, _database, _waiting = converters, (database, timeout), waiting


def _extract_page(extractor: str, pages: tuple[str, str], start: tuple[Any] | None, upto: Any) -> bytes:
    """Read a page and extract it: the pickled Batch (sqlite3.Error if it cannot be read).

    The page starts after the key in ``start``, or, when it is None, where the worker's last
    page ended; ``pages`` are its statement without and with that lower bound, ``upto`` the
    upper one (None: none). When the main process is waiting for a page as this one starts, the
    worker is the busier process: it sends the Extracts and leaves converting them to the main
    process; otherwise it converts them itself. The batch is the same either way.
    """
    global _last
    leave = bool(_waiting.value)
    after = _last if start is None else start[0]
    params = [bound for bound in (after, upto) if bound is not None]
    rows = _read(pages[after is not None], params)
    converter = _converters[extractor]
    try:
        extracts = converter.extract(rows)
    except UndecodableKey:
        raise
    except BaseException:
        raise _ExtractorCrashed(_crash_report(converter)) from None
    _last = extracts.keys[-1] if extracts.keys else after
    return sendable(extracts if leave else converter.convert(extracts), converter)


def _read(sql: str, params: list[Any]) -> Sequence[Any]:
    """The rows of ``sql`` on the worker's connection, opened on its first page."""
    global _connection
    if _connection is None:
        database, timeout = _database
        if isinstance(database, str):
            _connection = connect(database, read_only=True, timeout=timeout)
        else:
            _connection = _PostgresReader(database)
        util.Finalize(None, _connection.close, exitpriority=1)
    if isinstance(_connection, sqlite3.Connection):
        return fetch_rows(_connection, sql, params)
    return _connection.fetch(sql, params)


class _PostgresReader:
    """The worker's read-only PostgreSQL connection, on an event loop of its own."""

    def __init__(self, url: URL) -> None:
        self.loop = asyncio.new_event_loop()
        self.db = Database(url, read_only=True)
        self.loop.run_until_complete(self.db.__aenter__())

    def fetch(self, sql: str, params: list[Any]) -> Sequence[Any]:
        return self.loop.run_until_complete(self._fetch(sql, params))

    async def _fetch(self, sql: str, params: list[Any]) -> Sequence[Any]:
        async with self.db.reading() as conn:
            return await conn.fetch_source(sql, params)

    def close(self) -> None:
        self.loop.run_until_complete(self.db.close())
        self.loop.close()


def _crash_report(converter: Converter) -> str:
    """Where the worker failed (the plugin and the row) and the traceback."""
    return (
        f" ({converter.plugin or 'its plugin'}) on the row with key {converter.stopped_at!r}: "
        f"extract may raise RecordError for a bad row, nothing that is not an Exception:\n"
        f"{traceback.format_exc()}"
    )


def sendable(batch: Batch | Extracts, converter: Converter) -> bytes:
    """``batch`` pickled; rows whose changes hold values that cannot be pickled become record
    errors, and the batch keeps its other rows."""
    try:
        return pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    items: list[Any] = batch.items if isinstance(batch, Batch) else batch.changes
    kept = []
    for item in items:
        try:
            pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            batch.errors.append(
                ErrorRecord(
                    converter.name,
                    item[0],
                    "record",
                    "plugin-bug",
                    f"extract returned a value the engine cannot take ({type(e).__name__}: {e}); "
                    f"a bug in {converter.plugin or converter.name}: report it to the plugin's authors",
                )
            )
        else:
            kept.append(item)
    items[:] = kept
    if isinstance(batch, Batch):
        batch.settle()
    else:
        order = {k: i for i, k in enumerate(batch.keys)}
        batch.errors.sort(key=lambda e: order[e.key])
    return pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
