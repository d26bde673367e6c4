"""The batch loop: keyset reads, pure extraction, one write transaction per batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, column, func, select, table, tuple_, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import TableClause

from backfill_core.changes import check_change
from backfill_core.database import Database, is_record_level
from backfill_core.errors import RecordError
from backfill_core.extractor import Extractor
from backfill_core.planner import (
    Extracted,
    Plan,
    Target,
    keys_needed,
    plan_batch,
    refs_needed,
)
from backfill_core.report import ErrorLog, ErrorRecord, ExtractorStats

IN_CHUNK = 5000
"""Values per IN (...) list: well under SQLite's and asyncpg's bound-parameter limits."""

Rows = dict[tuple[Any, ...], dict[str, Any]]


class Progress(Protocol):
    def update(self, n: int) -> object: ...
    def close(self) -> object: ...


ProgressFactory = Callable[[str, int], Progress]


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class RunOptions:
    batch_size: int = 500
    dry_run: bool = False
    max_error_rate: float = 0.05
    sample_size: int = 0


class Overlay:
    """A dry run's memory of what it would have written, so later batches and extractors see it."""

    def __init__(self) -> None:
        self.rows: dict[Target, Rows] = {}

    def apply(self, plan: Plan) -> None:
        for target, rows in plan.merged.items():
            self.rows.setdefault(target, {}).update(rows)

    def lookup(self, tname: str, column: str, value: Any) -> dict[str, Any] | None:
        return self.rows.get((tname, (column,)), {}).get((value,))


def light_table(name: str, columns: Iterable[str]) -> TableClause:
    """A table construct without types: values pass to and from the driver unchanged."""
    return table(name, *(column(c) for c in columns))


class BatchRunner:
    """Runs one extractor over its whole source table."""

    def __init__(
        self,
        db: Database,
        extractor: Extractor,
        options: RunOptions,
        errors: ErrorLog,
        progress: ProgressFactory | None = None,
        overlay: Overlay | None = None,
        plugin: str = "",
    ) -> None:
        self.db = db
        self.x = extractor
        self.options = options
        self.errors = errors
        self.progress = progress or (lambda _name, _total: _NoProgress())
        self.overlay = overlay if options.dry_run else None
        self.stats = ExtractorStats(extractor.name, plugin=plugin, dry_run=options.dry_run)
        self.written = extractor.written
        self.cols = extractor.read_columns
        self.key_index = self.cols.index(extractor.key)
        self.source = light_table(extractor.source_table, self.cols)
        self.targets = {t: light_table(t, cols) for t, cols in self.written.items()}

    async def check_schema(self) -> None:
        await self.db.check_schema({self.x.source_table: self.cols, **self.written})

    async def run(self) -> ExtractorStats:
        started = time.perf_counter()
        key = self.source.c[self.x.key]
        async with self.db.reading() as conn:
            self.stats.total = await self._fetch(
                conn, select(func.count()).select_from(self.source), scalar=True
            )
        bar = self.progress(self.x.name, self.stats.total)
        last: Any = None
        try:
            while True:
                stmt = select(*self.source.c).order_by(key).limit(self.options.batch_size)
                if last is not None:
                    stmt = stmt.where(key > last)
                async with self.db.reading() as conn:
                    rows = await self._fetch(conn, stmt)
                if not rows:
                    break
                last = rows[-1][self.key_index]
                await self._apply(self._extract(rows))
                self.stats.processed += len(rows)
                bar.update(len(rows))
                if self.stats.error_rate > self.options.max_error_rate:
                    self.stats.stopped = (
                        f"error rate {self.stats.error_rate:.1%} is over --max-error-rate "
                        f"{self.options.max_error_rate:.1%} after {self.stats.processed} rows; "
                        "fix the data or the plugin, or raise the limit"
                    )
                    break
        finally:
            bar.close()
            self.stats.elapsed = time.perf_counter() - started
        return self.stats

    async def _fetch(self, conn: AsyncConnection, stmt: Any, scalar: bool = False) -> Any:
        try:
            result = await conn.execute(stmt)
            return result.scalar_one() if scalar else result.all()
        except DBAPIError as e:
            raise self.db.fatal(e, "read from") from e

    # -- extraction: pure, outside any transaction ------------------------------------------------

    def _extract(self, rows: Sequence[Sequence[Any]]) -> list[Extracted]:
        out: list[Extracted] = []
        extract, written, name, cols = self.x.extract, self.written, self.x.name, self.cols
        for values in rows:
            row = dict(zip(cols, values, strict=True))
            key = values[self.key_index]
            try:
                changes = [check_change(c, written, name) for c in extract(row)]
            except RecordError as e:
                self._error(key, "record", e.kind, e.message)
            except Exception as e:
                self._error(
                    key,
                    "record",
                    "plugin-bug",
                    f"extract raised {type(e).__name__}: {e} (a bug in {self.stats.plugin or name}; "
                    "report it to the plugin's authors)",
                )
            else:
                out.append(Extracted(key, changes))
        return out

    def _error(self, key: Any, tier: str, kind: str, message: str) -> None:
        self.stats.errors[(tier, kind)] += 1
        self.errors.add(ErrorRecord(self.x.name, key, tier, kind, message))

    # -- writing: one transaction per batch, failing rows isolated by halving ----------------------

    async def _apply(self, batch: list[Extracted]) -> None:
        if not batch:
            return
        try:
            if self.options.dry_run:
                async with self.db.reading() as conn:
                    plan = await self._plan(conn, batch)
                if self.overlay is not None:
                    self.overlay.apply(plan)
            else:
                async with self.db.transaction() as conn:
                    plan = await self._plan(conn, batch)
                    await self._write(conn, plan)
        except DBAPIError as e:
            if not is_record_level(e):
                raise self.db.fatal(e, "write to") from e
            if len(batch) == 1:
                self._error(batch[0].key, "batch", "write", str(e.orig).strip())
                return
            half = len(batch) // 2
            await self._apply(batch[:half])
            await self._apply(batch[half:])
            return
        self.stats.inserted += plan.inserted
        self.stats.updated += plan.updated
        self.stats.unchanged += plan.unchanged
        room = self.options.sample_size - len(self.stats.samples)
        self.stats.samples += plan.samples[: max(room, 0)]
        for failure in plan.failures:
            self._error(failure.key, "record", failure.kind, failure.message)

    async def _plan(self, conn: AsyncConnection, batch: list[Extracted]) -> Plan:
        current = await self._current(conn, keys_needed(batch))
        referenced = await self._referenced(conn, refs_needed(batch))
        return plan_batch(batch, current, referenced, sample_size=self.options.sample_size)

    async def _current(
        self, conn: AsyncConnection, needed: Mapping[Target, set[tuple[Any, ...]]]
    ) -> dict[Target, Rows]:
        out: dict[Target, Rows] = {}
        for target, keys in needed.items():
            tname, key_cols = target
            t = self.targets[tname]
            found = out[target] = {}
            for chunk in _chunks(list(keys), IN_CHUNK):
                for row in await self._select(conn, t, key_cols, chunk):
                    found[tuple(row[c] for c in key_cols)] = row
            if self.overlay is not None:
                for k in keys:
                    pending = self.overlay.rows.get(target, {}).get(k)
                    if pending is not None:
                        found[k] = pending
        return out

    async def _referenced(
        self, conn: AsyncConnection, needed: Mapping[tuple[str, str], tuple[set[str], set[Any]]]
    ) -> dict[tuple[str, str], dict[Any, dict[str, Any]]]:
        out: dict[tuple[str, str], dict[Any, dict[str, Any]]] = {}
        for (tname, col), (match_cols, values) in needed.items():
            t = light_table(tname, {col, *match_cols})
            found = out[(tname, col)] = {}
            for chunk in _chunks([(v,) for v in values], IN_CHUNK):
                for row in await self._select(conn, t, (col,), chunk):
                    found[row[col]] = row
            if self.overlay is not None:
                for v in values:
                    pending = self.overlay.lookup(tname, col, v)
                    if pending is not None:
                        found[v] = pending
        return out

    async def _select(
        self, conn: AsyncConnection, t: TableClause, key_cols: tuple[str, ...], keys: list[tuple[Any, ...]]
    ) -> list[dict[str, Any]]:
        if len(key_cols) == 1:
            where = t.c[key_cols[0]].in_([k[0] for k in keys])
        else:
            where = tuple_(*(t.c[c] for c in key_cols)).in_(keys)
        result = await conn.execute(select(*t.c).where(where))
        return [dict(r) for r in result.mappings()]

    async def _write(self, conn: AsyncConnection, plan: Plan) -> None:
        for writes in plan.writes.values():
            t = self.targets[writes.table]
            for cols, rows in _by_columns(writes.inserts):
                await conn.execute(self.db.upsert(t, writes.key_cols, cols), rows)
            for cols, pairs in _by_columns(writes.updates):
                stmt = (
                    update(t)
                    .where(and_(*(t.c[c] == bindparam(f"k_{c}") for c in writes.key_cols)))
                    .values({c: bindparam(f"v_{c}") for c in cols})
                )
                params = [
                    {**{f"k_{c}": v for c, v in key.items()}, **{f"v_{c}": v for c, v in new.items()}}
                    for key, new in pairs
                ]
                await conn.execute(stmt, params)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _by_columns(items: Sequence[Any]) -> Iterable[tuple[tuple[str, ...], list[Any]]]:
    """Group insert rows, or (key, values) update pairs, by the columns they set."""
    groups: dict[tuple[str, ...], list[Any]] = {}
    for item in items:
        cols = tuple(sorted(item[1] if isinstance(item, tuple) else item))
        groups.setdefault(cols, []).append(item)
    return groups.items()
