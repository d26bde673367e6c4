"""Running the real ``backfill`` console script from the tests, with a controlled environment.

Shared by the end-to-end and crash-safety tests (``tests`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
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
    args: Sequence[Any], env: Env | None = None, *, timeout: float
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


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s living child processes (a run's extraction worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _state(pid: int) -> str | None:
    """The one-letter state of process ``pid`` (R, S, T for stopped, Z, ...), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has)."""
    return _state(pid) not in (None, "Z")


def wait_until_stopped(proc: subprocess.Popen[str], timeout: float = 600) -> None:
    """Wait until ``proc``, started with ``BACKFILL_STOP_AT``, has stopped itself at that point.

    The timeout only guards against a hang: the wait ends on an event, however slow the machine.
    """
    deadline = time.monotonic() + timeout
    while _state(proc.pid) not in ("T", "t"):
        if proc.poll() is not None:
            raise AssertionError(
                f"{' '.join(map(str, proc.args))} exited with {proc.returncode} "
                "before reaching its stop point"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"process {proc.pid} did not reach its stop point in {timeout}s")
        time.sleep(0.01)
