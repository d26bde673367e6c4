"""One ``backfill run``: extractors in dependency order, then the validators that cover them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict

from sqlalchemy.engine import URL

from backfill_core.database import Database, busy_timeout
from backfill_core.engine import BatchRunner, ProgressFactory, RunOptions
from backfill_core.extraction import BatchExtractor
from backfill_core.ledger import SUCCEEDED, Ledger
from backfill_core.overlay import Overlay
from backfill_core.plugins import Registry
from backfill_core.report import RunReport
from backfill_core.validation import check_compiles, check_thresholds, run_validators
from backfill_core.worker import Worker, can_run


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
    restart: bool = False,
    retry_errors: bool = False,
    announce: Callable[[str], object] = lambda _line: None,
) -> RunReport:
    """Run ``names`` into ``report``, which holds partial results if the run is interrupted.

    A real run records itself in the ledger and resumes the extractors' interrupted or failed
    runs from their checkpoints (unless ``restart``); a dry run reads only and records nothing.
    """
    extractors = registry.ordered(names)
    validators = registry.validators_for(x.name for x in extractors) if validate else []
    ran = [x.name for x in extractors]
    plan = ",".join(ran)
    extracting = [BatchExtractor(x, _plugin_label(registry, x.name)) for x in extractors]
    # The worker is forked first, before any connection or temporary file exists for it to
    # inherit; the overlay keeps a dry run's would-be rows on disk.
    with _worker(url, options, extracting) as worker, closing(Overlay()) as overlay:
        async with Database(url, read_only=options.dry_run) as db:
            ledger = None if options.dry_run else Ledger(db)
            runners = [
                BatchRunner(db, x, options, report.errors, progress, overlay, ledger, worker)
                for x in extracting
            ]
            for runner in runners:  # every schema is checked before anything is written
                await runner.check_schema()
            for v in validators:
                await db.check_schema(v.tables)
            check_thresholds(validators, thresholds or {}, ran)
            if not options.dry_run:  # a dry run does not validate
                check_compiles(db, validators, ran)
            done: dict[str, int] = {}
            invocation = uuid.uuid4().hex
            if ledger is not None:
                await ledger.ensure()
                previous = await ledger.latest_of(ran)
                if previous is not None and not restart and not retry_errors and previous.plan == plan:
                    # An unfinished command is resumed: one whose newest run ended early, or
                    # whose extractors did not all start (it was stopped between two of them).
                    finished = await ledger.succeeded_in(previous.invocation)
                    if previous.status != SUCCEEDED or not finished.keys() >= set(ran):
                        invocation, done = previous.invocation, finished
            for runner in runners:
                report.extractors.append(runner.stats)
                if runner.x.name in done:
                    runner.stats.run_id = done[runner.x.name]
                    runner.stats.note = f"already completed in run {done[runner.x.name]} of this command"
                    announce(f"{runner.x.name}: {runner.stats.note}")
                    continue
                if ledger is None:
                    await runner.run()
                elif retry_errors:
                    await _retry(
                        ledger, runner, options, invocation, announce, _version(registry, runner.x.name)
                    )
                else:
                    state = await ledger.begin(
                        runner.x.name,
                        plugin=runner.stats.plugin,
                        version=_version(registry, runner.x.name),
                        invocation=invocation,
                        plan=plan,
                        options=_options(options),
                        restart=restart,
                        depends_on=runner.x.depends_on,
                    )
                    if state.note:
                        announce(state.note)
                    await runner.run(state)
                if runner.stats.stopped:
                    report.validation_skipped = "the run stopped early"
                    return report
            if not validate:
                report.validation_skipped = "--no-validate"
            elif options.dry_run:
                report.validation_skipped = "dry run"
            else:
                report.validation = await run_validators(db, validators, thresholds, ran)
    return report


async def _retry(
    ledger: Ledger,
    runner: BatchRunner,
    options: RunOptions,
    invocation: str,
    announce: Callable[[str], object],
    version: str,
) -> None:
    """Reprocess only the keys recorded as failed in the extractor's latest run.

    An unfinished retry is resumed: the keys it had not reached are still recorded as errors of
    the run it retries.
    """
    name = runner.x.name
    latest = await ledger.latest(name)
    if latest is None:
        runner.stats.note = "no earlier run, so no errors to retry"
        announce(f"{name}: {runner.stats.note}")
        return
    unfinished_retry = latest.retry_of is not None and latest.status != SUCCEEDED
    original = latest.retry_of if unfinished_retry else latest.id
    keys = await ledger.error_keys(original)
    state = await ledger.begin(
        name,
        plugin=runner.stats.plugin,
        version=version,
        invocation=invocation,
        plan="retry",
        options={**_options(options), "retry_errors": True},
        restart=False,
        retry_of=original,
    )
    if state.resumed:
        announce(f"{name}: resuming retry run {state.id} over {len(keys)} failed keys of run {original}")
    else:
        announce(f"{name}: retrying {len(keys)} failed keys of run {original} as run {state.id}")
    state.note = f"retried {len(keys)} failed keys of run {original}"
    await runner.run(state, keys=keys, clear_run=original)


async def validate_only(
    registry: Registry,
    names: Sequence[str],
    url: URL,
    report: RunReport,
    thresholds: Mapping[str, float] | None = None,
) -> RunReport:
    """Run validators (all of them when ``names`` is empty) without extracting anything."""
    validators = [registry.validator(n) for n in names] if names else list(registry.validators.values())
    async with Database(url) as db:  # read-write only so that a hot journal can be recovered
        report.validation = await run_validators(db, validators, thresholds)
    return report


@contextmanager
def _worker(url: URL, options: RunOptions, extractors: list[BatchExtractor]) -> Iterator[Worker | None]:
    """An extraction worker for a run on a SQLite file, where one can run and is wanted."""
    if not (options.worker and url.get_backend_name() == "sqlite" and url.database and can_run()):
        yield None
        return
    try:
        forked = Worker.fork(extractors, url.database, busy_timeout())
    except OSError:  # no process to spare (EAGAIN, ENOMEM): extract here instead
        yield None
        return
    try:
        yield forked
    finally:
        forked.stop()


def _options(options: RunOptions) -> dict[str, object]:
    return {k: v for k, v in asdict(options).items() if k not in ("sample_size", "worker")}


def _plugin_label(registry: Registry, extractor: str) -> str:
    info = registry.owner.get(("extractor", extractor))
    return f"{info.name} ({info.distribution} {info.version})" if info else ""


def _version(registry: Registry, extractor: str) -> str:
    info = registry.owner.get(("extractor", extractor))
    return info.version if info else ""
