"""Running the real ``backfill`` console script as a subprocess, with a controlled environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

BACKFILL = Path(sys.executable).parent / "backfill"
"""The console script installed next to the interpreter running the tests."""

SCRUBBED = (
    "BACKFILL_DATABASE_URL",
    "BACKFILL_LOAD_PLUGINS",
    "BACKFILL_DISABLE_PLUGINS",
    "BACKFILL_BUSY_TIMEOUT",
    "BACKFILL_STALE_AFTER",
    "BACKFILL_STOP_AT",
)
"""Variables that would change what the CLI does behind the tests' back."""

Env = Mapping[str, str | None]
RunCli = Callable[..., subprocess.CompletedProcess[str]]


def make_env(overrides: Env | None = None) -> dict[str, str]:
    """A copy of this process's environment without backfill's variables, plus ``overrides``
    (a value of None removes the variable)."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_cli(
    args: Sequence[object], env: Env | None = None, *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``backfill ARGS`` as a real subprocess to completion and capture its output."""
    return subprocess.run(
        [str(BACKFILL), *map(str, args)],
        env=make_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def plugin_env(site: Path, overrides: Env | None = None) -> dict[str, str | None]:
    """Overrides that make the fixture plugin packages installed in ``site`` visible."""
    existing = os.environ.get("PYTHONPATH")
    path = str(site) if not existing else os.pathsep.join([str(site), existing])
    return {"PYTHONPATH": path, **(overrides or {})}


def parse_json_output(proc: subprocess.CompletedProcess[str]) -> Any:
    """stdout must be exactly one JSON document."""
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:  # pragma: no cover - a failure message, not a branch
        raise AssertionError(f"stdout is not one JSON document ({e}):\n{proc.stdout}\n{proc.stderr}") from e


def stats_by_name(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A ``--json`` report's per-extractor statistics, by extractor name."""
    return {s["extractor"]: s for s in report["extractors"]}
