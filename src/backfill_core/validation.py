"""Running validators: the engine executes the metric queries each validator builds."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.exc import CompileError, DBAPIError

from backfill_core.database import Database
from backfill_core.errors import EnvironmentProblem, UsageError
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
    validators: Sequence[Validator], thresholds: Mapping[str, float], ran: Collection[str] | None = None
) -> None:
    """Raise UsageError for a --threshold that names no metric about to be computed."""
    chosen = selected(validators, ran)
    known = {v.name for v, _ in chosen} | {f"{v.name}.{m.name}" for v, m in chosen if m.threshold is not None}
    unknown = sorted(set(thresholds) - known)
    if unknown:
        raise UsageError(
            f"--threshold names no metric being validated: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known)) or 'none'})"
        )


def check_compiles(db: Database, validators: Sequence[Validator], ran: Collection[str] | None = None) -> None:
    """Compile every metric query for this database before anything is written."""
    for v, m in selected(validators, ran):
        try:
            for query in (m.numerator, m.denominator):
                query.compile(dialect=db.sa_dialect)
        except CompileError as e:
            raise EnvironmentProblem(
                f"validator {v.name!r} cannot compute {m.name!r} on {db.shown}: {e} "
                "(`backfill run --no-validate` skips validation)"
            ) from None


async def run_validators(
    db: Database,
    validators: Sequence[Validator],
    thresholds: Mapping[str, float] | None = None,
    ran: Collection[str] | None = None,
) -> list[MetricResult]:
    """Compute the metrics of ``validators`` (only those about extractors in ``ran``, if given)."""
    thresholds = thresholds or {}
    check_thresholds(validators, thresholds, ran)
    for v in validators:
        await db.check_schema(v.tables)
    # Metric queries are whole-table scans: each runs on its own connection, side by side, so
    # that the database (SQLite in its threads, or the server) can use more than one core; a
    # numerator and its denominator often scan the same table, so they run side by side too.
    slots = asyncio.Semaphore(max(2, os.cpu_count() or 1))

    async def count(v: Validator, m: Metric, query: Select[Any]) -> Any:
        async with slots, db.reading() as conn:
            try:
                return (await conn.execute(query)).scalar_one()
            except (DBAPIError, CompileError) as e:
                raise EnvironmentProblem(
                    f"validator {v.name!r} could not compute {m.name!r}: {getattr(e, 'orig', e)} "
                    "(`backfill run --no-validate` skips validation)"
                ) from e

    async def compute(v: Validator, m: Metric) -> MetricResult:
        num, den = await asyncio.gather(count(v, m, m.numerator), count(v, m, m.denominator))
        threshold = (
            None
            if m.threshold is None
            else thresholds.get(f"{v.name}.{m.name}", thresholds.get(v.name, m.threshold))
        )
        return MetricResult(v.name, m.name, m.description, int(num or 0), int(den or 0), threshold)

    tasks = [asyncio.ensure_future(compute(v, m)) for v, m in selected(validators, ran)]
    try:
        return list(await asyncio.gather(*tasks))
    finally:  # after a failure, stop the other metrics before the database closes
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
