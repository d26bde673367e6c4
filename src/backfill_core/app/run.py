"""One ``backfill run``: extractors in dependency order, then the validators that cover them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, closing, contextmanager
from dataclasses import asdict, dataclass
from functools import partial

from sqlalchemy.engine import URL

from backfill_core.app.report import RunReport
from backfill_core.app.validation import check_compiles, check_thresholds, run_validators
from backfill_core.engine.batch import Converter
from backfill_core.engine.constraints import Refusals, reflect
from backfill_core.engine.lanes import PARTS_PER_LANE, Lanes
from backfill_core.engine.loop import BatchLoop
from backfill_core.engine.options import ProgressFactory, RunOptions
from backfill_core.engine.overlay import Overlay
from backfill_core.engine.pool import ExtractionPool, can_fork, can_run
from backfill_core.engine.retry import retried
from backfill_core.engine.sources import Pages, RetryKeys, Source, split
from backfill_core.engine.stats import ExtractorStats
from backfill_core.engine.throttle import Brakes
from backfill_core.engine.writer import Writer
from backfill_core.errors import EnvironmentProblem, NothingToDo
from backfill_core.plugins import DISABLE_PLUGINS_ENV, Registry
from backfill_core.store.controls import Controls
from backfill_core.store.database import Database, busy_timeout
from backfill_core.store.ledger import SUCCEEDED, Ledger, RunState
from backfill_core.store.records import KeyRange
from backfill_core.validator import Validator


@dataclass(frozen=True)
class Skipped:
    """An extractor or validator that the command chose itself (``run --all``, a bare ``validate``,
    the validators of the extractors that ran) and left out, because the database lacks one of its
    tables or, for an extractor, because an extractor it depends on was left out."""

    kind: str
    """``extractor`` or ``validator``."""
    name: str
    plugin: str
    """The name of the plugin that registered it."""
    reason: str

    def __str__(self) -> str:
        return f"skipped {self.kind} {self.name!r} (plugin {self.plugin}): {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "plugin": self.plugin, "reason": self.reason}


Skip = Callable[[Skipped], None]


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
    explicit: bool = True,
    skipped: list[Skipped] | None = None,
) -> RunReport:
    """Run ``names`` into ``report``, which holds partial results if the run is interrupted.

    A real run records itself in the ledger and resumes the extractors' interrupted or failed
    runs from their checkpoints (unless ``restart``); a dry run reads only and records nothing.
    Unless the user named them (``explicit``; not so for ``run --all``), extractors whose tables
    are absent, and those depending on them, are skipped, as are the validators chosen for the
    extractors that run: each is announced and appended to ``skipped``.
    """
    extractors = registry.ordered(names)
    converters = [Converter(x, plugin_label(registry, x.name)) for x in extractors]
    left_out: list[Skipped] = []
    skip = skipper(left_out, skipped, announce)
    # The workers are forked first, before any connection or temporary file exists for them to
    # inherit; the overlay keeps a dry run's would-be rows on disk.
    with _pools(url, options, converters) as pools, closing(Overlay()) as overlay:
        async with Database(url, read_only=options.dry_run) as db, _closing_first(pools):
            converters, chosen, validators = await checked(
                db,
                registry,
                converters,
                left_out,
                skip,
                explicit=explicit,
                validate=validate,
                thresholds=thresholds,
                compile_validators=not options.dry_run,  # a dry run does not validate
            )
            ran = [x.name for x in converters]
            plan = ",".join(ran)
            ledger = None if options.dry_run else Ledger(db)
            writers = [await writer_for(db, x, options, overlay) for x in converters]
            done: dict[str, int] = {}
            invocation = uuid.uuid4().hex
            controls = None if ledger is None else Controls(db)
            brakes = Brakes(db, options, registry.throttles(), announce, controls)
            if ledger is not None and controls is not None:
                await retried(ledger.ensure, options.lock_retries, what="the ledger", announce=announce)
                await retried(controls.ensure, options.lock_retries, what="the controls", announce=announce)
                if not restart and not retry_errors:
                    invocation, done = await resumed(ledger, ran) or (invocation, done)
            for x, writer in zip(converters, writers, strict=True):
                stats = ExtractorStats(x.name, plugin=x.plugin, dry_run=options.dry_run)
                report.extractors.append(stats)
                if x.name in done:
                    stats.run_id = done[x.name]
                    stats.note = f"already completed in run {done[x.name]} of this command"
                    announce(f"{x.name}: {stats.note}")
                    continue
                loop = BatchLoop(db, writer, options, report.errors, progress, ledger, announce, brakes)
                if ledger is None:
                    await loop.run(await _pages(db, pools, x, [KeyRange()], options), stats)
                elif retry_errors:
                    retry = await _retry(
                        ledger, db, x, stats, options, invocation, announce, version_of(registry, x.name)
                    )
                    if retry is not None:
                        await loop.run(*retry)
                else:
                    state = await retried(
                        partial(
                            ledger.begin,
                            x.name,
                            plugin=x.plugin,
                            version=version_of(registry, x.name),
                            invocation=invocation,
                            plan=plan,
                            options=recorded_options(options),
                            restart=restart,
                            depends_on=x.extractor.depends_on,
                        ),
                        options.lock_retries,
                        what=f"{x.name}: starting its run in the ledger",
                        announce=announce,
                    )
                    if state.note:
                        announce(state.note)
                    await loop.run(await _pages(db, pools, x, state.todo, options), stats, state)
                if stats.stopped:
                    report.validation_skipped = "the run stopped early"
                    return report
            if not validate:
                report.validation_skipped = "--no-validate"
            elif options.dry_run:
                report.validation_skipped = "dry run"
            elif chosen and not validators:
                report.validation_skipped = "the validators of these extractors lack their tables"
            else:
                report.validation = await run_validators(db, validators, thresholds, ran)
    return report


async def checked(
    db: Database,
    registry: Registry,
    converters: list[Converter],
    left_out: list[Skipped],
    skip: Skip,
    *,
    explicit: bool,
    validate: bool,
    thresholds: Mapping[str, float] | None,
    compile_validators: bool = True,
) -> tuple[list[Converter], list[Validator], list[Validator]]:
    """What a command that backfills checks before it writes anything: the extractors it can run
    (see :func:`usable_extractors`; NothingToDo when none is left), the validators chosen for them
    and those whose tables exist, every extractor's tables and columns, the ``thresholds``, and
    (``compile_validators``) whether every metric query compiles for this database."""
    converters = await usable_extractors(db, registry, converters, explicit, skip)
    if not converters and left_out:
        raise NothingToDo(
            f"nothing to run: every extractor was skipped, since {db.display_url} lacks tables they "
            "need (see the lines above); check --database, or name an extractor to see what it needs",
            [s.to_dict() for s in left_out],
        )
    ran = [x.name for x in converters]
    chosen = registry.validators_for(ran) if validate else []
    validators = await usable_validators(db, registry, chosen, False, "backfilling", skip)
    for x in converters:
        await db.check_schema({x.extractor.source_table: x.cols, **x.written})
    check_thresholds(validators, thresholds or {}, ran, _validators_of(left_out))
    if compile_validators:
        await check_compiles(db, validators, ran)
    return converters, chosen, validators


async def resumed(ledger: Ledger, ran: Sequence[str]) -> tuple[str, dict[str, int]] | None:
    """The invocation of the unfinished command that ran the extractors ``ran`` (one whose newest
    run ended early, or whose extractors did not all start: it was stopped between two of them),
    with the runs that completed in it by extractor; None if there is none to resume."""
    previous = await ledger.latest_of(ran)
    if previous is None or previous.plan != ",".join(ran):
        return None
    finished = await ledger.succeeded_in(previous.invocation)
    if previous.status == SUCCEEDED and finished.keys() >= set(ran):
        return None
    return previous.invocation, finished


def skipper(into: list[Skipped], also: list[Skipped] | None, announce: Callable[[str], object]) -> Skip:
    """Record a skipped extractor or validator in ``into`` and ``also``, and announce it."""

    def skip(item: Skipped) -> None:
        into.append(item)
        if also is not None:
            also.append(item)
        announce(str(item))

    return skip


def _validators_of(skipped: Sequence[Skipped]) -> dict[str, str]:
    return {s.name: s.reason for s in skipped if s.kind == "validator"}


async def usable_extractors(
    db: Database, registry: Registry, extracting: list[Converter], named: bool, skip: Skip
) -> list[Converter]:
    """The extractors whose tables and columns exist. Unless they were ``named``, one whose table
    is absent is skipped, and so is one that depends on a skipped one; otherwise a missing table
    or column ends the command (SchemaMissing)."""
    usable: list[Converter] = []
    left_out: set[str] = set()
    for extract in extracting:
        x = extract.extractor
        reads = {x.source_table: set(extract.cols)}
        needed = dict(reads)  # the source first: the table that tells whose database this is
        for table, columns in extract.written.items():
            needed[table] = needed.get(table, set()) | columns
        gap = await db.schema_gap(needed)
        plugin = _plugin_name(registry, "extractor", x.name)
        after = next((d for d in x.depends_on if d in left_out), None)
        if not named and gap is not None and not gap.columns:
            skip(Skipped("extractor", x.name, plugin, gap.describe(db.display_url)))
        elif not named and after is not None:
            skip(
                Skipped("extractor", x.name, plugin, f"it depends on extractor {after!r}, which was skipped")
            )
        elif gap is not None:
            read, written = (
                (gap.table in reads, gap.table in extract.written)
                if not gap.columns
                else (
                    any(c in reads.get(gap.table, ()) for c in gap.columns),
                    any(c in extract.written.get(gap.table, ()) for c in gap.columns),
                )
            )
            raise gap.error(
                db.display_url,
                user=f"extractor {x.name!r} (plugin {plugin})",
                uses="reads and writes" if read and written else "reads" if read else "writes",
                before="backfilling",
                leave_out=(
                    f"leave {x.name!r} out (`backfill run --all` skips it) or disable its plugin "
                    f"({DISABLE_PLUGINS_ENV}={plugin})"
                    if read
                    else ""
                ),
            )
        else:
            usable.append(extract)
            continue
        left_out.add(x.name)
    return usable


async def usable_validators(
    db: Database, registry: Registry, validators: Sequence[Validator], named: bool, before: str, skip: Skip
) -> list[Validator]:
    """The validators whose tables and columns exist. Unless they were ``named``, one whose table
    is absent is skipped; otherwise a missing table or column ends the command (SchemaMissing)."""
    usable: list[Validator] = []
    for v in validators:
        gap = await db.schema_gap(v.tables)
        plugin = _plugin_name(registry, "validator", v.name)
        if gap is None:
            usable.append(v)
        elif not named and not gap.columns:
            skip(Skipped("validator", v.name, plugin, gap.describe(db.display_url)))
        else:
            raise gap.error(
                db.display_url,
                user=f"validator {v.name!r} (plugin {plugin})",
                before=before,
                leave_out=(
                    f"leave {v.name!r} out (a bare `backfill validate` skips it) or disable its plugin "
                    f"({DISABLE_PLUGINS_ENV}={plugin})"
                ),
            )
    return usable


async def _retry(
    ledger: Ledger,
    db: Database,
    converter: Converter,
    stats: ExtractorStats,
    options: RunOptions,
    invocation: str,
    announce: Callable[[str], object],
    version: str,
) -> tuple[Source, ExtractorStats, RunState] | None:
    """The run that reprocesses only the keys recorded as failed in the extractor's latest run
    (None if it has none): its source, stats and ledger run.

    An unfinished retry is resumed: the keys it had not reached are still recorded as errors of
    the run it retries.
    """
    name = converter.name
    latest = await ledger.latest(name)
    if latest is None:
        stats.note = "no earlier run, so no errors to retry"
        announce(f"{name}: {stats.note}")
        return None
    unfinished_retry = latest.retry_of is not None and latest.status != SUCCEEDED
    original = latest.retry_of if unfinished_retry else latest.id
    keys = await ledger.error_keys(original)
    state = await retried(
        partial(
            ledger.begin,
            name,
            plugin=converter.plugin,
            version=version,
            invocation=invocation,
            plan="retry",
            options={**recorded_options(options), "retry_errors": True},
            restart=False,
            retry_of=original,
        ),
        options.lock_retries,
        what=f"{name}: starting its retry run",
        announce=announce,
    )
    if state.resumed:
        announce(f"{name}: resuming retry run {state.id} over {len(keys)} failed keys of run {original}")
    else:
        announce(f"{name}: retrying {len(keys)} failed keys of run {original} as run {state.id}")
    state.note = f"retried {len(keys)} failed keys of run {original}"
    return RetryKeys(db, converter, keys, options.batch_size, original), stats, state


async def validate_only(
    registry: Registry,
    names: Sequence[str],
    url: URL,
    report: RunReport,
    thresholds: Mapping[str, float] | None = None,
    *,
    announce: Callable[[str], object] = lambda _line: None,
    skipped: list[Skipped] | None = None,
) -> RunReport:
    """Run validators (all of them when ``names`` is empty) without extracting anything.

    Without ``names``, a validator whose table is absent is skipped: announced and appended to
    ``skipped``. A validator named whose table or column is missing ends the command.
    """
    validators = [registry.validator(n) for n in names] if names else list(registry.validators.values())
    left_out: list[Skipped] = []
    async with Database(url) as db:  # read-write only so that a hot journal can be recovered
        skip = skipper(left_out, skipped, announce)
        usable = await usable_validators(db, registry, validators, bool(names), "validating", skip)
        if validators and not usable:
            raise NothingToDo(
                f"nothing to validate: every validator was skipped, since {db.display_url} lacks tables they "
                "need (see the lines above); check --database, or name a validator to see what it needs",
                [s.to_dict() for s in left_out],
            )
        check_thresholds(usable, thresholds or {}, None, _validators_of(left_out))
        report.validation = await run_validators(db, usable, thresholds, command="validate")
    return report


@contextmanager
def _pools(url: URL, options: RunOptions, converters: list[Converter]) -> Iterator[list[ExtractionPool]]:
    """The extraction workers of a run: ``options.workers`` of them when that is above 1, else
    one for a run on a SQLite file where one can run and is wanted, else none."""
    sqlite = url.get_backend_name() == "sqlite"
    if options.workers > 1:
        if not can_fork():
            raise EnvironmentProblem(
                f"--workers {options.workers} forks worker processes, which needs Linux and a "
                "process with no other thread; run without --workers"
            )
    elif not (options.worker and sqlite and url.database and can_run()):
        yield []
        return
    pools: list[ExtractionPool] = []
    try:
        # The second worker onwards is forked beside the first one's executor threads, which
        # hold nothing the new worker uses.
        database = (url.database or "") if sqlite else url
        for _ in range(options.workers):
            pools.append(ExtractionPool(converters, database, busy_timeout(), share=options.workers == 1))
    except OSError as e:  # no process to spare (EAGAIN, ENOMEM)
        for pool in pools:
            pool.close()
        if options.workers > 1:
            raise EnvironmentProblem(
                f"--workers {options.workers}: the system has no process to spare ({e}); "
                "run with fewer workers"
            ) from e
        pools = []  # one worker wanted: extract here instead
    try:
        yield pools
    finally:
        for pool in pools:
            pool.close()


@asynccontextmanager
async def _closing_first(pools: Sequence[ExtractionPool]) -> AsyncIterator[None]:
    """End the workers, and their connections, before this process closes its own: on a WAL
    file the connection that closes last checkpoints and removes the -wal and -shm files, and
    only one that may write can."""
    try:
        yield
    finally:
        for pool in pools:
            pool.close()


async def _pages(
    db: Database,
    pools: Sequence[ExtractionPool],
    converter: Converter,
    todo: Sequence[KeyRange],
    options: RunOptions,
) -> Source:
    """The source of a run over the key ranges ``todo``: extracted by the workers where there
    are some, each taking parts of the ranges in turn where there are several."""
    size = options.batch_size
    if len(pools) > 1:
        parts, rows = await split(db, converter, todo, PARTS_PER_LANE * len(pools))
        return Lanes([partial(pool.pages, db, converter, size=size) for pool in pools], parts, rows, size)
    if pools:
        return pools[0].pages(db, converter, todo, size)
    return Pages(db, converter, todo, size)


async def writer_for(
    db: Database, converter: Converter, options: RunOptions, overlay: Overlay | None = None
) -> Writer:
    """The extractor's writer; a dry run's (which needs the ``overlay``) checks its plans against
    the target tables' constraints."""
    writer = Writer(
        db,
        converter.name,
        converter.written,
        sample_size=options.sample_size,
        overlay=overlay if options.dry_run else None,
    )
    if options.dry_run:
        assert overlay is not None, "a dry run keeps its would-be rows in an overlay"
        rules = await reflect(db, list(converter.written))
        writer.refusals = Refusals(rules, db, writer.select, overlay)
    return writer


def recorded_options(options: RunOptions) -> dict[str, object]:
    return {k: v for k, v in asdict(options).items() if k not in ("sample_size", "worker")}


def plugin_label(registry: Registry, extractor: str) -> str:
    info = registry.owner.get(("extractor", extractor))
    return f"{info.name} ({info.distribution} {info.version})" if info else ""


def _plugin_name(registry: Registry, kind: str, name: str) -> str:
    info = registry.plugin_of(kind, name)
    return info.name if info else "?"


def version_of(registry: Registry, extractor: str) -> str:
    info = registry.owner.get(("extractor", extractor))
    return info.version if info else ""
