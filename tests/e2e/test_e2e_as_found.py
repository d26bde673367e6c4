"""Every command leaves the database as it found it: on SQLite the journal mode unchanged and no
``-wal``, ``-shm`` or ``-journal`` file left behind, as the ``sqlite3`` shell leaves it; on
PostgreSQL no connection left open; and an application's connection holding the file is left
alone.

Each command runs as a real process that stops itself just before it exits
(``BACKFILL_STOP_AT=*:exit``), after closing everything: the files and the server are inspected
while the process is still alive, so what it left open is still there to be seen, and a
connection closed only by the process's exit does not pass.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from support.cli import RunCli
from support.postgres import SERVER, fetch, needs_server, scratch_database
from support.processes import Finished, Spawned, children
from support.sqlite import query

JOB = ["run", "test_features", "bug_attribution", "-q", "--batch-size", "10"]
AT_EXIT = "*:exit"
HEADER_MODE = {"wal": 2, "delete": 1}
"""The file format's read and write versions (header bytes 18 and 19): 2 in WAL mode, else 1."""


@dataclass
class Target:
    """The database a command runs on: a SQLite file in WAL or DELETE mode, or PostgreSQL."""

    kind: str
    database: str
    folder: Path

    @property
    def is_sqlite(self) -> bool:
        return self.kind != "postgres"

    def job(self) -> list[str]:
        """The whole job, validation included."""
        return [*JOB, "-d", self.database]

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.is_sqlite:
            return query(Path(self.database), sql)
        return asyncio.run(fetch(self.database, sql))

    def execute(self, sql: str) -> None:
        if self.is_sqlite:
            con = sqlite3.connect(self.database, isolation_level=None, timeout=30)
            try:
                con.execute(sql)
            finally:
                con.close()
        else:
            asyncio.run(fetch(self.database, sql))


@pytest.fixture(params=["wal", "delete", pytest.param("postgres", marks=needs_server)])
def target(
    request: pytest.FixtureRequest, copy_db: Callable[[str], Path], template_db: Path, tmp_path: Path
) -> Iterator[Target]:
    if request.param == "postgres":
        with scratch_database(template_db) as url:
            yield Target("postgres", url, tmp_path)
        return
    yield _sqlite_target(request.param, copy_db("cache.db"), tmp_path)


def _sqlite_target(mode: str, path: Path, folder: Path) -> Target:
    """The SQLite file at ``path``, put in journal mode ``mode``."""
    con = sqlite3.connect(path)
    try:
        assert con.execute(f"PRAGMA journal_mode = {mode}").fetchone() == (mode,)
    finally:
        con.close()
    assert _leftovers(path) == []
    return Target(mode, str(path), folder)


# -- what a stopped process left behind -------------------------------------------------------------


def _leftovers(path: Path) -> list[str]:
    """The files SQLite keeps beside the database file: its journal, its WAL and WAL index."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f"{path.name}-"))


def _header_mode(path: Path) -> int:
    """The journal mode the file itself records, read without opening a connection (which would
    create the WAL's files)."""
    header = path.read_bytes()[:20]
    assert header[18] == header[19], header
    return header[18]


def _open_files(pid: int, path: Path) -> list[str]:
    """The database file, its journal or WAL files, that process ``pid`` has open: a connection
    not closed keeps at least the database file open."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        link = os.readlink(fd)
        if link.startswith(str(path)):
            found.append(link)
    return found


def _server_sockets(pid: int, port: int) -> list[str]:
    """The TCP connections process ``pid`` holds to ``port``, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        link = os.readlink(fd)
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == port:
                found.append(line.strip())
    return found


def _backends(url: str, timeout: float = 120) -> list[tuple[Any, ...]]:
    """The server's sessions on the database of ``url`` (this test's own are on another database),
    once none is left, or those still there after ``timeout`` seconds (a hang guard: a session
    whose client has closed it ends as soon as the server has read the close)."""
    assert SERVER is not None
    name = make_url(url).database
    sql = "SELECT pid, application_name, state, query FROM pg_stat_activity WHERE datname = $1"
    deadline = time.monotonic() + timeout
    while (rows := asyncio.run(fetch(SERVER, sql, name))) and time.monotonic() < deadline:
        time.sleep(0.02)
    return rows


def _check_left_as_found(target: Target, pid: int) -> None:
    """Checks made while process ``pid`` is stopped just before it exits."""
    assert children(pid) == [], "the extraction worker is still running"
    if target.is_sqlite:
        path = Path(target.database)
        assert _open_files(pid, path) == []
        assert _leftovers(path) == [], f"{target.kind}: left behind"
        assert _header_mode(path) == HEADER_MODE[target.kind]
    else:
        url = make_url(target.database)
        assert _server_sockets(pid, url.port or 5432) == []
        assert _backends(target.database) == []


def _journal_mode(target: Target) -> None:
    """Once the process has exited: the journal mode SQLite reports is the one the file had."""
    if target.is_sqlite:
        con = sqlite3.connect(f"file:{target.database}?mode=rw", uri=True)
        try:
            assert con.execute("PRAGMA journal_mode").fetchone() == (target.kind,)
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            con.close()


def run_to_exit(
    target: Target,
    args: list[str],
    *,
    first: str | None = None,
    then: Callable[[Spawned], None] | None = None,
) -> Finished:
    """Run ``backfill ARGS``, stopped first at ``first`` (where ``then`` acts on it) if given,
    then just before it exits, where what it leaves is checked; the finished process."""
    spec = f"{first},{AT_EXIT}" if first else AT_EXIT
    proc = Spawned(args, target.folder / "out", {"BACKFILL_STOP_AT": spec})
    try:
        if first:
            proc.wait_stopped()
            if then is not None:
                then(proc)
            proc.resume()
        proc.wait_stopped()
        _check_left_as_found(target, proc.pid)
        proc.resume()
        done = proc.wait()
    finally:
        proc.stop()
    _journal_mode(target)
    return done


def _prepare(target: Target, cli: RunCli) -> None:
    """One whole run beforehand, for the commands that read what a run recorded."""
    proc = cli(target.job())
    assert proc.returncode == 0, proc.stderr


# -- every command ----------------------------------------------------------------------------------


COMMANDS: dict[str, tuple[bool, Callable[[Target], list[str]]]] = {
    "run": (False, lambda t: t.job()),
    "run --dry-run": (False, lambda t: [*t.job(), "--dry-run"]),
    "run --retry-errors": (True, lambda t: [*t.job(), "--retry-errors"]),
    "validate": (True, lambda t: ["validate", "-d", t.database]),
    "status": (True, lambda t: ["status", "-d", t.database]),
    "errors": (True, lambda t: ["errors", "1", "-d", t.database]),
    "list-plugins": (False, lambda _t: ["list-plugins"]),
}
"""Each command: whether a run must come first, and its arguments."""


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_leaves_the_database_as_found(target: Target, cli: RunCli, command: str) -> None:
    after_a_run, args = COMMANDS[command]
    if after_a_run:
        _prepare(target, cli)

    done = run_to_exit(target, args(target))

    assert done.returncode == 0, done.stderr
    if command == "run":
        assert target.rows("SELECT count(*) FROM test_features") != [(0,)]


def test_a_dry_run_on_a_wal_file_leaves_it_byte_for_byte(
    copy_db: Callable[[str], Path], tmp_path: Path
) -> None:
    path = copy_db("dry.db")
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode = WAL")
    con.close()
    before = path.read_bytes()
    target = Target("wal", str(path), tmp_path)

    done = run_to_exit(target, [*target.job(), "--dry-run"])

    assert done.returncode == 0, done.stderr
    assert path.read_bytes() == before


def test_demo_leaves_only_its_database(tmp_path: Path) -> None:
    path = tmp_path / "demo" / "demo.db"
    path.parent.mkdir()
    target = Target("delete", str(path), tmp_path)

    done = run_to_exit(target, ["demo", str(path), "--tests", "50", "-q"])

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in path.parent.iterdir()) == ["demo.db"]


def test_demo_rebuilds_an_earlier_demo_database_in_wal_mode(
    copy_db: Callable[[str], Path], tmp_path: Path
) -> None:
    path = copy_db("demo.db")  # built by the same generator: a demo database
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode = WAL")
    con.close()

    done = run_to_exit(Target("delete", str(path), tmp_path), ["demo", str(path), "--tests", "50", "-q"])

    assert done.returncode == 0, done.stderr
    assert query(path, "SELECT count(*) FROM tests") == [(50,)]


def test_demo_removes_the_wal_an_earlier_demo_database_was_left_with(
    copy_db: Callable[[str], Path], tmp_path: Path
) -> None:
    """A process exited without closing the earlier one: its WAL files go with it, else they
    would sit beside the new file as if they were its own."""
    path = copy_db("demo.db")
    crashed = (
        "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode = WAL'); "
        "c.execute('CREATE TABLE junk (x)'); c.commit(); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", crashed, str(path)], check=True)
    assert _leftovers(path) == ["demo.db-shm", "demo.db-wal"]

    done = run_to_exit(Target("delete", str(path), tmp_path), ["demo", str(path), "--tests", "50", "-q"])

    assert done.returncode == 0, done.stderr
    assert query(path, "SELECT count(*) FROM tests") == [(50,)]
    assert "junk" not in {name for (name,) in query(path, "SELECT name FROM sqlite_master")}


def test_demo_refuses_another_wal_file_and_leaves_it_as_found(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("CREATE TABLE notes (note TEXT)")
    con.close()
    before = path.read_bytes()

    done = run_to_exit(Target("wal", str(path), tmp_path), ["demo", str(path), "-q"])

    assert done.returncode == 2, done.stderr
    assert "is not a backfill demo database" in done.stderr
    assert path.read_bytes() == before


# -- every ending ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        lambda t: [*JOB, "-d", t.database, "--threshold", "coverage.nosuch=0.5"],
        lambda t: ["errors", "99", "-d", t.database],
    ],
    ids=["run --threshold", "errors"],
)
def test_exit_2_found_once_the_database_is_open(target: Target, args: Callable[[Target], list[str]]) -> None:
    done = run_to_exit(target, args(target))

    assert done.returncode == 2, done.stderr
    assert "Error: " in done.stderr


def test_exit_1_over_the_error_rate(target: Target) -> None:
    done = run_to_exit(target, [*target.job(), "--max-error-rate", "0.001"])

    assert done.returncode == 1, done.stderr
    assert "--max-error-rate" in done.stdout + done.stderr


def test_exit_3_when_the_database_fails_mid_run(target: Target) -> None:
    """``bugs`` is renamed while test_features is half done: bug_attribution cannot read it."""

    def rename(_proc: Spawned) -> None:
        target.execute("ALTER TABLE bugs RENAME TO bugs_elsewhere")

    done = run_to_exit(target, target.job(), first="test_features:committed:2", then=rename)

    assert done.returncode == 3, done.stdout + done.stderr
    assert "bugs" in done.stderr


@pytest.mark.parametrize(
    ("sig", "dry_run"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)],
    ids=["SIGTERM", "SIGINT", "SIGTERM, dry run"],
)
def test_a_signal_mid_run(target: Target, sig: signal.Signals, dry_run: bool) -> None:
    args = [*target.job(), *(["--dry-run"] if dry_run else [])]

    done = run_to_exit(target, args, first="bug_attribution:committed:2", then=lambda proc: proc.signal(sig))

    assert done.returncode == 128 + sig, done.stderr
    assert "interrupted" in done.stderr


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_exit_3_when_the_extraction_worker_dies(
    copy_db: Callable[[str], Path], tmp_path: Path, mode: str
) -> None:
    """The worker (SQLite only) is killed mid-run: it cannot close its connection, this process
    closes its own."""
    target = _sqlite_target(mode, copy_db("cache.db"), tmp_path)

    def kill_worker(proc: Spawned) -> None:
        (worker,) = children(proc.pid)
        os.kill(worker, signal.SIGKILL)

    done = run_to_exit(target, target.job(), first="test_features:committed:2", then=kill_worker)

    assert done.returncode == 3, done.stdout + done.stderr
    assert "extraction worker" in done.stderr


# -- an application holding the file ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("dry_run", "opens"),
    [(False, "before"), (True, "before"), (True, "during")],
    ids=["run", "dry-run", "dry-run, opened during it"],
)
def test_an_application_holding_the_wal_file_keeps_it(
    copy_db: Callable[[str], Path], full_run_db: Path, tmp_path: Path, dry_run: bool, opens: str
) -> None:
    """The application's connection is open until after the command exits, and writes while it
    runs and after: its WAL stays (it is the application's), and every row of it is there. Opened
    during a dry run, it finds the WAL files the dry run created, which must stay too."""
    path = copy_db("app.db")
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    con.close()
    target = Target("wal", str(path), tmp_path)
    notes: list[str] = []
    app: sqlite3.Connection | None = None

    def note(word: str) -> None:
        assert app is not None
        app.execute("CREATE TABLE IF NOT EXISTS app_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
        app.execute("INSERT INTO app_notes (note) VALUES (?)", (word,))
        notes.append(word)

    try:
        if opens == "before":
            app = sqlite3.connect(path, isolation_level=None, timeout=30)
            note("before")
        args = [*target.job(), *(["--dry-run"] if dry_run else [])]
        proc = Spawned(args, tmp_path / "out", {"BACKFILL_STOP_AT": f"bug_attribution:committed:2,{AT_EXIT}"})
        try:
            proc.wait_stopped()
            if app is None:
                app = sqlite3.connect(path, isolation_level=None, timeout=30)
            note("during")
            proc.resume()
            proc.wait_stopped()
            assert children(proc.pid) == []
            assert _open_files(proc.pid, path) == []
            assert _leftovers(path) == ["app.db-shm", "app.db-wal"]
            proc.resume()
            done = proc.wait()
        finally:
            proc.stop()
        assert done.returncode == 0, done.stderr
        assert _leftovers(path) == ["app.db-shm", "app.db-wal"]

        note("after")
        assert app.execute("SELECT note FROM app_notes ORDER BY id").fetchall() == [(n,) for n in notes]
        # Another connection sees them too: the WAL on disk is the one the application writes.
        assert query(path, "SELECT note FROM app_notes ORDER BY id") == [(n,) for n in notes]
        assert app.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        if app is not None:
            app.close()

    assert _leftovers(path) == []  # the application closed last: SQLite removed them
    assert query(path, "SELECT note FROM app_notes ORDER BY id") == [(n,) for n in notes]
    features = "SELECT * FROM test_features ORDER BY id"
    bugs = "SELECT id, test_feature_id FROM bugs ORDER BY id"
    if dry_run:
        assert query(path, features) == []
        assert query(path, "SELECT count(*) FROM bugs WHERE test_feature_id IS NOT NULL") == [(0,)]
    else:
        assert query(path, features) == query(full_run_db, features)
        assert query(path, bugs) == query(full_run_db, bugs)
