"""One ``backfill run``: extractors in dependency order, then the validators that cover them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.engine import URL

from backfill_core.database import Database
from backfill_core.engine import BatchRunner, Overlay, ProgressFactory, RunOptions
from backfill_core.plugins import Registry
from backfill_core.report import RunReport
from backfill_core.validation import run_validators


async def run_backfill(
    registry: Registry,
    names: Sequence[str],
    url: URL,
    options: RunOptions,
    report: RunReport,
    *,
    validate: bool = True,
    thresholds: Mapping[str, float] | None = None,
    progress: ProgressFactory | None = None,
) -> RunReport:
    """Run ``names`` into ``report``, which holds partial results if the run is interrupted."""
    extractors = registry.ordered(names)
    validators = registry.validators_for(x.name for x in extractors) if validate else []
    async with Database(url, read_only=options.dry_run) as db:
        overlay = Overlay()
        runners = [
            BatchRunner(
                db, x, options, report.errors, progress, overlay, plugin=_plugin_label(registry, x.name)
            )
            for x in extractors
        ]
        for runner in runners:  # every schema is checked before anything is written
            await runner.check_schema()
        for v in validators:
            await db.check_schema(v.tables)
        for runner in runners:
            report.extractors.append(runner.stats)
            await runner.run()
            if runner.stats.stopped:
                report.validation_skipped = "the run stopped early"
                return report
        if not validate:
            report.validation_skipped = "--no-validate"
        elif options.dry_run:
            report.validation_skipped = "dry run"
        else:
            report.validation = await run_validators(db, validators, thresholds)
    return report


async def validate_only(
    registry: Registry,
    names: Sequence[str],
    url: URL,
    report: RunReport,
    thresholds: Mapping[str, float] | None = None,
) -> RunReport:
    """Run validators (all of them when ``names`` is empty) without extracting anything."""
    validators = [registry.validator(n) for n in names] if names else list(registry.validators.values())
    async with Database(url, read_only=True) as db:
        report.validation = await run_validators(db, validators, thresholds)
    return report


def _plugin_label(registry: Registry, extractor: str) -> str:
    info = registry.owner.get(("extractor", extractor))
    return f"{info.name} ({info.distribution} {info.version})" if info else ""
