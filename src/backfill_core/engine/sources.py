"""Sources of extracted batches for the batch loop: source pages read here, or retried keys.

A source yields :class:`Work`: a batch with the key range it covers. The process pool's source
(pool.py) yields the same batches, extracted in a worker process.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, NamedTuple, Protocol

from sqlalchemy import ColumnClause, ColumnElement, and_, column, func, or_, select, table, true

from backfill_core.engine.batch import Batch, Converter
from backfill_core.engine.writer import padded_in
from backfill_core.store.database import Database
from backfill_core.store.records import KeyRange


class Work(NamedTuple):
    """A batch to write, and what its checkpoint records with it."""

    batch: Batch
    done: KeyRange | None
    """The key range the batch covers (its rows are all the source rows in it); None for keys
    that are no range."""
    clear: tuple[int, list[Any]] | None = None
    """(run id, keys): the errors recorded for these keys in that run, cleared with the batch."""
    size: int = 0
    """The page size the batch was read with (0: unknown, its rows are counted instead)."""
    lane: int = 0
    """Which of a run's parallel sources it comes from (see lanes.py); each folds its own
    checkpoints."""


class Source(Protocol):
    """Where the batch loop takes its batches from."""

    size: int
    """The size of the next page read: the batch loop may change it between batches, and it
    applies to the pages read from then on (pages already read ahead keep theirs)."""

    ranged: bool
    """Its batches cover key ranges of the source: their sum is the run's progress, recorded in
    the ledger, and judged by the error rate."""

    lanes: int
    """How many streams of batches it interleaves (see lanes.py): the error rate is judged once
    a page's worth of rows per stream is processed, not on the first small batch alone."""

    async def count(self) -> int:
        """How many source rows the batches will hold (read before the first batch)."""
        ...

    def batches(self) -> AsyncGenerator[Work, None]:
        """The batches, in the order they are to be written."""
        ...


class Pages:
    """The source rows of key ranges, page by page in key order, extracted in this process."""

    ranged = True
    lanes = 1

    def __init__(self, db: Database, converter: Converter, todo: Sequence[KeyRange], size: int) -> None:
        self.db, self.converter, self.todo, self.size = db, converter, todo, size

    async def count(self) -> int:
        return await count_rows(self.db, self.converter, self.todo)

    async def batches(self) -> AsyncGenerator[Work, None]:
        x = self.converter
        for todo in self.todo:
            after, upto = todo.after, todo.upto
            while True:
                size = self.size
                stmt = page_sql(self.db, x, size, after is not None, upto is not None)
                params = [bound for bound in (after, upto) if bound is not None]
                async with self.db.reading() as conn:
                    rows = await conn.fetch_source(stmt, params)
                batch = await x.in_turns(rows)
                end, done = page_end(todo, after, batch.keys, size)
                if batch.keys or upto is not None:
                    yield Work(batch, KeyRange(after, end), size=size)
                if done:
                    break
                after = end


class RetryKeys:
    """The source rows of some keys (the failures of an earlier run), in key order, each batch
    clearing the errors recorded for its keys in that run; keys whose rows are gone have theirs
    cleared at the end."""

    ranged = False
    lanes = 1

    def __init__(
        self, db: Database, converter: Converter, keys: Sequence[Any], size: int, run_id: int
    ) -> None:
        self.db, self.converter, self.keys, self.size, self.run_id = db, converter, keys, size, run_id

    async def count(self) -> int:
        return len(self.keys)

    async def batches(self) -> AsyncGenerator[Work, None]:
        x = self.converter
        found: set[Any] = set()
        keys, start = list(self.keys), 0
        while start < len(keys):
            size = self.size
            chunk, start = keys[start : start + size], start + size
            padded = padded_in(chunk)
            stmt = self.db.statements.lookup(
                x.extractor.source_table, x.cols, (x.extractor.key,), len(padded), order_by=x.extractor.key
            )
            async with self.db.reading() as conn:
                rows = await conn.fetch_source(stmt, padded)
            if rows:
                batch = x(rows)
                found.update(batch.keys)
                yield Work(batch, None, (self.run_id, batch.keys), size)
        vanished = [k for k in self.keys if k not in found]
        if vanished:
            yield Work(Batch([]), None, (self.run_id, vanished))


def page_sql(db: Database, converter: Converter, size: int, after: bool, upto: bool) -> str:
    """The statement reading a page of ``size`` source rows in key order, after a key and up to
    one (its parameters, in that order) where ``after`` and ``upto`` say so. Rows with a NULL key
    cannot be paged by key: they are left out, as from the count."""
    x = converter.extractor
    return db.statements.page(x.source_table, converter.cols, x.key, size, after, upto)


def page_end(todo: KeyRange, after: Any, keys: Sequence[Any], size: int) -> tuple[Any, bool]:
    """Where a page of ``todo`` read after the key ``after``, asked for ``size`` rows, ends, and
    whether it is the range's last.

    A page with fewer rows than asked for is the last: a bounded range's ends at the range's end
    (the keys up to it are all done), an open one's at its last key. Any other page ends at its
    last key, and is the last when that is the range's end.
    """
    if len(keys) == size:
        return keys[-1], keys[-1] == todo.upto
    if todo.upto is not None:
        return todo.upto, True
    return (keys[-1] if keys else after), True


async def count_rows(db: Database, converter: Converter, todo: Sequence[KeyRange]) -> int:
    """The source rows in the key ranges ``todo`` (rows with a NULL key are never read)."""
    x = converter.extractor
    key: ColumnClause[Any] = column(x.key)
    counting = select(func.count()).select_from(table(x.source_table, key)).where(key.is_not(None))
    if list(todo) != [KeyRange()]:
        counting = counting.where(or_(*(_within(key, r) for r in todo)))
    async with db.sqlalchemy() as conn:
        return int((await conn.execute(counting)).scalar_one())


async def split(
    db: Database, converter: Converter, todo: Sequence[KeyRange], parts: int
) -> tuple[list[KeyRange], int]:
    """``todo`` cut into about ``parts`` key ranges holding as many source rows each, at keys
    read from the source (so keys need not be dense), and how many rows ``todo`` holds; each
    range of ``todo`` is cut apart from the others, into parts in proportion to its rows. One
    count and one walk of the key's index per range."""
    x = converter.extractor
    key: ColumnClause[Any] = column(x.key)
    keys = select(key).select_from(table(x.source_table, key)).where(key.is_not(None))
    counts = [await count_rows(db, converter, [r]) for r in todo]
    total = sum(counts)
    out: list[KeyRange] = []
    async with db.sqlalchemy() as conn:
        for r, rows in zip(todo, counts, strict=True):
            share = min(rows, round(parts * rows / total)) if total else 0
            after = r.after
            for k in range(1, share):
                # Counted on from the cut before: the index is walked once over the range.
                step = k * rows // share - (k - 1) * rows // share
                rest = _within(key, KeyRange(after, r.upto))
                at = keys.where(rest).order_by(key).offset(step - 1).limit(1)
                cut = (await conn.execute(at)).scalar_one_or_none()
                if cut is None:  # rows deleted since they were counted: the rest is one part
                    break
                out.append(KeyRange(after, cut))
                after = cut
            out.append(KeyRange(after, r.upto))
    return out, total


def _within(key: ColumnClause[Any], r: KeyRange) -> ColumnElement[bool]:
    return and_(
        key > r.after if r.after is not None else true(),
        key <= r.upto if r.upto is not None else true(),
    )
