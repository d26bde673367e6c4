"""The ``backfill`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from backfill_core.database import DATABASE_ENV, resolve_url
from backfill_core.engine import RunOptions
from backfill_core.errors import BackfillError, ExitCode, UsageError
from backfill_core.plugins import LOAD_PLUGINS_ENV, Registry
from backfill_core.progress import tqdm_progress
from backfill_core.report import ErrorLog, RunReport
from backfill_core.run import run_backfill, validate_only
from backfill_core.validation import parse_thresholds

EPILOG = f"""
\b
Exit codes:
  0    success, and validation passed
  1    validation failed, or the error rate went over --max-error-rate
  2    usage error (unknown extractor, bad option)
  3    environment error (database missing or unreachable, schema missing,
       a requested plugin failed to load)
  130  interrupted (Ctrl-C): the batch in flight was rolled back

\b
Environment:
  {DATABASE_ENV}    default for --database
  {LOAD_PLUGINS_ENV}    comma-separated distributions to load ('' = built-ins only)
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backfill")
def cli() -> None:
    """Backfill derived tables and columns from data the database already holds."""


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


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="Run every registered extractor.")
@database_option
@click.option("--dry-run", is_flag=True, help="Read only: report what would change.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=500, show_default=True)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Stop when this share of processed rows has failed.",
)
@click.option("--no-validate", is_flag=True, help="Skip the validators after the run.")
@threshold_option
@click.option("--verbose", "-v", is_flag=True, help="Show a sample of the differences.")
@output_options
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append every recorded error to this file as JSON lines.",
)
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
    log_file: Path | None,
) -> None:
    """Run extractors NAMES (in dependency order), then validate."""
    if run_all:
        names = tuple(registry.extractors)
    if not names:
        raise click.UsageError("name at least one extractor, or pass --all (see `backfill list-plugins`)")
    options = RunOptions(
        batch_size=batch_size, dry_run=dry_run, max_error_rate=max_error_rate, sample_size=5 if verbose else 0
    )
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
        ),
        database,
        dry_run=dry_run,
        log_file=log_file,
    )


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
    """Run validators NAMES (default: all) on the database as it is."""
    _execute(
        as_json,
        lambda url, report: validate_only(registry, names, url, report, parse_thresholds(thresholds)),
        database,
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
        if p.commands:
            provides.append("commands")
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
) -> None:
    """Run ``work`` and turn its outcome, or its failure, into output and an exit code."""
    report: RunReport | None = None
    try:
        url = resolve_url(database)
        report = RunReport(
            database=url.render_as_string(hide_password=True), dry_run=dry_run, errors=ErrorLog(log_file)
        )
        asyncio.run(work(url, report))
    except KeyboardInterrupt:
        if report is None:
            raise SystemExit(ExitCode.INTERRUPTED) from None
        report.interrupted = True
    except BackfillError as e:
        _fail(e, as_json)
    finally:
        if report is not None:
            report.errors.close()
    assert report is not None
    click.echo(report.to_json() if as_json else report.to_text())
    code = report.exit_code
    if code == ExitCode.INTERRUPTED:
        click.echo(
            "backfill: interrupted; committed batches are kept. Run the same command again: rows "
            "already written are recognised as unchanged and not rewritten",
            err=True,
        )
    sys.exit(int(code))


def _fail(error: BackfillError, as_json: bool) -> None:
    if isinstance(error, UsageError):
        raise click.UsageError(str(error))
    click.echo(f"backfill: error: {error}", err=True)
    if as_json:
        click.echo(json.dumps({"error": str(error), "exit_code": int(error.exit_code)}))
    sys.exit(int(error.exit_code))


def main() -> None:
    registry = Registry.discover()
    registry.add_commands(cli)
    cli(obj=registry)
