"""Extraction in a worker process: it reads and extracts the next batches while the engine writes.

Extractors are pure functions of a row, so a forked copy of the process can run them: the worker
reads source pages from SQLite on its own read-only connection, extracts them and sends back
plain values (see ``extraction.Extraction``), at most ``AHEAD`` batches ahead of the engine. The
engine plans and writes each batch in its own transaction as before, in key order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sqlite3
import sys
import threading
import traceback
from collections.abc import AsyncGenerator, Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

from backfill_core.engine.collector import few_collections
from backfill_core.engine.extraction import BatchExtractor, Extraction
from backfill_core.engine.planner import keys_needed, parents_needed, refs_needed
from backfill_core.errors import BackfillError
from backfill_core.store.sqlite import connect

AHEAD = 2
"""Batches the worker may read and extract before the engine takes them."""
_CREDIT = pickle.dumps(("credit", None), pickle.HIGHEST_PROTOCOL)


class WorkerFailed(BackfillError):
    """The worker process died or failed; committed batches are kept."""


class WorkerReadError(Exception):
    """The worker could not read a source page: the engine reports it as a database failure."""

    def __init__(self, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.error = error


def can_run() -> bool:
    """Whether a worker can run here: Linux, two CPUs or more, and no other thread to fork over."""
    if not sys.platform.startswith("linux") or threading.active_count() != 1:
        return False
    return len(os.sched_getaffinity(0)) >= 2


class Worker:
    """The engine's side of a forked extraction worker."""

    def __init__(self, pid: int, inbox: Connection, outbox: Connection) -> None:
        self.pid = pid
        self._inbox = inbox
        self._outbox = outbox
        self._busy = False
        self.alive = True

    @classmethod
    def fork(cls, extractors: Sequence[BatchExtractor], path: str, timeout: float) -> Worker:
        """Fork a worker serving ``extractors`` over the SQLite file at ``path``; :meth:`stop` it.

        Fork before opening any database connection: the child must not share the parent's.
        OSError means the system has no process to spare.
        """
        from_worker, to_parent = Pipe(duplex=False)
        from_parent, to_worker = Pipe(duplex=False)
        _widen(from_worker)
        for stream in (sys.stdout, sys.stderr):  # or the worker would print them again
            stream.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the caller's code
            code = 1
            try:
                from_worker.close()
                to_worker.close()
                # What the fork inherited is frozen: never rescanned, so never copied by the collector.
                with few_collections():
                    _serve(from_parent, to_parent, {x.name: x for x in extractors}, path, timeout)
                code = 0
            finally:
                for stream in (sys.stdout, sys.stderr):  # what a plugin printed
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        from_parent.close()
        to_parent.close()
        return cls(pid, from_worker, to_worker)

    async def extractions(
        self, extractor: str, first_page: str, next_page: str, start_after: Any
    ) -> AsyncGenerator[Extraction, None]:
        """The batches of ``extractor`` after ``start_after``, read with the two page statements
        (the second takes the last key of the previous page)."""
        self._send(("run", (extractor, first_page, next_page, start_after)))
        self._busy = True
        try:
            while True:
                kind, payload = await self._receive(credit=True)
                if kind == "batch":
                    yield payload
                elif kind == "end":
                    self._busy = False
                    return
                elif kind == "read-error":
                    self._busy = False
                    raise WorkerReadError(payload)
                else:
                    raise WorkerFailed(
                        f"the extraction worker failed in extractor {extractor!r}{payload}\n"
                        "Committed batches are kept: run the same command to resume, with --no-worker "
                        "to extract in the main process."
                    )
        finally:
            if self._busy:  # stopped part-way: the worker is still reading ahead, so end it
                self.stop(kill=True)

    def _send(self, message: tuple[str, Any]) -> None:
        try:
            self._outbox.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        except OSError:
            raise self._died() from None

    async def _receive(self, credit: bool = False) -> tuple[str, Any]:
        """The next message; with ``credit``, the worker may read one more batch ahead, told as
        soon as this one is off the pipe (before unpickling it): the worker decides from its
        credits how much of the next batch to leave to this process."""
        if not self._inbox.poll():
            loop = asyncio.get_running_loop()
            ready = loop.create_future()
            fd = self._inbox.fileno()

            def wake() -> None:
                if not ready.done():
                    ready.set_result(None)

            loop.add_reader(fd, wake)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
        try:
            data = self._inbox.recv_bytes()
        except (EOFError, OSError):
            raise self._died() from None
        if credit:
            with contextlib.suppress(OSError):  # a worker that died has sent why; that is read next
                self._outbox.send_bytes(_CREDIT)
        return pickle.loads(data)  # type: ignore[no-any-return]

    def _died(self) -> WorkerFailed:
        status = self._reap(block=True)
        if status is not None and os.WIFSIGNALED(status):
            how = f"was killed by signal {os.WTERMSIG(status)}"
        elif status is not None:
            how = f"exited with status {os.waitstatus_to_exitcode(status)}"
        else:
            how = "stopped answering"
        return WorkerFailed(
            f"the extraction worker (pid {self.pid}) {how}. Committed batches are kept: run the "
            "same command to resume (--no-worker extracts in the main process)."
        )

    def _reap(self, block: bool) -> int | None:
        if not self.alive:
            return None
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return None
        self.alive = False
        return status

    def stop(self, kill: bool = False) -> None:
        """End the worker: ask it to exit (kill it if it is still reading ahead) and wait for it."""
        if not self.alive:
            return
        if kill or self._busy:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(OSError):
                self._outbox.send_bytes(pickle.dumps(("exit", None)))
        self._outbox.close()
        self._inbox.close()
        self._reap(block=True)


PIPE_SIZE = 1 << 20
"""Bytes the pipe from the worker holds (Linux's default is 64 KiB, less than a batch of test
features): a batch sent while the engine is still writing the previous one does not keep the
worker waiting until the engine reads it."""


def _widen(pipe: Connection) -> None:
    """Give ``pipe`` PIPE_SIZE bytes of buffer; where the system refuses, it keeps its own."""
    import fcntl  # here: the worker runs on Linux only, and Windows has no fcntl to import

    with contextlib.suppress(OSError):  # over the system's limits on pipe buffers for this user
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)


# -- the worker process ----------------------------------------------------------------------------


def _serve(
    inbox: Connection, outbox: Connection, extractors: dict[str, BatchExtractor], path: str, timeout: float
) -> None:
    """Answer ``run`` requests until told to exit or the engine's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides what a Ctrl-C stops
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)  # the parent's event loop's, inherited
    con: sqlite3.Connection | None = None
    extractor: BatchExtractor | None = None

    def send(kind: str, payload: Any) -> None:
        outbox.send_bytes(_pickled(kind, payload, extractor))

    try:
        while True:
            try:
                kind, request = pickle.loads(inbox.recv_bytes())
            except EOFError:
                return
            if kind == "exit":
                return
            if kind != "run":
                continue  # a credit for a batch of an earlier run
            name, first_page, next_page, last = request
            extractor = extractors[name]
            credits = AHEAD
            while True:
                credits = _take_credits(inbox, credits)
                try:
                    if con is None:
                        con = connect(path, read_only=True, timeout=timeout)
                    sql, params = (first_page, ()) if last is None else (next_page, (last,))
                    rows = con.execute(sql, params).fetchall()
                except sqlite3.Error as e:
                    send("read-error", e)
                    break
                if not rows:
                    send("end", None)
                    break
                extraction = extractor(rows, finish=False)
                credits = _take_credits(inbox, credits)
                if credits < AHEAD:  # the engine has a batch of ours still to take: it is the busier
                    extractor.finish(extraction)
                # else it is waiting for this one and checks the changes itself, sparing this process
                send("batch", extraction)
                credits -= 1
                last = rows[-1][extractor.key_index]
    except (EOFError, _Exit):
        return
    except BaseException:
        with contextlib.suppress(Exception):
            send("crash", _crash_report(extractor))
        raise
    finally:
        if con is not None:
            con.close()


class _Exit(Exception):
    """The engine told the worker to exit."""


def _take_credits(inbox: Connection, credits: int) -> int:
    """``credits`` plus those the engine has sent, waiting for one if none is left."""
    while credits == 0 or inbox.poll():
        kind, _ = pickle.loads(inbox.recv_bytes())
        if kind == "exit":
            raise _Exit
        credits += kind == "credit"
    return credits


def _crash_report(extractor: BatchExtractor | None) -> str:
    """Where the worker failed (the plugin and the row, when extract raised) and the traceback."""
    where = ""
    if extractor is not None and extractor.stopped_at is not None:
        where = (
            f" ({extractor.plugin or 'its plugin'}) on the row with key {extractor.stopped_at!r}: "
            "extract may raise RecordError for a bad row, nothing that is not an Exception"
        )
    return f"{where}:\n{traceback.format_exc()}"


def _pickled(kind: str, payload: Any, extractor: BatchExtractor | None) -> bytes:
    """``(kind, payload)`` pickled; a batch whose changes hold values that cannot be pickled keeps
    its other rows, and those rows become record errors."""
    try:
        return pickle.dumps((kind, payload), pickle.HIGHEST_PROTOCOL)
    except Exception:
        if kind != "batch" or extractor is None:
            raise
    batch: Extraction = payload
    finished = batch.unchecked is None
    kept: list[Any] = []
    for item in batch.items if finished else batch.unchecked or []:
        try:
            pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            batch.errors.append(
                (
                    item[0],
                    "plugin-bug",
                    f"extract returned a value the engine cannot take ({type(e).__name__}: {e}); "
                    f"a bug in {extractor.plugin or extractor.name}: report it to the plugin's authors",
                )
            )
        else:
            kept.append(item)
    batch.errors_in_key_order()
    if finished:
        batch.items = kept
        batch.needed, batch.refs, batch.parents = keys_needed(kept), refs_needed(kept), parents_needed(kept)
    else:
        batch.unchecked = kept
    return pickle.dumps((kind, batch), pickle.HIGHEST_PROTOCOL)
