"""Running the ``backfill`` command line in-process, with a chosen set of plugins."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

from click.testing import CliRunner

from backfill_core.plugins import DISABLE_PLUGINS_ENV, LOAD_PLUGINS_ENV, Registry
from backfill_core.store.database import DATABASE_ENV

SCRUBBED = (DATABASE_ENV, LOAD_PLUGINS_ENV, DISABLE_PLUGINS_ENV)
"""Variables unset for the command unless ``env`` sets them: a test never reaches the user's
default database by accident."""

__all__ = ["CliResult", "invoke_cli"]


@dataclass(frozen=True)
class CliResult:
    """What a command did: its exit code and its two output streams."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as one JSON document (for commands run with ``--json``)."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(
                f"stdout is not one JSON document ({e}):\n{self.stdout}\n{self.stderr}"
            ) from e


def _runner() -> CliRunner:
    try:  # click 8.1 mixes stderr into stdout unless told not to; 8.2 removed the option
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def invoke_cli(
    args: Sequence[str | PathLike[str] | int | float],
    *,
    registry: Registry | None = None,
    env: Mapping[str, str | None] | None = None,
    input: str | None = None,
) -> CliResult:
    """Run ``backfill ARGS`` in this process with click's CliRunner and capture its output.

    ``registry`` holds the plugins the command sees, their commands included (default: the
    installed plugins, discovered as the real ``backfill`` script does). ``env`` sets variables
    for the call (None unsets one); backfill's own variables are unset unless given. Exceptions
    other than the command's exit propagate, so a bug shows its traceback.
    """
    from backfill_core.app.cli import cli

    warnings = io.StringIO()
    if registry is None:
        registry = Registry.discover(warn=warnings)
    group = copy.copy(cli)
    group.commands = dict(cli.commands)  # plugin commands go to this copy only
    registry.add_commands(group)
    result = _runner().invoke(
        group,
        [str(a) for a in args],
        obj=registry,
        env={**dict.fromkeys(SCRUBBED), **(env or {})},
        input=input,
        catch_exceptions=False,
    )
    return CliResult(result.exit_code, result.stdout, warnings.getvalue() + result.stderr)
