"""Running the real ``backfill`` console script from the tests, with a controlled environment.

Shared by the end-to-end and crash-safety tests (``tests`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

BACKFILL = Path(sys.executable).parent / "backfill"
"""The console script installed next to the interpreter running the tests."""

SCRUBBED = (
    "BACKFILL_DATABASE_URL",
    "BACKFILL_LOAD_PLUGINS",
    "BACKFILL_BUSY_TIMEOUT",
    "BACKFILL_STALE_AFTER",
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


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def hold_worker(pid: int, progressed: Callable[[], bool], timeout: float = 120) -> int:
    """Stop (SIGSTOP) the extraction worker of the ``backfill`` process ``pid`` at a moment when
    ``progressed()`` holds, and return the worker's pid; the caller sends SIGCONT or SIGKILL.

    Polling the database while a run commits batch after batch can starve the poller (each
    commit shuts readers out, and they back off), so the run may be nearly over before a plain
    poll sees it start. With its worker stopped, the main process finishes the batches it holds
    and waits, and ``progressed`` reads a quiet file.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(pid):
            raise AssertionError(f"process {pid} ended before its worker was seen with progress")
        for worker in children(pid):
            os.kill(worker, signal.SIGSTOP)
            quiet = time.monotonic() + 1.0
            while time.monotonic() < quiet:
                with contextlib.suppress(sqlite3.OperationalError):
                    if progressed():
                        return worker
                time.sleep(0.02)
            os.kill(worker, signal.SIGCONT)  # no progress yet: let it run a little
        time.sleep(0.02)
    raise AssertionError(f"no worker of pid {pid} was seen with progress within {timeout}s")
