"""The entry point (``[project.entry-points.backfill] example = "backfill_example.plugin"``)."""

from __future__ import annotations

from collections.abc import Callable

import click
from backfill_core import Extractor, Validator, hookimpl

from backfill_example.extractors import BugSeverityExtractor, BugStepsExtractor
from backfill_example.models import DDL
from backfill_example.validators import SeverityCoverage, StepsCoverage


@hookimpl
def register_extractors(register: Callable[[Extractor], None]) -> None:
    register(BugSeverityExtractor())
    register(BugStepsExtractor())


@hookimpl
def register_validators(register: Callable[[Validator], None]) -> None:
    register(SeverityCoverage())
    register(StepsCoverage())


@click.command("example-ddl", short_help="Print the CREATE TABLE statements of the plugin's tables.")
def example_ddl() -> None:
    """Print the CREATE TABLE statements of the plugin's tables, bug_severities and bug_steps
    (apply them, then run bug_severity and bug_steps).

    \b
    backfill example-ddl | sqlite3 cache.db
    backfill example-ddl | psql "$DATABASE"
    """
    click.echo(DDL, nl=False)


@click.command("severity-ddl", short_help="Print the plugin's CREATE TABLE statements (as example-ddl).")
def severity_ddl() -> None:
    """Print the CREATE TABLE statements of the plugin's tables, bug_severities and bug_steps
    (the same as example-ddl; kept under its first name for scripts that use it).

    \b
    backfill severity-ddl | sqlite3 cache.db
    backfill severity-ddl | psql "$DATABASE"
    """
    click.echo(DDL, nl=False)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(example_ddl)
    cli.add_command(severity_ddl)
