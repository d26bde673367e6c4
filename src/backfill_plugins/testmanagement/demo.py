"""``backfill demo``: build a synthetic test-management database and backfill it."""

from __future__ import annotations

from pathlib import Path

import click

from backfill_plugins.testmanagement import synthetic


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="backfill-demo.db")
@click.option(
    "--tests",
    type=click.IntRange(1, 10_000_000),
    default=2000,
    show_default=True,
    help="How many tests to generate (each with several bugs).",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
@click.pass_context
def demo(ctx: click.Context, path: Path, tests: int, seed: int, quiet: bool, as_json: bool) -> None:
    """Build a demo database at PATH and run test_features and bug_attribution on it.

    PATH is rebuilt if it is an earlier demo database; any other existing file is left alone.
    """
    if path.exists():
        if not synthetic.is_demo_database(path):
            raise click.UsageError(f"{path} exists and is not a backfill demo database; choose another PATH")
        # Its journal or WAL files go with it: beside the new file they would be taken for its own.
        for gone in (
            path,
            *(path.with_name(f"{path.name}{suffix}") for suffix in ("-journal", "-wal", "-shm")),
        ):
            gone.unlink(missing_ok=True)
    counts = synthetic.build(path, tests, seed=seed)
    click.echo(
        f"built {path}: {counts.tests} tests, {counts.bugs} bugs "
        f"({counts.messy_tests} tests and {counts.messy_bugs} bugs deliberately messy)",
        err=True,
    )
    group = ctx.parent.command if ctx.parent else None
    run = group.get_command(ctx.parent, "run") if isinstance(group, click.Group) and ctx.parent else None
    if not isinstance(run, click.Command):
        raise click.UsageError("the run command is not available")
    ctx.invoke(
        run, names=("test_features", "bug_attribution"), database=str(path), quiet=quiet, as_json=as_json
    )
