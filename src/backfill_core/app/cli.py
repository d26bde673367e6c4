"""The ``backfill`` command line."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import shlex
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import URL

from backfill_core.app import control
from backfill_core.app.batch_options import adaptive_batches, batch_size_options
from backfill_core.app.control import NonNegative
from backfill_core.app.progress import tqdm_progress
from backfill_core.app.report import RunReport, describe_batches
from backfill_core.app.run import Skipped, run_backfill, validate_only
from backfill_core.app.validation import parse_thresholds
from backfill_core.engine.options import RunOptions
from backfill_core.engine.stats import ErrorLog
from backfill_core.engine.stoppoints import stop_here, stops_at_exit
from backfill_core.errors import BackfillError, NothingToDo, UsageError
from backfill_core.plugins import (
    DISABLE_PLUGIN_OPTION,
    DISABLE_PLUGINS_ENV,
    LOAD_PLUGINS_ENV,
    Registry,
    name_list,
)
from backfill_core.store.database import BUSY_TIMEOUT_ENV, DATABASE_ENV, Database, display, resolve_url
from backfill_core.store.ledger import STALE_AFTER_ENV, Ledger, decode_key, run_summary
from backfill_core.store.records import BatchSizes

DEFAULT_PARTS = 32

EPILOG = f"""
\b
Exit codes:
  0    success, and validation passed
  1    validation failed, or the error rate went over --max-error-rate
  2    usage error (unknown extractor, bad option)
  3    environment error (database missing, unreachable or locked, schema
       missing, a requested plugin failed to load, the run already running,
       nothing left to run or validate once those lacking tables are skipped)
  130  interrupted by SIGINT (Ctrl-C) after the batch in flight; resumable
  143  interrupted by SIGTERM, likewise

\b
Environment:
  {DATABASE_ENV}    default for --database
  {LOAD_PLUGINS_ENV}    comma-separated distributions to load ('' = built-ins only)
  {DISABLE_PLUGINS_ENV} comma-separated plugins to leave out, built-ins included
  {BUSY_TIMEOUT_ENV}    seconds to wait for a locked SQLite database (10)
  {STALE_AFTER_ENV}     seconds without a heartbeat before another host's run
                           counts as dead and may be taken over, or a worker's
                           jobs are retried by the others (60)
"""


class Share(click.FloatRange):
    """A number from 0 to 1. Not NaN: every comparison with NaN is false, so FloatRange lets it
    through, and as --max-error-rate it would never stop a run."""

    def __init__(self) -> None:
        super().__init__(0, 1)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not in the range {self._describe_range()}.", param, ctx)
        return number


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backfill")
@click.option(
    DISABLE_PLUGIN_OPTION,
    "disabled",
    multiple=True,
    metavar="NAME",
    help="Leave out this plugin (entry-point or distribution name), built-in ones included. "
    "Repeatable, or comma-separated.",
)
@click.pass_context
def cli(ctx: click.Context, disabled: tuple[str, ...]) -> None:
    """Backfill derived tables and columns from data the database already holds."""
    names = [n for value in disabled for n in name_list(value)]
    if names and isinstance(ctx.obj, Registry):  # main() left them out already; a test's registry may not
        unknown = ctx.obj.disable(names, DISABLE_PLUGIN_OPTION)
        if unknown:
            raise click.BadParameter(
                f"no installed plugin is named {', '.join(map(repr, unknown))} "
                f"(installed: {ctx.obj.installed()}); see `backfill list-plugins`",
                param_hint=DISABLE_PLUGIN_OPTION,
            )


def database_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--database",
        "-d",
        metavar="URL|PATH",
        help=f"SQLAlchemy URL or SQLite file path [default: ${DATABASE_ENV}, else ~/.testio-mcp/cache.db]",
    )(f)


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")(f)
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")(f)
    return f


def threshold_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--threshold",
        "thresholds",
        multiple=True,
        metavar="NAME=VALUE",
        help="Override a validation threshold: coverage=0.9 or coverage.tests_with_features=90%.",
    )(f)


def batch_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--batch-size, the adaptive batch options and --max-error-rate: how a run's batches go."""
    f = click.option(
        "--max-error-rate",
        type=Share(),
        default=0.05,
        show_default=True,
        help="Stop when this share of processed rows has failed.",
    )(f)
    f = batch_size_options(f)
    return click.option(
        "--batch-size",
        type=click.IntRange(1, 100_000),
        default=500,
        show_default=True,
        help="Source rows read, extracted and written per transaction (the starting size with "
        "--target-batch-seconds).",
    )(f)


def pacing_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """How a run gives way to the application: lock waits and retries, rate, pauses, replica lag."""
    for option in reversed(_PACING):
        f = option(f)
    return f


_PACING = [
    click.option(
        "--lock-timeout",
        type=click.FloatRange(0, 3600),
        default=RunOptions.lock_timeout,
        show_default=True,
        metavar="SECONDS",
        help="PostgreSQL: how long a batch waits for a row another transaction holds before it is rolled "
        "back and tried again (0: no limit). SQLite waits BACKFILL_BUSY_TIMEOUT instead.",
    ),
    click.option(
        "--lock-retries",
        type=click.IntRange(0, 100),
        default=RunOptions.lock_retries,
        show_default=True,
        metavar="N",
        help="Times a batch that lost to another transaction's lock (timeout, deadlock, serialization "
        "failure, SQLite's 'database is locked') is tried again before the run stops (exit 3, resumable).",
    ),
    click.option(
        "--max-rows-per-second",
        type=NonNegative(above_zero=True),
        metavar="R",
        help="Process at most R source rows per second (`backfill throttle` changes it while running).",
    ),
    click.option(
        "--sleep-between-batches",
        type=NonNegative(),
        default=0,
        show_default=True,
        metavar="SECONDS",
        help="Wait SECONDS before each batch after the first.",
    ),
    click.option(
        "--max-replica-lag",
        type=NonNegative(),
        metavar="SECONDS",
        help="PostgreSQL: wait while a replica replays more than SECONDS behind (pg_stat_replication).",
    ),
]


@cli.command()
@click.argument("names", nargs=-1)
@click.option(
    "--all",
    "run_all",
    is_flag=True,
    help="Run every registered extractor, skipping those whose tables the database lacks.",
)
@database_option
@click.option("--dry-run", is_flag=True, help="Read only: report what would change.")
@batch_options
@click.option("--no-validate", is_flag=True, help="Skip the validators after the run.")
@threshold_option
@click.option("--verbose", "-v", is_flag=True, help="Show a sample of the differences.")
@output_options
@click.option("--restart", is_flag=True, help="Start over instead of resuming an interrupted or failed run.")
@click.option(
    "--retry-errors", is_flag=True, help="Reprocess only the keys that failed in each extractor's latest run."
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append every recorded error to this file as JSON lines.",
)
@click.option(
    "--worker/--no-worker",
    default=True,
    show_default=True,
    help="Read and extract the next batches in a worker process while this one writes "
    "(SQLite on Linux with 2+ CPUs; otherwise extraction runs in the main process).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    metavar="N",
    help="Split each extractor's key ranges into parts and read and extract them in N worker "
    "processes at once, while this process writes (Linux; SQLite or PostgreSQL).",
)
@pacing_options
@click.pass_obj
def run(
    registry: Registry,
    names: tuple[str, ...],
    run_all: bool,
    database: str | None,
    dry_run: bool,
    batch_size: int,
    max_error_rate: float,
    no_validate: bool,
    thresholds: tuple[str, ...],
    verbose: bool,
    quiet: bool,
    as_json: bool,
    restart: bool,
    retry_errors: bool,
    log_file: Path | None,
    worker: bool,
    workers: int,
    target_batch_seconds: float | None,
    min_batch_size: int | None,
    max_batch_size: int | None,
    lock_timeout: float,
    lock_retries: int,
    max_rows_per_second: float | None,
    sleep_between_batches: float,
    max_replica_lag: float | None,
) -> None:
    """Run extractors NAMES (in dependency order), then validate.

    An interrupted or failed run of the same extractors resumes from its last checkpoint.
    """
    if run_all:
        names = tuple(registry.extractors)
        if not names:
            raise click.UsageError(f"--all: no plugin provides an extractor ({_plugins(registry)})")
    if not names:
        raise click.UsageError("name at least one extractor, or pass --all (see `backfill list-plugins`)")
    if dry_run and retry_errors:
        raise click.UsageError("--retry-errors writes; it cannot be combined with --dry-run")
    if restart and retry_errors:
        raise click.UsageError("choose one of --restart and --retry-errors")
    if workers > 1 and not worker:
        raise click.UsageError(
            f"--no-worker extracts in this process; it cannot be combined with --workers {workers}"
        )
    options = _run_options(
        batch_size=batch_size,
        dry_run=dry_run,
        max_error_rate=max_error_rate,
        sample_size=5 if verbose else 0,
        worker=worker,
        workers=workers,
        target_batch_seconds=target_batch_seconds,
        min_batch_size=min_batch_size,
        max_batch_size=max_batch_size,
        lock_timeout=lock_timeout,
        lock_retries=lock_retries,
        max_rows_per_second=max_rows_per_second,
        sleep_between_batches=sleep_between_batches,
        max_replica_lag=max_replica_lag,
    )
    skipped: list[Skipped] = []
    _execute(
        as_json,
        lambda url, report: run_backfill(
            registry,
            names,
            url,
            options,
            report,
            validate=not no_validate,
            thresholds=parse_thresholds(thresholds),
            progress=tqdm_progress(quiet),
            restart=restart,
            retry_errors=retry_errors,
            announce=_announce,
            explicit=not run_all,
            skipped=skipped,
        ),
        database,
        dry_run=dry_run,
        log_file=log_file,
        resume=[
            "backfill",
            *_global_options(),
            "run",
            *(["--all"] if run_all else names),
            *(["--retry-errors"] if retry_errors else []),
        ],
        skipped=skipped,
    )


@cli.command()
@click.argument("names", nargs=-1)
@click.option(
    "--all",
    "run_all",
    is_flag=True,
    help="Enqueue every registered extractor, skipping those whose tables the database lacks.",
)
@database_option
@batch_options
@click.option(
    "--parts",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_PARTS,
    show_default=True,
    metavar="N",
    help="Key-range parts (one job each) each extractor's run is cut into: a few times the jobs "
    "your workers run at once.",
)
@click.option("--no-validate", is_flag=True, help="Do not queue the validators after the last extractor.")
@threshold_option
@click.option("--restart", is_flag=True, help="Start over instead of resuming an interrupted or failed run.")
@click.option("--json", "as_json", is_flag=True, help="Print what was queued as one JSON document.")
@pacing_options
@click.pass_obj
def enqueue(
    registry: Registry,
    /,
    names: tuple[str, ...],
    run_all: bool,
    database: str | None,
    parts: int,
    no_validate: bool,
    thresholds: tuple[str, ...],
    restart: bool,
    as_json: bool,
    **settings: Any,
) -> None:
    """Queue a distributed run of extractors NAMES for `backfill worker` (PostgreSQL).

    Records the run of the first extractor in the ledger, cut into key-range parts, and queues a
    job per part on procrastinate's queue in the same database (applying its schema if missing).
    Each following extractor is queued when the one before it succeeds, then the validators. An
    unfinished command is resumed, as by `backfill run`.
    """
    from backfill_core.app.distributed.commands import enqueue as enqueue_run

    if run_all:
        names = tuple(registry.extractors)
        if not names:
            raise click.UsageError(f"--all: no plugin provides an extractor ({_plugins(registry)})")
    if not names:
        raise click.UsageError("name at least one extractor, or pass --all (see `backfill list-plugins`)")
    url = _url(database, as_json)
    skipped: list[Skipped] = []
    try:
        queued = asyncio.run(
            enqueue_run(
                registry,
                names,
                url,
                _run_options(**settings),
                parts=parts,
                validate=not no_validate,
                thresholds=parse_thresholds(thresholds),
                restart=restart,
                announce=_announce,
                explicit=not run_all,
                skipped=skipped,
            )
        )
    except BackfillError as e:
        _fail(e, as_json)
        return
    if as_json:
        click.echo(json.dumps({**queued.to_dict(), "skipped": [x.to_dict() for x in skipped]}, indent=2))
        return
    shown = _shown_database(database, url)
    if queued.run_id is None:
        click.echo("every extractor of this command has completed; nothing was queued")
        return
    after = [*queued.following, *([] if no_validate else ["validation"])]
    click.echo(
        f"queued run {queued.run_id} of {queued.extractor}: {queued.parts} parts, {queued.rows} rows"
        + (f"; then, in turn: {', '.join(after)}" if after else "")
    )
    click.echo(f"start workers with: backfill worker -d {shlex.quote(shown)}")
    click.echo(f"follow it with:    backfill status -d {shlex.quote(shown)}")


@cli.command()
@database_option
@click.option(
    "--concurrency",
    type=click.IntRange(1, 8),
    default=1,
    show_default=True,
    metavar="N",
    help="Jobs this worker runs at once, each on its own connection (one process: start a worker "
    "per core to use the cores).",
)
@click.pass_obj
def worker(registry: Registry, database: str | None, concurrency: int) -> None:
    """Process the jobs of distributed runs (`backfill enqueue`) until stopped (PostgreSQL).

    Start one on any number of machines. SIGINT or SIGTERM stops it once the batch each job has in
    flight is committed; those jobs go back in the queue, and another worker carries each on from
    its last checkpoint. The job of a worker that died is retried once its heartbeat is older than
    BACKFILL_STALE_AFTER seconds.
    """
    from backfill_core.app.distributed.commands import serve

    url = _url(database, False)
    try:
        asyncio.run(serve(registry, url, concurrency, _announce))
    except BackfillError as e:
        _fail(e, False)


def _run_options(
    *,
    batch_size: int,
    max_error_rate: float,
    target_batch_seconds: float | None,
    min_batch_size: int | None,
    max_batch_size: int | None,
    lock_timeout: float,
    lock_retries: int,
    max_rows_per_second: float | None,
    sleep_between_batches: float,
    max_replica_lag: float | None,
    **more: Any,
) -> RunOptions:
    """The RunOptions of what ``batch_options`` and ``pacing_options`` parsed, and ``more``."""
    return RunOptions(
        batch_size=batch_size,
        max_error_rate=max_error_rate,
        **adaptive_batches(target_batch_seconds, min_batch_size, max_batch_size),
        lock_timeout=lock_timeout,
        lock_retries=lock_retries,
        max_rows_per_second=max_rows_per_second,
        sleep_between_batches=sleep_between_batches,
        max_replica_lag=max_replica_lag,
        **more,
    )


def _plugins(registry: Registry) -> str:
    """The plugins and their status, for a message that none provides what was asked."""
    found = ", ".join(f"{p.name} ({p.status})" for p in registry.plugins) or "none is installed"
    return f"plugins: {found}; see `backfill list-plugins`"


def _announce(line: str) -> None:
    click.echo(f"backfill: {line}", err=True)


def _global_options() -> list[str]:
    """The options given before the command, as the command to resume must repeat them."""
    disabled: tuple[str, ...] = click.get_current_context().find_root().params.get("disabled") or ()
    return [arg for name in disabled for arg in (DISABLE_PLUGIN_OPTION, name)]


@cli.command()
@click.argument("names", nargs=-1)
@database_option
@threshold_option
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON document.")
@click.pass_obj
def validate(
    registry: Registry,
    names: tuple[str, ...],
    database: str | None,
    thresholds: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run validators NAMES (default: all) on the database as it is.

    Without NAMES, validators whose tables the database lacks are skipped.
    """
    if not names and not registry.validators:
        raise click.UsageError(f"nothing to validate: no plugin provides a validator ({_plugins(registry)})")
    skipped: list[Skipped] = []
    _execute(
        as_json,
        lambda url, report: validate_only(
            registry,
            names,
            url,
            report,
            parse_thresholds(thresholds),
            announce=_announce,
            skipped=skipped,
        ),
        database,
        skipped=skipped,
    )


@cli.command()
@database_option
@click.option(
    "--limit", type=click.IntRange(1), default=5, show_default=True, help="Runs shown per extractor."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of runs.")
def status(database: str | None, limit: int, as_json: bool) -> None:
    """Show each extractor's latest runs from the ledger: status, progress, rate, errors."""
    rows, controls, parts = _ledger_call(database, as_json, lambda ledger: control.recent(ledger, limit))
    runs = [control.shown(run_summary(r, socket.gethostname()), controls, parts.get(r.id)) for r in rows]
    if as_json:
        click.echo(json.dumps(runs, indent=2, default=str))
        return
    if not runs:
        click.echo("no runs recorded yet")
        return
    deletes = any(r["deleted"] for r in runs)  # a column only where Children changes deleted
    table = [
        (
            "run",
            "extractor",
            "status",
            "progress",
            "inserted",
            "updated",
            *(("deleted",) if deletes else ()),
            "errors",
            "rows/s",
            "last key",
            "started",
        )
    ]
    for r in runs:
        progress = f"{r['processed']}/{r['total']}" if r["total"] is not None else str(r["processed"])
        table.append(
            (
                str(r["id"]),
                r["extractor"],
                r["status"],
                progress,
                str(r["inserted"]),
                str(r["updated"]),
                *((str(r["deleted"]),) if deletes else ()),
                str(r["errors"]),
                f"{r['rows_per_second']:.0f}",
                str(r["last_key"]),
                str(r["started_at"])[:19],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for r in runs:
        if r["message"]:
            click.echo(f"run {r['id']}: {r['message']}")
        for line in control.lines(r):
            click.echo(line)
    for r, row in zip(runs, rows, strict=True):
        batches = BatchSizes.decode(row.batch_sizes, row.slowest_write)
        if batches.batches:
            click.echo(f"run {r['id']} batches: {describe_batches(batches)}")


@cli.command()
@click.argument("run_id", metavar="RUN", type=int)
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of errors.")
def errors(run_id: int, database: str | None, as_json: bool) -> None:
    """List the record and batch errors recorded for run RUN."""

    async def fetch(ledger: Ledger) -> list[Any]:
        if await ledger.run(run_id) is None:
            raise UsageError(f"no run {run_id} is recorded in {ledger.db.display_url}; see `backfill status`")
        return await ledger.errors_of(run_id)

    found = [
        {
            "key": decode_key(e.key),
            "tier": e.tier,
            "kind": e.kind,
            "message": e.message,
            "created_at": e.created_at,
        }
        for e in _ledger_call(database, as_json, fetch)
    ]
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
        return
    for e in found:
        click.echo(f"key={e['key']!r} [{e['tier']}/{e['kind']}] {e['message']}")
    click.echo(f"{len(found)} errors recorded for run {run_id}", err=True)


def _ledger_call(
    database: str | None, as_json: bool, call: Callable[[Ledger], Coroutine[Any, Any, Any]]
) -> Any:
    """Open the database read-only and run ``call`` with its ledger."""
    url = _url(database, as_json)

    async def go() -> Any:
        # Read-write although it only reads: a hot journal left by a killed run must be
        # recovered before the file can be read, and a read-only connection cannot do that.
        async with Database(url) as db:
            return await call(Ledger(db))

    try:
        return asyncio.run(go())
    except BackfillError as e:
        _fail(e, as_json)


@cli.command()
@click.argument("spec", metavar="RUN|NAME")
@database_option
@click.pass_obj
def pause(registry: Registry, spec: str, database: str | None) -> None:
    """Pause run RUN, or every run of extractor NAME (current and next), from any host.

    Running processes finish the batch in flight, then wait until `backfill resume`; Ctrl-C and
    SIGTERM still interrupt them.
    """
    click.echo(_ledger_call(database, False, lambda ledger: control.pause(ledger, registry, spec)))


@cli.command()
@click.argument("spec", metavar="RUN|NAME")
@database_option
@click.pass_obj
def resume(registry: Registry, spec: str, database: str | None) -> None:
    """Lift a pause that `backfill pause RUN|NAME` set.

    This does not restart an interrupted run: run the same `backfill run` command again for that.
    """
    click.echo(_ledger_call(database, False, lambda ledger: control.resume(ledger, registry, spec)))


@cli.command()
@click.argument("spec", metavar="RUN|NAME")
@database_option
@click.option(
    "--max-rows-per-second",
    type=NonNegative(),
    metavar="R",
    help="At most R source rows per second (0: no limit).",
)
@click.option(
    "--sleep-between-batches", type=NonNegative(), metavar="SECONDS", help="Wait SECONDS before each batch."
)
@click.option("--clear", is_flag=True, help="Go back to the settings of the run's own command line.")
@click.pass_obj
def throttle(
    registry: Registry,
    spec: str,
    database: str | None,
    max_rows_per_second: float | None,
    sleep_between_batches: float | None,
    clear: bool,
) -> None:
    """Change the rate of run RUN, or of every run of extractor NAME, while it runs."""
    if clear == (max_rows_per_second is not None or sleep_between_batches is not None):
        raise click.UsageError("give --max-rows-per-second and/or --sleep-between-batches, or --clear alone")
    click.echo(
        _ledger_call(
            database,
            False,
            lambda ledger: control.throttle(
                ledger,
                registry,
                spec,
                max_rows_per_second=max_rows_per_second,
                sleep_between_batches=sleep_between_batches,
                clear=clear,
            ),
        )
    )


@cli.command("list-plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def list_plugins(registry: Registry, as_json: bool) -> None:
    """List installed plugins and what they provide."""
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in registry.plugins], indent=2))
        return
    rows = [("name", "version", "status", "provides")]
    for p in registry.plugins:
        provides = [f"extractor:{n}" for n in p.extractors] + [f"validator:{n}" for n in p.validators]
        provides += [f"throttle:{n}" for n in p.throttles]
        if p.commands:
            provides.append("commands")
        if p.conflicts:
            provides.append(f"DISABLED (registered twice): {', '.join(p.conflicts)}")
        if p.problems:
            provides.append(f"CANNOT RUN: {'; '.join(p.problems)}")
        detail = ", ".join(provides) if p.status == "ok" else (p.error or "")
        rows.append((p.name, f"{p.distribution} {p.version}", p.status, detail))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])


def _execute(
    as_json: bool,
    work: Callable[[Any, RunReport], Coroutine[Any, Any, RunReport]],
    database: str | None,
    *,
    dry_run: bool = False,
    log_file: Path | None = None,
    resume: list[str] | None = None,
    skipped: Sequence[Skipped] = (),
) -> None:
    """Run ``work`` and turn its outcome, or its failure, into output and an exit code.

    ``resume`` is the command that continues an interrupted run (without --database);
    ``skipped`` fills in as ``work`` skips extractors and validators, for ``--json``.
    """
    url = _url(database, as_json)
    try:
        errors = ErrorLog(log_file)
    except OSError as e:
        raise click.BadParameter(f"cannot open {log_file}: {e.strerror}", param_hint="--log-file") from None
    report = RunReport(database=display(url), dry_run=dry_run, errors=errors)
    try:
        asyncio.run(_until_signalled(work(url, report), report))
    except asyncio.CancelledError:
        pass  # a signal stopped the run; report.interrupted_by says which
    except BackfillError as e:
        _fail(e, as_json)
    finally:
        report.errors.close()
    click.echo(_json(report, skipped) if as_json else report.to_text())
    if report.interrupted_by is not None:
        command = shlex.join([*(resume or ["backfill", "run"]), "-d", _shown_database(database, url)])
        click.echo(
            "backfill: interrupted; committed batches are kept. Run the same command again to resume "
            f"from the last checkpoint: {command} (or add --restart to start over)",
            err=True,
        )
    sys.exit(int(report.exit_code))


async def _until_signalled(work: Coroutine[Any, Any, RunReport], report: RunReport) -> RunReport:
    """Run ``work``; on SIGINT or SIGTERM cancel it, so the batch in flight rolls back and the
    ledger marks the run interrupted. A second signal gets the default behaviour."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = (signal.SIGINT, signal.SIGTERM)

    def stop(signum: int) -> None:
        report.interrupted_by = signum
        for sig in signals:
            loop.remove_signal_handler(sig)
        task.cancel()

    for sig in signals:
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await work
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _json(report: RunReport, skipped: Sequence[Skipped]) -> str:
    """The report as ``--json`` prints it, with the extractors and validators skipped."""
    return json.dumps({**report.to_dict(), "skipped": [s.to_dict() for s in skipped]}, indent=2, default=str)


def _shown_database(database: str | None, url: URL) -> str:
    """``--database`` as the user gave it when it is a file path; otherwise the URL, masked."""
    return database if database and "://" not in database else display(url)


def _url(database: str | None, as_json: bool) -> URL:
    try:
        return resolve_url(database)
    except BackfillError as e:
        _fail(e, as_json)
        raise


def _fail(error: BackfillError, as_json: bool) -> None:
    if isinstance(error, UsageError):
        raise click.UsageError(str(error))
    click.echo(f"backfill: error: {error}", err=True)
    if as_json:
        failure: dict[str, Any] = {"error": str(error), "exit_code": int(error.exit_code)}
        if isinstance(error, NothingToDo):
            failure["skipped"] = error.skipped
        click.echo(json.dumps(failure))
    sys.exit(int(error.exit_code))


def main() -> None:
    registry = Registry.discover(disable=_disabled_in(sys.argv[1:]))
    registry.add_commands(cli)
    try:
        cli(obj=registry, prog_name="backfill")
    finally:
        # The interpreter's shutdown would scan every object of every module for cycles (about
        # 0.1 s per command); frozen objects are left out of that scan, and nothing else changes.
        gc.freeze()
        if stops_at_exit():  # a test inspects the database as the command leaves it
            stop_here()


def _disabled_in(args: Sequence[str]) -> list[str]:
    """The plugins that ``--disable-plugin`` names before the command: plugins load before the
    command line is parsed (their commands are part of it), and a disabled one is not imported."""
    names: list[str] = []
    given = iter(args)
    for arg in given:
        if arg == DISABLE_PLUGIN_OPTION:
            names += name_list(next(given, ""))
        elif arg.startswith(f"{DISABLE_PLUGIN_OPTION}="):
            names += name_list(arg.partition("=")[2])
        elif arg == "--" or not arg.startswith("-"):
            break
    return names
