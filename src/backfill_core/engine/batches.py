"""The batch loop: keyset reads, pure extraction, one write transaction per batch."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Coroutine, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import and_, column, func, or_, select, table, true
from sqlalchemy.sql import TableClause

from backfill_core.engine.collector import few_collections
from backfill_core.engine.constraints import Refusals, WouldBeRefused, reflect
from backfill_core.engine.extraction import BatchExtractor, Extraction
from backfill_core.engine.options import NoProgress, Progress, ProgressFactory, RunOptions
from backfill_core.engine.overlay import Overlay
from backfill_core.engine.planner import (
    Extracted,
    Parents,
    Plan,
    Target,
    keys_needed,
    parents_needed,
    plan_batch,
    refs_needed,
)
from backfill_core.engine.stats import ErrorLog, ExtractorStats
from backfill_core.engine.stoppoints import stop_here, stop_point
from backfill_core.engine.worker import Worker, WorkerReadError
from backfill_core.errors import BackfillError
from backfill_core.store.connection import Connection, RowsRefused
from backfill_core.store.database import Database
from backfill_core.store.ledger import FAILED, INTERRUPTED, SUCCEEDED, Ledger, RunState
from backfill_core.store.records import Delta, ErrorRecord, KeyRange

CHECKPOINT_EVERY = 2.0
"""Seconds between checkpoints of batches that changed nothing (their rows are re-read on resume,
and their record errors recorded again)."""
IN_CHUNK = 5000
"""Values per IN (...) list: well under SQLite's and asyncpg's bound-parameter limits."""

Rows = dict[tuple[Any, ...], dict[str, Any]]


def light_table(name: str, columns: Iterable[str]) -> TableClause:
    """A table construct without types: values pass to and from the driver unchanged."""
    return table(name, *(column(c) for c in columns))


class BatchRunner:
    """Runs one extractor over its source table (or over a list of its keys)."""

    def __init__(
        self,
        db: Database,
        extract: BatchExtractor,
        options: RunOptions,
        errors: ErrorLog,
        progress: ProgressFactory | None = None,
        overlay: Overlay | None = None,
        ledger: Ledger | None = None,
        worker: Worker | None = None,
    ) -> None:
        self.db = db
        self.x = extractor = extract.extractor
        self.extract = extract
        self.options = options
        self.errors = errors
        self.progress = progress or (lambda _name, _total: NoProgress())
        self.overlay = overlay if options.dry_run else None
        self.ledger = None if options.dry_run else ledger
        self.stats = ExtractorStats(extractor.name, plugin=extract.plugin, dry_run=options.dry_run)
        self.written, self.cols, self.key_index = extract.written, extract.cols, extract.key_index
        self.worker = worker
        self.source = light_table(extractor.source_table, self.cols)
        self.target_cols = {t: tuple(sorted(cols)) for t, cols in self.written.items()}
        self._state: RunState | None = None
        self._pending = Delta()
        self._pending_range: KeyRange | None = None
        self._checkpointed = time.monotonic()
        self._ledger_total: int | None = None
        self._refusals: Refusals | None = None
        """A dry run's stand-in for the writes the database would refuse."""
        self._stop_at = stop_point(extractor.name)
        self._batches = 0  # begun in this process

    def _reached(self, point: str) -> None:
        """Stop the process here if BACKFILL_STOP_AT asks for this point (see stoppoints.py)."""
        stop = self._stop_at
        if stop is not None and stop.point == point and (point == "started" or stop.batch == self._batches):
            self._stop_at = None
            stop_here()

    async def check_schema(self) -> None:
        await self.db.check_schema({self.x.source_table: self.cols, **self.written})
        if self.options.dry_run:
            rules = await reflect(self.db, list(self.written))
            self._refusals = Refusals(rules, self.db, self._select, self.overlay)

    async def run(
        self,
        state: RunState | None = None,
        *,
        keys: Sequence[Any] | None = None,
        clear_run: int | None = None,
    ) -> ExtractorStats:
        """Process the source rows of ``state.todo``'s key ranges, in that order (all rows
        without a state), or only the rows with ``keys``.

        With a ledger run ``state``, each batch's checkpoint commits with the batch; ``clear_run``
        names a run whose recorded errors for the processed keys are cleared (--retry-errors).
        """
        with few_collections():
            return await self._run(state, keys, clear_run)

    async def _run(
        self, state: RunState | None, keys: Sequence[Any] | None, clear_run: int | None
    ) -> ExtractorStats:
        started = time.perf_counter()
        todo = state.todo if state else [KeyRange()]
        self._state = state
        self.stats.run_id = state.id if state else None
        self.stats.note = state.note if state else None
        status: str = FAILED
        message: str | None = "stopped by an unexpected error"
        reader = self._extractions(todo, keys)
        cleared: set[Any] = set()  # keys whose old errors were cleared with their batch
        ahead: asyncio.Future[tuple[Any, Extraction] | None] | None = None
        bar: Progress = NoProgress()
        try:
            # The first batch is read and extracted while the rows are counted.
            ahead = asyncio.ensure_future(anext(reader, None))
            if keys is None:
                self.stats.total = await self._remaining(todo)
                self._ledger_total = (state.processed if state else 0) + self.stats.total
            else:
                self.stats.total, self._ledger_total = len(keys), None
            bar = self.progress(self.x.name, self.stats.total)
            self._reached("started")
            while (read := await ahead) is not None:
                after, batch = read
                self._batches += 1
                # The next batch is read and extracted while this one is written: by the worker
                # process, or on PostgreSQL by its own connection (SQLite's batch connection runs
                # in this thread, so without a worker it is simply read next).
                ahead = asyncio.ensure_future(anext(reader, None))
                self.extract.finish(batch)  # what the worker left for this process to check
                delta = Delta(processed=len(batch.keys))
                for failed, kind, why in batch.errors:
                    self._error(delta, failed, "record", kind, why)
                clear = None
                if clear_run is not None:
                    clear = (clear_run, batch.keys)
                    cleared.update(batch.keys)
                done = KeyRange(after, batch.keys[-1]) if keys is None else None
                # A signal waits for the batch in flight: its writes, its checkpoint and the
                # summary's counts then agree.
                await _to_the_end(self._commit(batch, delta, done, clear))
                self._reached("committed")
                bar.update(len(batch.keys))
                # Retrying known failures is not judged by how many still fail.
                if keys is None and self.stats.error_rate > self.options.max_error_rate:
                    self.stats.stopped = message = (
                        f"error rate {self.stats.error_rate:.1%} is over --max-error-rate "
                        f"{self.options.max_error_rate:.1%} after {self.stats.processed} rows. Fix the "
                        "data or the plugin, then run the same command to resume after the last "
                        "checkpoint (--retry-errors reprocesses the failed rows, --restart starts "
                        "over), or raise --max-error-rate"
                    )
                    break
            else:
                status, message = SUCCEEDED, None
            if keys is not None and clear_run is not None:
                await self._clear_vanished(clear_run, [k for k in keys if k not in cleared])
        except asyncio.CancelledError:
            status, message = INTERRUPTED, "interrupted by a signal after its last committed batch"
            raise
        except BackfillError as e:
            message = str(e)
            raise
        finally:
            bar.close()
            self.stats.elapsed = time.perf_counter() - started
            # A signal arriving now waits for this too: else the run could stay 'running'.
            await _to_the_end(self._wind_up(ahead, reader, state, status, message))
        return self.stats

    async def _wind_up(
        self,
        ahead: asyncio.Future[tuple[Any, Extraction] | None] | None,
        reader: AsyncGenerator[tuple[Any, Extraction], None],
        state: RunState | None,
        status: str,
        message: str | None,
    ) -> None:
        """Stop reading, then write the last checkpoint and mark the run ended in the ledger."""
        if ahead is not None:  # a read ahead that is no longer wanted; its failure is not news
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ahead
        await reader.aclose()
        if self.ledger is None or state is None:
            return
        if not await self._flush() and status == SUCCEEDED:
            # Its data is written, but not the ledger's record of its last batches and the
            # errors they found: resuming reads those batches again and records them.
            status = FAILED
            message = self.stats.note = (
                "its last checkpoint could not be written to the ledger; run the same "
                "command to resume and record it"
            )
        await self.ledger.finish(state, status, message)

    async def _remaining(self, todo: Sequence[KeyRange]) -> int:
        """The source rows in the key ranges ``todo`` (rows with a NULL key are never read)."""
        key = self.source.c[self.x.key]
        counting = select(func.count()).select_from(self.source).where(key.is_not(None))
        if todo != [KeyRange()]:
            within = [
                and_(
                    key > r.after if r.after is not None else true(),
                    key <= r.upto if r.upto is not None else true(),
                )
                for r in todo
            ]
            counting = counting.where(or_(*within))
        async with self.db.sqlalchemy() as conn:
            return (await conn.execute(counting)).scalar_one()

    async def _extractions(
        self, todo: Sequence[KeyRange], keys: Sequence[Any] | None
    ) -> AsyncGenerator[tuple[Any, Extraction], None]:
        """The batches to write, extracted (by the worker when there is one, else here), each
        with the key before its rows in its range (None for the first of an open-started one)."""
        whole = todo[0] if len(todo) == 1 and todo[0].upto is None else None  # the rows from a key on
        if self.worker is not None and self.worker.alive and keys is None and whole is not None:
            page = self.db.statements.page
            t, cols, key, size = self.x.source_table, self.cols, self.x.key, self.options.batch_size
            batches = self.worker.extractions(
                self.x.name, page(t, cols, key, size, False), page(t, cols, key, size, True), whole.after
            )
            after = whole.after
            try:
                async with contextlib.aclosing(batches):
                    async for batch in batches:
                        yield after, batch
                        after = batch.keys[-1]
            except WorkerReadError as e:
                raise self.db.fatal(e.error, "read from") from e
            return
        async for after, rows in self._pages(todo, keys):
            yield after, self.extract(rows)

    async def _pages(
        self, todo: Sequence[KeyRange], keys: Sequence[Any] | None
    ) -> AsyncGenerator[tuple[Any, Sequence[Any]], None]:
        table, key = self.x.source_table, self.x.key
        size = self.options.batch_size
        if keys is not None:
            for chunk in _chunks(list(keys), size):
                padded = _padded(chunk)
                stmt = self.db.statements.lookup(table, self.cols, (key,), len(padded), order_by=key)
                async with self.db.reading() as conn:
                    rows = await conn.fetch(stmt, padded)
                if rows:
                    yield None, rows
            return
        for todo_range in todo:
            last, upto = todo_range.after, todo_range.upto
            while True:
                # Rows with a NULL key cannot be paged by key; they are left out, as from the count.
                stmt = self.db.statements.page(
                    table, self.cols, key, size, last is not None, upto is not None
                )
                params = [bound for bound in (last, upto) if bound is not None]
                async with self.db.reading() as conn:
                    rows = await conn.fetch(stmt, params)
                if not rows:
                    break
                yield last, rows
                last = rows[-1][self.key_index]

    def _error(self, delta: Delta, key: Any, tier: str, kind: str, message: str) -> None:
        delta.errors.append(ErrorRecord(self.x.name, key, tier, kind, message))
        if tier == "batch":
            delta.batch_errors += 1
        else:
            delta.record_errors += 1

    def _account(self, delta: Delta) -> None:
        """Add a committed batch to the stats and the error log."""
        s = self.stats
        s.processed += delta.processed
        s.inserted += delta.inserted
        s.updated += delta.updated
        s.deleted += delta.deleted
        s.unchanged += delta.unchanged
        for e in delta.errors:
            s.errors[(e.tier, e.kind)] += 1
            self.errors.add(e)

    # -- writing: one transaction per batch, failing rows isolated in savepoints -------------------

    async def _commit(
        self, batch: Extraction, delta: Delta, done: KeyRange | None, clear: tuple[int, list[Any]] | None
    ) -> None:
        """Plan and write a batch and its checkpoint in one transaction (or plan only, in a dry run)."""
        try:
            if self.options.dry_run:
                async with self.db.reading() as conn:
                    plans = await self._isolating(conn, batch.items, delta, batch)
            else:
                try:
                    plans, delta = await self._attempt(batch, delta, done, clear, isolate=False)
                except RowsRefused:
                    # A row breaks a constraint: write the batch again, finding the rows that fail.
                    plans, delta = await self._attempt(batch, delta, done, clear, isolate=True)
        except RowsRefused as e:
            raise self.db.fatal(e, "write to") from e
        for plan in plans:
            room = self.options.sample_size - len(self.stats.samples)
            self.stats.samples += plan.samples[: max(room, 0)]
        self._account(delta)
        for _, kind in batch.skips:
            self.stats.skipped[kind] += 1

    async def _attempt(
        self,
        batch: Extraction,
        delta: Delta,
        done: KeyRange | None,
        clear: tuple[int, list[Any]] | None,
        *,
        isolate: bool,
    ) -> tuple[list[Plan], Delta]:
        """One write transaction for the batch; ``delta`` is left as it was if it rolls back."""
        attempt = Delta()
        attempt.add(delta)
        folded = self._pending, self._pending_range, self._checkpointed
        try:
            async with self.db.writing() as conn:
                if isolate:
                    plans = await self._isolating(conn, batch.items, attempt, batch)
                else:
                    plan = await self._plan(conn, batch.items, batch)
                    await self._write(conn, plan)
                    self._count(plan, attempt)
                    plans = [plan]
                await self._checkpoint(conn, attempt, done, clear)
                self._reached("written")
        except BaseException:
            self._pending, self._pending_range, self._checkpointed = folded
            raise
        return plans, attempt

    async def _isolating(
        self, conn: Connection, batch: list[Extracted], delta: Delta, whole: Extraction | None = None
    ) -> list[Plan]:
        """Plan and write ``batch`` in a savepoint; if rows break a constraint, find them by halving.

        ``whole`` is the Extraction when ``batch`` is all of its items.
        """
        if not batch:
            return []
        try:
            if self.options.dry_run:
                plan = await self._plan(conn, batch, whole)
                if self._refusals is not None:
                    await self._refusals.check(conn, plan)
            else:
                async with conn.savepoint():
                    plan = await self._plan(conn, batch, whole)
                    await self._write(conn, plan)
        except (RowsRefused, WouldBeRefused) as e:
            if len(batch) == 1:
                self._error(delta, batch[0][0], "batch", "write", str(e).strip())
                return []
            half = len(batch) // 2
            first = await self._isolating(conn, batch[:half], delta)
            return first + await self._isolating(conn, batch[half:], delta)
        self._count(plan, delta)
        if self.overlay is not None:
            self.overlay.apply(plan.merged)
        return [plan]

    def _count(self, plan: Plan, delta: Delta) -> None:
        delta.inserted += plan.inserted
        delta.updated += plan.updated
        delta.deleted += plan.deleted
        delta.unchanged += plan.unchanged
        for failure in plan.failures:
            self._error(delta, failure.key, "record", failure.kind, failure.message)

    async def _checkpoint(
        self, conn: Connection, delta: Delta, done: KeyRange | None, clear: tuple[int, list[Any]] | None
    ) -> None:
        """Record the batch (its key range ``done``) in the ledger, in its transaction; batches
        that changed nothing are folded into the next checkpoint (with the errors they found), at
        most CHECKPOINT_EVERY seconds apart: a re-run over unchanged data commits a few times,
        not once per batch. Batches folded at the end of one range of ``todo`` are recorded
        with the first batch of the next, as a range of their own."""
        if self.ledger is None or self._state is None:
            return
        pending = Delta()
        pending.add(self._pending)
        pending.add(delta)
        folded = self._pending_range
        apart = folded is not None and done is not None and folded.upto != done.after
        span = done if folded is None or apart else _joined(folded, done)
        due = delta.inserted or delta.updated or delta.deleted or clear is not None or apart
        if not due and time.monotonic() - self._checkpointed < CHECKPOINT_EVERY:
            self._pending, self._pending_range = pending, span
            return
        if apart:
            await self.ledger.checkpoint(conn, self._state, folded, self._pending)
            pending = delta
        await self.ledger.checkpoint(conn, self._state, span, pending, total=self._ledger_total, clear=clear)
        self._pending, self._pending_range = Delta(), None
        self._checkpointed = time.monotonic()

    async def _flush(self) -> bool:
        """Checkpoint batches folded into no checkpoint yet; False if that failed."""
        if self.ledger is None or self._state is None or not self._pending:
            return True
        try:
            async with self.db.writing() as conn:
                await self.ledger.checkpoint(
                    conn, self._state, self._pending_range, self._pending, total=self._ledger_total
                )
        except (RowsRefused, BackfillError):
            return False
        self._pending, self._pending_range = Delta(), None
        return True

    async def _clear_vanished(self, run_id: int, keys: Sequence[Any]) -> None:
        """Clear the recorded errors of keys whose source rows no longer exist."""
        if self.ledger is None or self._state is None or not keys:
            return
        async with self.db.writing() as conn:
            await self.ledger.checkpoint(conn, self._state, None, Delta(), clear=(run_id, list(keys)))

    async def _plan(self, conn: Connection, batch: list[Extracted], whole: Extraction | None) -> Plan:
        """Plan ``batch`` against the rows it addresses and references; ``whole`` as in _isolating."""
        current = await self._current(conn, whole.needed if whole else keys_needed(batch))
        referenced = await self._referenced(conn, whole.refs if whole else refs_needed(batch))
        children = await self._children(conn, whole.parents if whole else parents_needed(batch))
        return plan_batch(
            batch,
            current,
            referenced,
            children,
            sample_size=self.options.sample_size,
            keep_merged=self.overlay is not None,
        )

    async def _current(
        self, conn: Connection, needed: Mapping[Target, set[tuple[Any, ...]]]
    ) -> dict[Target, Rows]:
        out: dict[Target, Rows] = {}
        for target, keys in needed.items():
            found = out[target] = await self._select(
                conn, target[0], self.target_cols[target[0]], target[1], keys
            )
            if self.overlay is not None:
                for key, row in self.overlay.rows(target, keys).items():
                    if row is None:
                        found.pop(key, None)
                    else:
                        found[key] = row
        return out

    async def _referenced(
        self, conn: Connection, needed: Mapping[Target, tuple[set[str], set[Any]]]
    ) -> dict[Target, dict[Any, dict[str, Any]]]:
        out: dict[Target, dict[Any, dict[str, Any]]] = {}
        for target, (match_cols, values) in needed.items():
            tname, (col,) = target
            cols = tuple(sorted({col, *match_cols}))
            rows = await self._select(conn, tname, cols, (col,), {(v,) for v in values})
            found = out[target] = {k[0]: row for k, row in rows.items()}
            if self.overlay is not None:
                for (v,), row in self.overlay.rows(target, [(v,) for v in values]).items():
                    if row is None:
                        found.pop(v, None)
                    else:
                        found[v] = row
        return out

    async def _children(
        self, conn: Connection, needed: Mapping[Parents, set[tuple[Any, ...]]]
    ) -> dict[Parents, dict[tuple[Any, ...], set[tuple[Any, ...]]]]:
        """The key values of the rows now under each parent that Children changes own."""
        out: dict[Parents, dict[tuple[Any, ...], set[tuple[Any, ...]]]] = {}
        for (target, parent_cols), parents in needed.items():
            table, key_cols = target
            found = out[(target, parent_cols)] = {}
            at = [key_cols.index(c) for c in parent_cols]
            width = len(parent_cols)
            for chunk in _chunks(list(parents), IN_CHUNK // width):
                padded = _padded(chunk)
                stmt = self.db.statements.lookup(table, key_cols, parent_cols, len(padded))
                for row in await conn.fetch(stmt, [v for p in padded for v in p]):
                    key = tuple(row)
                    found.setdefault(tuple([key[i] for i in at]), set()).add(key)
            if self.overlay is not None:
                for parent, keys in self.overlay.under(target, parent_cols, parents).items():
                    have = found.setdefault(parent, set())
                    for key, deleted in keys.items():
                        if deleted:
                            have.discard(key)
                        else:
                            have.add(key)
        return out

    async def _select(
        self,
        conn: Connection,
        table: str,
        cols: tuple[str, ...],
        key_cols: tuple[str, ...],
        keys: set[Any],
    ) -> Rows:
        """The rows of ``table`` (as dicts of ``cols``) whose ``key_cols`` have one of ``keys``."""
        found: Rows = {}
        at = [cols.index(c) for c in key_cols]
        composite = itemgetter(*at)  # a composite key's values as a tuple: 4x a generator's speed
        for chunk in _chunks(list(keys), IN_CHUNK // len(key_cols)):
            padded = _padded(chunk)
            params = [k[0] for k in padded] if len(key_cols) == 1 else [v for k in padded for v in k]
            stmt = self.db.statements.lookup(table, cols, key_cols, len(padded))
            rows = await conn.fetch(stmt, params)
            if len(at) == 1:
                (i,) = at
                # zip without strict=: the keyword costs more than the zip (rows are of cols)
                found.update(((r[i],), dict(zip(cols, r))) for r in rows)  # noqa: B905
            else:
                found.update((composite(r), dict(zip(cols, r))) for r in rows)  # noqa: B905
        return found

    async def _write(self, conn: Connection, plan: Plan) -> None:
        for writes in plan.writes.values():
            table, key_cols = writes.table, writes.key_cols
            if writes.deletes:  # first: a row left out may hold a unique value a kept row takes
                await conn.execute_many(self.db.statements.delete(table, key_cols), writes.deletes)
            inserts = _by_columns((tuple(row), tuple(row.values())) for row in writes.inserts)
            for cols, params in inserts.items():
                await conn.execute_many(self.db.statements.upsert(table, cols, key_cols), params)
            updates = _by_columns((tuple(new), (*new.values(), *key)) for key, new in writes.updates)
            for cols, params in updates.items():
                await conn.execute_many(self.db.statements.update(table, cols, key_cols), params)


async def _to_the_end(work: Coroutine[Any, Any, None]) -> None:
    """Await ``work`` to its end even if this task is cancelled meanwhile (the cancellation is
    raised once it has ended): what it writes is then whole, never cut off by a signal."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def _joined(first: KeyRange, then: KeyRange | None) -> KeyRange:
    """The keys of ``first`` and of ``then``, which starts where ``first`` ends."""
    return first if then is None else KeyRange(first.after, then.upto)


def _by_columns(rows: Iterable[tuple[tuple[str, ...], tuple[Any, ...]]]) -> dict[tuple[str, ...], list[Any]]:
    """Parameter tuples grouped by the columns they set (one statement each), in order."""
    groups: dict[tuple[str, ...], list[Any]] = {}
    last: tuple[str, ...] | None = None
    group: list[Any] = []
    for cols, params in rows:
        if cols != last:
            last = cols
            group = groups.get(cols) or groups.setdefault(cols, [])
        group.append(params)
    return groups


IN_PADDING = 256


def _padded(values: list[Any]) -> list[Any]:
    """``values`` repeated at the end up to a multiple of IN_PADDING.

    Each length of an ``IN (?, ?, …)`` list is a statement of its own in the driver's statement
    cache (128 on sqlite3, each holding its parameters); a handful of lengths keeps that cache
    small and useful instead of filling it with one-off statements as a run goes on.
    """
    short = -len(values) % IN_PADDING
    return values + values[-1:] * short if values else values


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
