"""Running validators: the engine executes the metric queries each validator builds."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import CompileError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BooleanClauseList, ClauseElement
from sqlalchemy.sql.operators import and_ as and_op

from backfill_core.errors import EnvironmentProblem, UsageError
from backfill_core.sql import SAFE_JSONB, SAFE_JSONB_FUNCTION, needs_safe_jsonb
from backfill_core.store.database import Database
from backfill_core.store.encoding import is_decode_failure
from backfill_core.store.ledger import Ledger
from backfill_core.validator import Metric, MetricResult, Validator


def parse_thresholds(items: Sequence[str]) -> dict[str, float]:
    """``NAME=VALUE`` pairs, where NAME is a validator or ``validator.metric``."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
        except ValueError:
            number = -1.0
        if not sep or not name or not 0 <= number <= 1:
            raise UsageError(f"--threshold {item!r} must look like coverage.tests=0.9 or coverage=90%")
        out[name] = number
    return out


def selected(validators: Sequence[Validator], ran: Collection[str] | None) -> list[tuple[Validator, Metric]]:
    """The metrics to compute: all of them, or those checking an extractor in ``ran``."""
    return [
        (v, m)
        for v in validators
        for m in v.metrics()
        if ran is None or m.extractor is None or m.extractor in ran
    ]


def check_thresholds(
    validators: Sequence[Validator],
    thresholds: Mapping[str, float],
    ran: Collection[str] | None = None,
    skipped: Mapping[str, str] | None = None,
) -> None:
    """Raise UsageError for a --threshold that names no thresholded metric about to be computed.

    ``skipped`` maps validators left out of this command to the reason, for the message.
    """
    chosen = [(v, m) for v, m in selected(validators, ran) if m.threshold is not None]
    known = {v.name for v, _ in chosen} | {f"{v.name}.{m.name}" for v, m in chosen}
    unknown = sorted(set(thresholds) - known)
    if not unknown:
        return
    informational = {f"{v.name}.{m.name}" for v in validators for m in v.metrics() if m.threshold is None}
    only_info = {v.name for v in validators if all(m.threshold is None for m in v.metrics())}
    parts = []
    named = [n for n in unknown if n.partition(".")[0] in (skipped or {})]
    for name in named:
        validator = name.partition(".")[0]
        parts.append(f"{name}: validator {validator!r} was skipped ({(skipped or {})[validator]})")
    info = [n for n in unknown if n in informational and n not in named]
    if info:
        these = "that metric is" if len(info) == 1 else "those metrics are"
        parts.append(
            f"{', '.join(info)}: {these} informational (shown as info, never failing), "
            "so there is no threshold to set"
        )
    bare = [n for n in unknown if n in only_info and n not in named]
    if bare:
        these = "that validator has" if len(bare) == 1 else "those validators have"
        parts.append(
            f"{', '.join(bare)}: {these} only informational metrics, so there is no threshold to set"
        )
    rest = [n for n in unknown if n not in named and n not in info and n not in bare]
    if rest:
        listed = ", ".join(sorted(known)) or "none"
        parts.append(f"names no metric being validated: {', '.join(rest)} (known: {listed})")
    raise UsageError("--threshold " + "; ".join(parts))


async def check_compiles(
    db: Database, validators: Sequence[Validator], ran: Collection[str] | None = None
) -> None:
    """Compile every metric query for this database before anything is written, and create (in
    a transaction rolled back) the helper function a query needs on this server, if any."""
    helper: tuple[Validator, Metric] | None = None
    for v, m in selected(validators, ran):
        try:
            for query in (m.numerator, m.denominator):
                if needs_safe_jsonb(str(query.compile(dialect=db.sa_dialect))):
                    helper = helper or (v, m)
        except CompileError as e:
            raise EnvironmentProblem(
                f"validator {v.name!r} cannot compute {m.name!r} on {db.display_url}: {e} "
                "(`backfill run --no-validate` skips validation)"
            ) from None
    if helper is not None:
        async with db.sqlalchemy() as conn:
            try:
                await conn.exec_driver_sql(SAFE_JSONB_FUNCTION)
            except DBAPIError as e:
                v, m = helper
                raise EnvironmentProblem(
                    f"validator {v.name!r} cannot compute {m.name!r} on {db.display_url}: "
                    f"{_helper_problem(e, db)} (`backfill run --no-validate` skips validation)"
                ) from None


async def prepare(conn: AsyncConnection, query: ClauseElement) -> None:
    """Create in ``conn``'s transaction what ``query`` needs on this server (SAFE_JSONB on
    PostgreSQL before 16, gone when the transaction ends); nothing elsewhere."""
    if needs_safe_jsonb(str(query.compile(dialect=conn.dialect))):
        await conn.exec_driver_sql(SAFE_JSONB_FUNCTION)


def _helper_problem(e: DBAPIError, db: Database) -> str:
    """Why SAFE_JSONB could not be created, and what the operator can do about it."""
    name = db.url.database or "DATABASE"
    user = db.url.username or "USER"
    return (
        f"before PostgreSQL 16, reading JSON text safely needs a temporary function ({SAFE_JSONB}), "
        f"which this connection could not create: {str(getattr(e, 'orig', e)).strip()} (the user "
        f'needs the TEMPORARY right on the database, GRANT TEMPORARY ON DATABASE "{name}" TO "{user}", '
        "and a transaction that is not read-only; or use PostgreSQL 16 or later)"
    )


async def run_validators(
    db: Database,
    validators: Sequence[Validator],
    thresholds: Mapping[str, float] | None = None,
    ran: Collection[str] | None = None,
    *,
    command: str = "run",
) -> list[MetricResult]:
    """Compute the metrics of ``validators`` (only those about extractors in ``ran``, if given).

    ``command`` (``run`` or ``validate``) is the one that asked, for the hints in errors.
    """
    thresholds = thresholds or {}
    check_thresholds(validators, thresholds, ran)
    for v in validators:
        gap = await db.schema_gap(v.tables)
        if gap is not None:
            before = "validating" if command == "validate" else "backfilling"
            raise gap.error(db.display_url, user=f"validator {v.name!r}", before=before)
    # Metric queries are whole-table scans: each runs on its own connection, side by side, so
    # that the database (SQLite in its threads, or the server) can use more than one core. A
    # numerator and its denominator are one query when they can be (see fused), else they too
    # run side by side.
    slots = asyncio.Semaphore(max(2, os.cpu_count() or 1))

    # A metric may read the ledger (which rows the runs recorded as failed) where it exists.
    ledger = await Ledger(db).exists()

    async def row(v: Validator, m: Metric, query: Select[Any] | Select[Any, Any]) -> Any:
        async with slots, db.sqlalchemy() as conn:
            try:
                await prepare(conn, query)
            except DBAPIError as e:
                raise EnvironmentProblem(
                    f"validator {v.name!r} could not compute {m.name!r}: {_helper_problem(e, db)} "
                    f"{_way_around(v, validators, command)}"
                ) from e
            try:
                return (await conn.execute(query.execution_options(backfill_ledger=ledger))).one()
            except (DBAPIError, CompileError) as e:
                why = getattr(e, "orig", e)
                if is_decode_failure(why):  # a metric counts over text; it need never return it
                    why = f"{why}: its query returned TEXT that is not valid UTF-8; a metric returns numbers"
                raise EnvironmentProblem(
                    f"validator {v.name!r} could not compute {m.name!r}: {why} "
                    f"{_way_around(v, validators, command)}"
                ) from e

    async def compute(v: Validator, m: Metric) -> MetricResult:
        queries = metric_queries(m, db.sa_dialect)
        if len(queries) == 1:
            num, den = await row(v, m, queries[0])
        else:
            rows = await asyncio.gather(*(row(v, m, q) for q in queries))
            num, den = rows[0][0], rows[1][0]
        threshold = (
            None
            if m.threshold is None
            else thresholds.get(f"{v.name}.{m.name}", thresholds.get(v.name, m.threshold))
        )
        return MetricResult(v.name, m.name, m.description, int(num or 0), int(den or 0), threshold)

    with db.named("backfill:validate"):  # as pg_stat_activity shows the metric queries
        tasks = [asyncio.ensure_future(compute(v, m)) for v, m in selected(validators, ran)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:  # after a failure, stop the other metrics before the database closes
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _way_around(v: Validator, validators: Sequence[Validator], command: str) -> str:
    """How to do without validator ``v`` in ``command``, for an error it ends."""
    if command != "validate":
        return "(`backfill run --no-validate` skips validation)"
    others = [w.name for w in validators if w is not v]
    if others:
        return f"(`backfill validate {' '.join(others)}` validates without {v.name!r})"
    return f"(leave {v.name!r} out: `backfill validate NAME...` validates only the validators named)"


def metric_queries(m: Metric, dialect: Dialect) -> list[Select[Any, Any]]:
    """The queries that compute ``m``: one giving ``(numerator, denominator)`` when they can be
    fused, else the numerator's and the denominator's, each giving its count."""
    both = fused(m, dialect)
    return [both] if both is not None else [m.numerator, m.denominator]


_IN_SUBQUERY = re.compile(r"\bIN\s*\(\s*SELECT\b", re.IGNORECASE)


def fused(m: Metric, dialect: Dialect) -> Select[Any, Any] | None:
    """One query giving ``(numerator, denominator)`` in a single scan, when the denominator is a
    plain ``count(*)`` and the numerator is the same query with more conditions; else None.

    The usual coverage metric ("rows with X that also have Y" over "rows with X") otherwise
    scans the table twice, evaluating X (often a JSON function) each time. A numerator whose
    extra conditions hold an ``IN (SELECT ...)`` is left apart: in its WHERE the database runs it
    as a semi-join, but inside the fused count it is a subquery per row, which PostgreSQL scans in
    full for every row once the subquery's hash table outgrows work_mem.
    """
    num, den = m.numerator, m.denominator
    within, also = _conjuncts(den), _conjuncts(num)
    extra = [c for c in also if not any(c.compare(d) for d in within)]
    if len(also) - len(extra) != len(within):
        return None
    # The rendered SQL decides: the numerator must be the denominator plus the extra conditions,
    # and the denominator a count and nothing more (one row, one column).
    try:
        plain = str(den.compile(dialect=dialect))
        same = str(num.compile(dialect=dialect)) == str(den.where(*extra).compile(dialect=dialect))
        count_only = plain == str(den.with_only_columns(func.count()).compile(dialect=dialect))
    except CompileError:  # computed apart, the queries report it
        return None
    # Clauses are matched as words: the compiler puts a newline, not a space, before some
    # (HAVING), and a space before others (GROUP BY).
    words = f" {' '.join(plain.split())} "
    if (
        not same
        or not count_only
        or any(f" {w} " in words for w in ("GROUP BY", "HAVING", "LIMIT", "OFFSET", "DISTINCT"))
    ):
        return None
    if extra and _IN_SUBQUERY.search(str(and_(*extra).compile(dialect=dialect))):
        return None
    counted = func.count(case((and_(*extra), 1))) if extra else func.count()
    return den.with_only_columns(counted, func.count())


def _conjuncts(query: Select[Any]) -> list[ColumnElement[Any]]:
    where = query.whereclause
    if where is None:
        return []
    if isinstance(where, BooleanClauseList) and where.operator is and_op:
        return list(where.clauses)
    return [where]
