"""The CLI reference's generated blocks (``cog -r docs/cli.md``): what ``backfill`` prints.

Each block is the real ``backfill`` command run in process, with the built-in plugins only, at
the width of an 80-column terminal: the text is the same whatever else is installed and
whatever the terminal.
"""

from __future__ import annotations

import functools
import os
import shlex

from click.testing import CliRunner

from backfill_core.app.cli import cli
from backfill_core.plugins import DISABLE_PLUGINS_ENV, LOAD_PLUGINS_ENV, Registry

# What an 80-column terminal shows: click leaves two columns of it unused.
WIDTH = 78


def output(*args: str) -> str:
    """``$ backfill ARGS`` and what it prints, as a fenced block of Markdown."""
    result = CliRunner().invoke(cli, list(args), obj=_builtins(), prog_name="backfill", terminal_width=WIDTH)
    command = shlex.join(["backfill", *args])
    if result.exit_code != 0:
        raise RuntimeError(f"`{command}` exited {result.exit_code}: {result.output}")
    return f"```\n$ {command}\n{result.output.rstrip()}\n```\n"


@functools.cache
def _builtins() -> Registry:
    """The built-in plugins, their commands added to ``cli`` (once)."""
    saved = {name: os.environ.pop(name, None) for name in (LOAD_PLUGINS_ENV, DISABLE_PLUGINS_ENV)}
    os.environ[LOAD_PLUGINS_ENV] = ""
    try:
        registry = Registry.discover()
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
    registry.add_commands(cli)
    return registry
