"""The entry point (``[project.entry-points.backfill] example = "backfill_example.plugin"``)."""

from __future__ import annotations

from collections.abc import Callable

import click
from backfill_core import Extractor, Validator, hookimpl

from backfill_example.extractors import BugSeverityExtractor
from backfill_example.models import DDL
from backfill_example.validators import SeverityCoverage


@hookimpl
def register_extractors(register: Callable[[Extractor], None]) -> None:
    register(BugSeverityExtractor())


@hookimpl
def register_validators(register: Callable[[Validator], None]) -> None:
    register(SeverityCoverage())


@click.command("severity-ddl")
def severity_ddl() -> None:
    """Print the CREATE TABLE statement for bug_severities (apply it, then run bug_severity).

    \b
    backfill severity-ddl | sqlite3 cache.db
    backfill severity-ddl | psql "$DATABASE"
    """
    click.echo(DDL, nl=False)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(severity_ddl)
