"""Extraction in a worker process: it reads and extracts the next pages while this process writes.

Extractors are pure functions of a row, so a forked copy of the process can run them: a
``ProcessPoolExecutor`` (fork context, one process) is fed the key ranges of the next pages; the
worker reads each on its own read-only SQLite connection, extracts it and returns the
:class:`~backfill_core.engine.batch.Batch` (or, when this process is waiting for it, the
unchecked :class:`~backfill_core.engine.batch.Extracts`, which this process converts: the
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
from collections.abc import AsyncGenerator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import util
from typing import Any

from backfill_core.engine.batch import Batch, Converter, Extracts, UndecodableKey
from backfill_core.engine.collector import GC_THRESHOLD
from backfill_core.engine.sources import Work, count_rows
from backfill_core.errors import BackfillError
from backfill_core.store.database import Database
from backfill_core.store.encoding import Undecodable, fetch_rows
from backfill_core.store.records import ErrorRecord, KeyRange
from backfill_core.store.sqlite import connect

AHEAD = 2
"""Pages the worker may read and extract before this process takes them."""
PR_SET_PDEATHSIG = 1


class WorkerFailed(BackfillError):
    """The worker process died or failed; committed batches are kept."""


class _ExtractorCrashed(Exception):
    """``extract`` raised what is not an Exception in the worker (its report is the message)."""


def can_run() -> bool:
    """Whether a worker can run here: Linux, two CPUs or more, and no other thread to fork over."""
    if not sys.platform.startswith("linux") or threading.active_count() != 1:
        return False
    return len(os.sched_getaffinity(0)) >= 2


class ExtractionPool:
    """A forked worker process that reads and extracts pages for ``converters`` from the SQLite
    file at ``path``; :meth:`close` it.

    Start it before opening any database connection or thread: the fork must inherit neither.
    OSError means the system has no process to spare.
    """

    def __init__(self, converters: Sequence[Converter], path: str, timeout: float) -> None:
        for stream in (sys.stdout, sys.stderr):  # or the worker would print them again
            stream.flush()
        context = multiprocessing.get_context("fork")
        self.taken = context.RawValue("q", 0)
        """Pages of the current source this process has taken from the worker (see _extract_page)."""
        self._executor = ProcessPoolExecutor(
            1,
            mp_context=context,
            initializer=_start,
            initargs=({x.name: x for x in converters}, path, timeout, os.getpid(), self.taken),
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

    def pages(self, db: Database, converter: Converter, todo: Sequence[KeyRange], size: int) -> PooledPages:
        """The source pages of ``todo``, as :class:`~backfill_core.engine.sources.Pages` gives
        them, extracted by the worker."""
        return PooledPages(self, db, converter, todo, size)

    def submit(self, extractor: str, sql: str, params: Sequence[Any], page: int = 0) -> asyncio.Future[bytes]:
        """Have the worker read and extract the ``page``-th page of the current source."""
        try:
            return asyncio.wrap_future(self._executor.submit(_extract_page, extractor, sql, params, page))
        except (BrokenProcessPool, RuntimeError):
            raise self.died() from None

    async def result(self, page: asyncio.Future[bytes], extractor: str) -> Batch:
        try:
            data = await page
        except BrokenProcessPool:
            raise self.died() from None
        except (sqlite3.Error, UndecodableKey):
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
        self.taken.value += 1
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
    """A source (see sources.py): the pages of key ranges, extracted by the worker, up to AHEAD
    pages ahead. This process finds where each page ends (an index-only query), so the worker
    is fed whole key ranges."""

    ranged = True

    def __init__(
        self, pool: ExtractionPool, db: Database, converter: Converter, todo: Sequence[KeyRange], size: int
    ) -> None:
        self.pool, self.db, self.converter, self.todo, self.size = pool, db, converter, todo, size
        self._pages = 0

    async def count(self) -> int:
        return await count_rows(self.db, self.converter, self.todo)

    async def batches(self) -> AsyncGenerator[Work, None]:
        flight: deque[tuple[asyncio.Future[bytes], KeyRange, int]] = deque()
        self.pool.taken.value = self._pages = 0
        try:
            for todo in self.todo:
                after = todo.after
                while True:
                    size = self.size  # the loop may change it between batches: this page keeps it
                    end = await self._page_end(after, todo.upto, size)
                    if end is not None and end != todo.upto:
                        flight.append((self._read(after, end, size), KeyRange(after, end), size))
                        after = end
                        while len(flight) > AHEAD:
                            yield await self._take(flight)
                        continue
                    # The rest of the range fits one page: read it once the pages before it are in.
                    flight.append((self._read(after, todo.upto, size), KeyRange(after, todo.upto), size))
                    while len(flight) > 1:
                        yield await self._take(flight)
                    work = await self._take(flight)
                    if work.batch.keys or todo.upto is not None:
                        yield work
                    if todo.upto is not None or len(work.batch.keys) < size:
                        break
                    after = work.batch.keys[-1]  # rows were added at the end meanwhile: go on
        finally:
            for page, _, _ in flight:  # not wanted any more; the worker finishes the one it is on
                page.cancel()
                with contextlib.suppress(BaseException):
                    await page

    async def _page_end(self, after: Any, upto: Any, size: int) -> Any:
        """The last key of the page of ``size`` rows after ``after`` (within ``upto``), if a whole
        page is left."""
        x = self.converter
        stmt = self.db.statements.boundary(
            x.extractor.source_table, x.extractor.key, size, after is not None, upto is not None
        )
        async with self.db.reading() as conn:
            rows = await conn.fetch_source(stmt, [b for b in (after, upto) if b is not None])
        if rows and type(rows[0][0]) is Undecodable:
            raise x.undecodable_key(rows[0][0])
        return rows[0][0] if rows else None

    def _read(self, after: Any, upto: Any, size: int) -> asyncio.Future[bytes]:
        x = self.converter
        limit = size if upto is None else None  # an open end: a page, and perhaps another
        stmt = self.db.statements.page(
            x.extractor.source_table, x.cols, x.extractor.key, limit, after is not None, upto is not None
        )
        self._pages += 1
        return self.pool.submit(x.name, stmt, [b for b in (after, upto) if b is not None], self._pages - 1)

    async def _take(self, flight: deque[tuple[asyncio.Future[bytes], KeyRange, int]]) -> Work:
        page, span, size = flight[0]
        try:
            batch = await self.pool.result(page, self.converter.name)
        except sqlite3.Error as e:
            raise self.db.fatal(e, "read from") from e
        flight.popleft()
        if span.upto is None:  # an open end: the page ends at its last row
            span = KeyRange(span.after, batch.keys[-1] if batch.keys else span.after)
        return Work(batch, span, size=size)


# -- the worker process ----------------------------------------------------------------------------

_converters: Mapping[str, Converter] = {}
_database: tuple[str, float] = ("", 0.0)
_connection: sqlite3.Connection | None = None
_taken: Any = None


def _start(converters: Mapping[str, Converter], path: str, timeout: float, parent: int, taken: Any) -> None:
    """Set the worker up: it dies with its parent, leaves signals to it, and keeps what the fork
    inherited out of the cycle collector's scans."""
    global _converters, _database, _taken
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
    _converters, _database, _taken = converters, (path, timeout), taken


def _extract_page(extractor: str, sql: str, params: Sequence[Any], page: int) -> bytes:
    """Read a page and extract it: the pickled Batch (sqlite3.Error if it cannot be read).

    When the main process has taken every page before this one, it is waiting for this one: the
    worker is the busier process, so it sends the Extracts and leaves converting them to the
    main process; otherwise it converts them itself. The batch is the same either way.
    """
    global _connection
    if _connection is None:
        path, timeout = _database
        _connection = connect(path, read_only=True, timeout=timeout)
        util.Finalize(None, _connection.close, exitpriority=1)
    rows = fetch_rows(_connection, sql, params)
    converter = _converters[extractor]
    try:
        extracts = converter.extract(rows)
    except UndecodableKey:
        raise
    except BaseException:
        raise _ExtractorCrashed(_crash_report(converter)) from None
    if _taken is not None and _taken.value >= page:
        return sendable(extracts, converter)
    return sendable(converter.convert(extracts), converter)


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
