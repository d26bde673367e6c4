"""Writing one extracted batch on a given connection: plan, write, isolate the rows refused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

from backfill_core.engine.batch import Batch
from backfill_core.engine.constraints import Refusals, WouldBeRefused
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
from backfill_core.errors import EnvironmentProblem
from backfill_core.store.connection import Connection, RowsRefused
from backfill_core.store.database import Database
from backfill_core.store.encoding import Salvaged, first_undecodable
from backfill_core.store.records import Delta, ErrorRecord

IN_CHUNK = 5000
"""Values per IN (...) list: well under SQLite's and asyncpg's bound-parameter limits."""
IN_PADDING = 256

Rows = dict[tuple[Any, ...], dict[str, Any]]


class Writer:
    """Plans and writes batches of one extractor; it keeps nothing from one batch to the next.

    A dry run's writer (``overlay`` given) writes nothing: it plans against the rows its earlier
    batches would have written (kept in the overlay) and checks each plan against ``refusals``,
    the constraints the database would enforce.
    """

    def __init__(
        self,
        db: Database,
        extractor: str,
        written: Mapping[str, Iterable[str]],
        *,
        sample_size: int = 0,
        overlay: Overlay | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        self.db = db
        self.extractor = extractor
        self.target_cols = {t: tuple(sorted(cols)) for t, cols in written.items()}
        self.sample_size = sample_size
        self.overlay = overlay
        self.refusals = refusals

    async def write(self, conn: Connection, batch: Batch, counts: Delta) -> list[Plan]:
        """Plan and write ``batch`` in ``conn``'s transaction, adding what it did to ``counts``.

        RowsRefused: a row breaks a constraint, and the transaction must be rolled back; write
        the batch again with :meth:`isolate`, which finds the rows to blame.
        """
        plan = await self._plan(conn, batch.items, batch)
        await self._write(conn, plan)
        counts.add(plan)
        return [plan]

    async def isolate(self, conn: Connection, batch: Batch, counts: Delta) -> list[Plan]:
        """Plan and write ``batch`` in savepoints, halving it to find the rows the database
        refuses (a dry run checks its plans instead): each becomes a batch error in ``counts``."""
        return await self._isolating(conn, batch.items, counts, batch)

    async def _isolating(
        self, conn: Connection, items: list[Extracted], counts: Delta, whole: Batch | None
    ) -> list[Plan]:
        """``whole`` is the Batch when ``items`` are all of its items."""
        if not items:
            return []
        try:
            if self.overlay is not None:
                plan = await self._plan(conn, items, whole)
                if self.refusals is not None:
                    await self.refusals.check(conn, plan)
            else:
                async with conn.savepoint():
                    plan = await self._plan(conn, items, whole)
                    await self._write(conn, plan)
        except (RowsRefused, WouldBeRefused) as e:
            if len(items) == 1:
                counts.batch_errors += 1
                counts.errors.append(
                    ErrorRecord(self.extractor, items[0].key, "batch", "write", str(e).strip())
                )
                return []
            half = len(items) // 2
            first = await self._isolating(conn, items[:half], counts, None)
            return first + await self._isolating(conn, items[half:], counts, None)
        counts.add(plan)
        if self.overlay is not None:
            self.overlay.apply(plan.merged)
        return [plan]

    async def _plan(self, conn: Connection, items: list[Extracted], whole: Batch | None) -> Plan:
        """Plan ``items`` against the rows they address and reference."""
        current = await self._current(conn, whole.needed if whole else keys_needed(items))
        referenced = await self._referenced(conn, whole.refs if whole else refs_needed(items))
        children = await self._children(conn, whole.parents if whole else parents_needed(items))
        return plan_batch(
            items,
            current,
            referenced,
            children,
            sample_size=self.sample_size,
            keep_merged=self.overlay is not None,
            extractor=self.extractor,
        )

    async def _current(
        self, conn: Connection, needed: Mapping[Target, set[tuple[Any, ...]]]
    ) -> dict[Target, Rows]:
        out: dict[Target, Rows] = {}
        for target, keys in needed.items():
            found = out[target] = await self.select(
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
            rows = await self.select(conn, tname, cols, (col,), {(v,) for v in values})
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
            for chunk in chunks(list(parents), IN_CHUNK // width):
                padded = padded_in(chunk)
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

    async def select(
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
        composite = itemgetter(*at)
        for chunk in chunks(list(keys), IN_CHUNK // len(key_cols)):
            padded = padded_in(chunk)
            params = [k[0] for k in padded] if len(key_cols) == 1 else [v for k in padded for v in k]
            stmt = self.db.statements.lookup(table, cols, key_cols, len(padded))
            rows = await conn.fetch_source(stmt, params)
            if type(rows) is Salvaged:
                raise undecodable_value(table, cols, key_cols, rows, self.extractor)
            # rows are tuples of cols: zip's strict check would only cost time
            if len(at) == 1:
                (i,) = at
                found.update(((r[i],), dict(zip(cols, r))) for r in rows)  # noqa: B905
            else:
                found.update((composite(r), dict(zip(cols, r))) for r in rows)  # noqa: B905
        return found

    async def _write(self, conn: Connection, plan: Plan) -> None:
        statements = self.db.statements
        for writes in plan.writes.values():
            table, key_cols = writes.table, writes.key_cols
            if writes.deletes:  # first: a row left out may hold a unique value a kept row takes
                await conn.execute_many(statements.delete(table, key_cols), writes.deletes)
            inserts = _by_columns((tuple(row), tuple(row.values())) for row in writes.inserts)
            for cols, params in inserts.items():
                await conn.execute_many(statements.upsert(table, cols, key_cols), params)
            updates = _by_columns((tuple(new), (*new.values(), *key)) for key, new in writes.updates)
            for cols, params in updates.items():
                await conn.execute_many(statements.update(table, cols, key_cols), params)


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


def padded_in(values: list[Any]) -> list[Any]:
    """``values`` repeated at the end up to a multiple of IN_PADDING.

    Each length of an ``IN (?, ?, …)`` list is a statement of its own in the driver's statement
    cache (128 on sqlite3, each holding its parameters); a handful of lengths keeps that cache
    small and useful instead of filling it with one-off statements as a run goes on.
    """
    short = -len(values) % IN_PADDING
    return values + values[-1:] * short if values else values


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class UndecodableValue(EnvironmentProblem):
    """A row the batch must compare or check holds text that cannot be decoded."""


def undecodable_value(
    table: str, cols: tuple[str, ...], key_cols: tuple[str, ...], rows: Salvaged, extractor: str
) -> UndecodableValue:
    """The run-ending error for the first value of ``rows`` that is not UTF-8: its table, key
    and column, and its bytes as SQL finds them."""
    for row in rows:
        bad = first_undecodable(cols, row)
        if bad is not None:
            col, value = bad
            key = ", ".join(f"{c} = {row[cols.index(c)]!r}" for c in key_cols)
            return UndecodableValue(
                f"extractor {extractor!r} must read the row of {table!r} where {key}, and its "
                f"column {col!r} is text that is not valid UTF-8: {value!r} "
                f"({value.describe(f'{table}.{col}')}). Correct or clear that value "
                f"(UPDATE {table} SET {col} = … WHERE {key}), then run the same command to "
                "resume; committed batches are kept"
            )
    raise AssertionError("Salvaged rows without an Undecodable value")
