"""Files made once per test run and shared by every pytest-xdist worker of that run."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def made_once(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]) -> Path:
    """The path ``name`` (a file or a folder) after ``make(path)`` created it, once per test run.

    Under pytest-xdist the first worker to ask makes it in the run's shared temporary folder
    while the others wait on a lock, then all of them use it; ``name`` must say what it holds.
    Without xdist it is made in a new temporary folder of this session.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        path = factory.mktemp(f"once-{name}") / name
        make(path)
        return path
    shared = factory.getbasetemp().parent / "once"
    shared.mkdir(exist_ok=True)
    folder = shared / name
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.exists():
            # Made aside (with any file SQLite keeps beside it) and moved in whole, so that a
            # failed attempt leaves nothing to reuse.
            work = factory.mktemp(f"making-{name}")
            try:
                make(work / name)
                work.rename(folder)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return folder / name
