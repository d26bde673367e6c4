"""The crash-safety tests' toolbox: every helper they use, as one ``Crash`` object handed out by
the ``crash`` fixture (tests/crash/conftest.py), which also ends the processes a test spawned.

Everything works on real SQLite files or scratch PostgreSQL databases (``Crash.database``) and
runs the real ``backfill`` console script as a subprocess with an explicit copy of the environment.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from support.backends import Backend, builtin_backend
from support.builtin_job import attribution_column, features, writable_copy
from support.cli import BACKFILL, Env, make_env, run_cli
from support.consistency import (
    BOTH,
    Reference,
    check_consistent,
    check_equal_to_reference,
    check_run_counts,
)
from support.db import Where, query, scalar, sqlite_path, table_names
from support.ledger import decode_key, errors_of, insert_fake_run, runs, utc_now
from support.processes import Spawned, dead_pid, wait_for
from support.sqlite import journal_is_hot


def seeded() -> tuple[int, random.Random]:
    """A seed (``CRASH_SEED`` if set, else a fresh one), printed so that a failure can be
    repeated, and a generator drawn from it."""
    raw = os.environ.get("CRASH_SEED")
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    print(f"{test}: seed={seed} (set CRASH_SEED={seed} to repeat)")
    return seed, random.Random(seed)


class Crash:
    """The helpers, as one object the tests receive from the ``crash`` fixture."""

    BACKFILL = BACKFILL
    BOTH = BOTH
    Reference = Reference
    run_cli = staticmethod(run_cli)
    make_env = staticmethod(make_env)
    dead_pid = staticmethod(dead_pid)
    seeded = staticmethod(seeded)
    journal_is_hot = staticmethod(journal_is_hot)
    query = staticmethod(query)
    scalar = staticmethod(scalar)
    table_names = staticmethod(table_names)
    runs = staticmethod(runs)
    errors_of = staticmethod(errors_of)
    decode_key = staticmethod(decode_key)
    features = staticmethod(features)
    attributions = staticmethod(attribution_column)
    wait_for = staticmethod(wait_for)
    insert_fake_run = staticmethod(insert_fake_run)
    utc_now = staticmethod(utc_now)
    check_consistent = staticmethod(check_consistent)
    check_run_counts = staticmethod(check_run_counts)
    check_equal_to_reference = staticmethod(check_equal_to_reference)

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._spawned: list[Spawned] = []
        self._databases = ExitStack()

    def copy(self, template: Path, name: str) -> Path:
        """A private, writable copy of a template database in this test's tmp dir."""
        return writable_copy(template, self.tmp_path / name)

    def database(self, kind: str, template: Path, name: str) -> Backend:
        """A private copy of a template database: a SQLite file in this test's tmp dir, or a
        scratch PostgreSQL database dropped when the test ends."""
        return self._databases.enter_context(builtin_backend(kind, template, self.tmp_path / name))

    def readable(self, where: Where) -> Where:
        """``readable_file(path)`` for a SQLite file; ``where`` itself on PostgreSQL, whose server
        rolls a killed writer's transaction back on its own."""
        path = sqlite_path(where)
        return where if path is None else self.readable_file(path)

    def readable_file(self, path: Path) -> Path:
        """``path``, or, if a killed writer left a hot journal beside it, a recovered copy.

        A read-only connection cannot roll a hot journal back, and rolling back the file itself
        would do the next ``backfill run``'s recovery for it; so copy the database and its
        journal aside and let a writable connection on the copy roll it back.
        """
        journal = Path(f"{path}-journal")
        if not journal.exists():
            return path
        view = self.tmp_path / "recovered" / path.name
        view.parent.mkdir(exist_ok=True)
        for leftover in (view, Path(f"{view}-journal")):
            leftover.unlink(missing_ok=True)
        shutil.copy(path, view)
        with contextlib.suppress(FileNotFoundError):  # its writer may just have finished
            shutil.copy(journal, f"{view}-journal")
        conn = sqlite3.connect(view)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
        finally:
            conn.close()
        return view

    def spawn(self, args: Sequence[object], env: Env | None = None) -> Spawned:
        proc = Spawned(args, self.tmp_path / "procs", env)
        self._spawned.append(proc)
        return proc

    @contextmanager
    def live_backfill(self, template: Path) -> Iterator[int]:
        """The pid of a real ``backfill run`` process that stays alive: it waits on a scratch copy
        of ``template`` that this test holds an exclusive lock on (with a long busy timeout)."""
        scratch = self.copy(template, "locked-scratch.db")
        lock = sqlite3.connect(scratch, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        proc = self.spawn(["run", "test_features", "-d", scratch, "-q"], env={"BACKFILL_BUSY_TIMEOUT": "600"})
        try:
            yield proc.pid
            assert proc.alive(), f"the stand-in backfill process ended:\n{proc.wait().stderr}"
        finally:
            proc.stop()
            lock.execute("ROLLBACK")
            lock.close()

    def cleanup(self) -> None:
        for proc in self._spawned:
            proc.stop()
        self._databases.close()
