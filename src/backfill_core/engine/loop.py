"""The batch loop: takes extracted batches from a source and commits each in its own transaction."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any, NamedTuple

from backfill_core.engine.batchsize import BatchSizer, target_of
from backfill_core.engine.collector import few_collections
from backfill_core.engine.options import NoProgress, Progress, ProgressFactory, RunOptions
from backfill_core.engine.planner import Plan
from backfill_core.engine.retry import Backoff, retried, retry_line, with_retries
from backfill_core.engine.sources import Source, Work
from backfill_core.engine.stats import ErrorLog, ExtractorStats
from backfill_core.engine.stoppoints import StopPoints
from backfill_core.engine.throttle import Brakes
from backfill_core.engine.writer import Writer
from backfill_core.errors import BackfillError
from backfill_core.store.connection import Connection, LockConflict, RowsRefused
from backfill_core.store.database import Database
from backfill_core.store.ledger import FAILED, INTERRUPTED, SUCCEEDED, Ledger, RunState
from backfill_core.store.records import BatchSizes, Delta, KeyRange

CHECKPOINT_EVERY = 2.0
"""Seconds between checkpoints of batches that changed nothing (their rows are re-read on resume,
and their record errors recorded again)."""


class BatchLoop:
    """Commits the batches of one extractor's source, one transaction each, with ``writer``.

    With a ledger and a run, each batch's checkpoint commits with the batch. A signal waits for
    the batch in flight; the loop stops early when the error rate passes ``--max-error-rate``.
    """

    def __init__(
        self,
        db: Database,
        writer: Writer,
        options: RunOptions,
        errors: ErrorLog,
        progress: ProgressFactory | None = None,
        ledger: Ledger | None = None,
        announce: Callable[[str], object] = lambda _line: None,
        brakes: Brakes | None = None,
    ) -> None:
        self.db = db
        self.announce = announce
        self.writer = writer
        self.options = options
        self.errors = errors
        self.progress = progress or (lambda _name, _total: NoProgress())
        self.ledger = None if options.dry_run else ledger
        self.brakes = brakes
        self._stop_at = StopPoints(writer.extractor)
        self._batches = 0  # begun in this process
        self.sizer = BatchSizer(options.batch_size, target_of(options))
        self._since = 0.0  # when the last batch's transaction began (sizer.started())
        self._backoff = Backoff(options.lock_retries)
        self._unrecorded_retries = 0  # of a batch whose checkpoint has not committed
        self._gave_way = False  # a batch's lock retries were spent: the ledger's writes try once

    async def run(
        self, source: Source, stats: ExtractorStats, state: RunState | None = None
    ) -> ExtractorStats:
        """Commit ``source``'s batches into ``stats`` (and into the ledger's run ``state``)."""
        with few_collections(), self.db.named(f"backfill:{self.writer.extractor}"):
            await self._run(source, stats, state)
        return stats

    async def _run(self, source: Source, stats: ExtractorStats, state: RunState | None) -> None:
        started = time.perf_counter()
        stats.run_id = state.id if state else None
        stats.note = state.note if state else None
        status: str = FAILED
        message: str | None = "stopped by an unexpected error"
        source.size = self.sizer.size
        stats.batches = self.sizer.used
        works = source.batches()
        checkpoints: Checkpoints | None = None
        ahead: asyncio.Future[Work | None] | None = None
        bar: Progress = NoProgress()
        try:
            # The first batch is read and extracted while the rows are counted.
            ahead = asyncio.ensure_future(anext(works, None))
            stats.total = await source.count()
            if self.ledger is not None and state is not None:
                total = (state.processed + stats.total) if source.ranged else None
                checkpoints = Checkpoints(self.ledger, state, total)
            bar = self.progress(stats.name, stats.total)
            if self.brakes is not None:
                self.brakes.begin(stats.name, stats.run_id if self.ledger is not None else None, bar)
            self._reached("started")
            while (work := await ahead) is not None:
                self._batches += 1
                # The next batch is read and extracted while this one is written: by the worker
                # process, or on PostgreSQL by its own connection (SQLite's batch connection runs
                # in this thread, so without a worker it is simply read next).
                ahead = asyncio.ensure_future(anext(works, None))
                errors = work.batch.errors
                delta = Delta(processed=len(work.batch.keys), record_errors=len(errors), errors=list(errors))
                if self.brakes is not None:  # rate, sleep, throttles, pause: before the batch, not in it
                    await self.brakes.before(len(work.batch.keys))
                # A signal waits for the batch in flight: its writes, its checkpoint and the
                # summary's counts then agree. Between tries after a lock conflict, it does not.
                await self._commit_retrying(work, delta, checkpoints, stats)
                source.size = self.sizer.size
                self._reached("committed")
                bar.update(len(work.batch.keys))
                # Retrying known failures is not judged by how many still fail.
                if self._judged(source, stats) and stats.error_rate > self.options.max_error_rate:
                    stats.stopped = message = (
                        f"error rate {stats.error_rate:.1%} is over --max-error-rate "
                        f"{self.options.max_error_rate:.1%} after {stats.processed} rows. Fix the "
                        "data or the plugin, then run the same command to resume after the last "
                        "checkpoint (--retry-errors reprocesses the failed rows, --restart starts "
                        "over), or raise --max-error-rate"
                    )
                    break
            else:
                status, message = SUCCEEDED, None
        except asyncio.CancelledError:
            status, message = INTERRUPTED, "interrupted by a signal after its last committed batch"
            raise
        except BackfillError as e:
            message = str(e)
            raise
        finally:
            bar.close()
            stats.elapsed = time.perf_counter() - started
            # A signal arriving now waits for this too: else the run could stay 'running'.
            await _to_the_end(self._wind_up(ahead, works, checkpoints, state, stats, status, message))

    def _judged(self, source: Source, stats: ExtractorStats) -> bool:
        """Whether the error rate is judged now: after every batch of a ranged source, but with
        several lanes only once a page's worth of rows per lane (or every row) is processed, not
        on whichever small part came first."""
        if not source.ranged:
            return False
        return source.lanes == 1 or stats.processed >= min(source.lanes * source.size, stats.total)

    def _reached(self, point: str) -> None:
        """Stop the process here if BACKFILL_STOP_AT asks for this point (see stoppoints.py)."""
        self._stop_at.reached(point, self._batches)

    async def _commit_retrying(
        self, work: Work, delta: Delta, checkpoints: Checkpoints | None, stats: ExtractorStats
    ) -> None:
        """:meth:`_commit`, tried again after a lock conflict (see retry.py); the retries are
        counted in ``stats`` and in the checkpoint of the batch when it commits."""

        def attempt(retries: int) -> Coroutine[Any, Any, None]:
            delta.lock_retries = retries
            return _to_the_end(self._commit(work, delta, checkpoints, stats))

        keys = work.batch.keys
        name = self.writer.extractor
        what = f"{name}: the batch of keys {keys[0]!r} to {keys[-1]!r}" if keys else f"{name}: a batch"

        def conflicted(error: LockConflict, retry: int, delay: float) -> None:
            stats.lock_retries += 1
            self._unrecorded_retries += 1
            self.announce(retry_line(what, error, retry, self._backoff.retries, delay))
            self._reached("retrying")

        controls = self.brakes.controls if self.brakes is not None else None
        run_id = stats.run_id
        # A run waiting between retries keeps its heartbeat fresh and says why it waits, so no
        # other host takes it for dead; not on SQLite, where the write would wait for the very
        # lock the batch gave way to (and runs on one host are judged by their pid).
        touching = controls is not None and run_id is not None and not self.db.is_sqlite
        touched = False

        async def touch(message: str | None) -> None:
            nonlocal touched
            if controls is not None and run_id is not None:
                with contextlib.suppress(BackfillError):
                    await controls.touch(run_id, message)
                    touched = message is not None

        async def waiting() -> None:
            if touching:
                await touch(f"waiting for a lock: {what}")

        try:
            await with_retries(attempt, self._backoff, conflicted=conflicted, what=what, waiting=waiting)
        except BackfillError as e:
            self._gave_way = isinstance(e.__cause__, LockConflict)
            raise
        if touched:
            await touch(None)
        self._unrecorded_retries = 0  # in the checkpoint now, or folded into the next one

    async def _commit(
        self, work: Work, delta: Delta, checkpoints: Checkpoints | None, stats: ExtractorStats
    ) -> None:
        """Write a batch and its checkpoint in one transaction (or plan it only, in a dry run),
        then add what it did to ``stats`` and the error log."""
        try:
            if self.options.dry_run:
                async with self.db.reading() as conn:
                    self._since = self.sizer.started()
                    plans = await self.writer.isolate(conn, work.batch, delta)
            else:
                try:
                    plans, delta = await self._attempt(work, delta, checkpoints, isolate=False)
                except RowsRefused:
                    # A row breaks a constraint: write the batch again, finding the rows that fail.
                    plans, delta = await self._attempt(work, delta, checkpoints, isolate=True)
        except RowsRefused as e:
            raise self.db.fatal(e, "write to") from e
        size = _page_size(work)
        if size:  # not the batch that only clears the errors of vanished keys
            held = self.sizer.committed(size, len(work.batch.keys), self._since)
            if checkpoints is not None:
                checkpoints.run.batches.add(size, held)
        for plan in plans:
            room = self.options.sample_size - len(stats.samples)
            stats.samples += plan.samples[: max(room, 0)]
        stats.add(delta)
        for error in delta.errors:
            self.errors.add(error)
        for _, kind in work.batch.skips:
            stats.skipped[kind] += 1

    async def _attempt(
        self, work: Work, delta: Delta, checkpoints: Checkpoints | None, *, isolate: bool
    ) -> tuple[list[Plan], Delta]:
        """One write transaction for the batch; what it did is added to a copy of ``delta``."""
        counts = Delta()
        counts.add(delta)
        async with self.db.writing(lock_timeout=self.options.lock_timeout) as conn:
            self._since = self.sizer.started()  # the transaction has begun: its locks are held
            write = self.writer.isolate if isolate else self.writer.write
            plans = await write(conn, work.batch, counts)
            size = _page_size(work)
            folded = (
                await checkpoints.write(conn, counts, work.done, work.clear, size, work.lane)
                if checkpoints
                else None
            )
            self._reached("written")
        if checkpoints is not None and folded is not None:
            # only now: a rolled-back transaction leaves them as they were
            checkpoints.adopt(work.lane, folded)
        return plans, counts

    async def _to_ledger(self, work: Callable[[], Awaitable[bool]], what: str) -> bool:
        """``work``, a write to the ledger, tried again after a lock conflict as a batch is (but
        tried once when a batch's retries were spent: the run has given up, and a signal would
        wait for the backoff); False if it failed."""
        try:
            return await retried(
                work,
                0 if self._gave_way else self.options.lock_retries,
                what=f"{self.writer.extractor}: {what}",
                announce=self.announce,
            )
        except BackfillError:
            return False

    async def _wind_up(
        self,
        ahead: asyncio.Future[Work | None] | None,
        works: AsyncGenerator[Work, None],
        checkpoints: Checkpoints | None,
        state: RunState | None,
        stats: ExtractorStats,
        status: str,
        message: str | None,
    ) -> None:
        """Stop reading, then write the last checkpoint and mark the run ended in the ledger."""
        if ahead is not None:  # a read ahead that is no longer wanted; its failure is not news
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ahead
        await works.aclose()
        if self.ledger is None or state is None:
            return
        flushed = checkpoints is None or await self._to_ledger(
            lambda: checkpoints.flush(self.db), "the checkpoint of its last batches"
        )
        if not flushed and status == SUCCEEDED:
            # Its data is written, but not the ledger's record of its last batches and the
            # errors they found: resuming reads those batches again and records them.
            status = FAILED
            message = stats.note = (
                "its last checkpoint could not be written to the ledger; run the same "
                "command to resume and record it"
            )
        ledger, retries = self.ledger, self._unrecorded_retries
        await self._to_ledger(
            lambda: ledger.finish(state, status, message, lock_retries=retries), "recording how its run ended"
        )


class Folded(NamedTuple):
    """Batches committed since the last checkpoint that changed nothing, not yet recorded."""

    delta: Delta
    done: KeyRange | None
    since: float
    """When the last checkpoint was written (time.monotonic())."""


class Checkpoints:
    """A run's checkpoints, each written in its batch's transaction.

    Batches that changed nothing are folded into the next checkpoint (with the errors they
    found), at most CHECKPOINT_EVERY seconds apart: a re-run over unchanged data commits a few
    times, not once per batch. Batches folded at the end of one key range are recorded with the
    first batch of the next, as a range of their own. Each lane of a parallel run (see
    lanes.py) folds its own batches, whose key ranges follow each other.
    """

    def __init__(self, ledger: Ledger, run: RunState, total: int | None) -> None:
        self.ledger, self.run, self.total = ledger, run, total
        self.folded: dict[int, Folded] = {}

    async def write(
        self,
        conn: Connection,
        delta: Delta,
        done: KeyRange | None,
        clear: tuple[int, list[Any]] | None,
        size: int = 0,
        lane: int = 0,
    ) -> Folded:
        """Record a batch (its counts ``delta``, key range ``done`` and page ``size``, from
        ``lane``) in ``conn``'s transaction, or fold it into the lane's next checkpoint; what the
        lane has folded then, for :meth:`adopt` once the transaction commits. The batch's write
        time is only known once it has committed: the next checkpoint, or the run's end, records it."""
        folded = self.folded.get(lane) or Folded(Delta(), None, time.monotonic())
        pending = Delta()
        pending.add(folded.delta)
        pending.add(delta)
        apart = folded.done is not None and done is not None and folded.done.upto != done.after
        span = done if folded.done is None or apart else _joined(folded.done, done)
        due = delta.inserted or delta.updated or delta.deleted or clear is not None or apart
        if not due and time.monotonic() - folded.since < CHECKPOINT_EVERY:
            return Folded(pending, span, folded.since)
        if apart:
            await self.ledger.checkpoint(conn, self.run, folded.done, folded.delta)
            pending = delta
        batches = self.run.batches.plus(BatchSizes({size: 1} if size else {}))
        await self.ledger.checkpoint(
            conn, self.run, span, pending, total=self.total, clear=clear, batches=batches
        )
        return Folded(Delta(), None, time.monotonic())

    def adopt(self, lane: int, folded: Folded) -> None:
        self.folded[lane] = folded

    async def flush(self, db: Database) -> bool:
        """Checkpoint the batches folded into no checkpoint yet; False if that failed, and
        LockConflict if another transaction's lock is to blame (trying again may succeed)."""
        folded = [f for f in self.folded.values() if f.delta]
        if not folded:
            return True
        try:
            async with db.writing() as conn:
                for f in folded:
                    await self.ledger.checkpoint(
                        conn, self.run, f.done, f.delta, total=self.total, batches=self.run.batches
                    )
        except LockConflict:
            raise
        except (RowsRefused, BackfillError):
            return False
        self.folded.clear()
        return True


async def _to_the_end(work: Coroutine[Any, Any, None]) -> None:
    """Await ``work`` to its end even if this task is cancelled meanwhile (the cancellation is
    raised once it has ended): what it writes is then whole, never cut off by a signal."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def _page_size(work: Work) -> int:
    """The size of the page ``work`` was read with (its rows where its source does not say)."""
    return work.size or len(work.batch.keys)


def _joined(first: KeyRange, then: KeyRange | None) -> KeyRange:
    """The keys of ``first`` and of ``then``, which starts where ``first`` ends."""
    return first if then is None else KeyRange(first.after, then.upto)
