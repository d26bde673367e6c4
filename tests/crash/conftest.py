"""Helpers for the crash-safety tests of the run ledger (issue 3).

Everything here works on real SQLite files and runs the real ``backfill`` console script as a
subprocess with an explicit copy of the environment. Databases are built once per session with
the synthetic generator and copied per test. The tests' own reads use read-only connections
(``mode=ro``), so they never change a file behind the CLI's back.

The helpers are handed to the tests through the ``crash`` fixture (a ``Crash`` instance), so the
test modules need not import this file.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import cli_support
from backfill_plugins.testmanagement import synthetic
from cli_support import BACKFILL, Env, make_env, wait_until_stopped

SMALL_TESTS = 300
MEDIUM_TESTS = 3000
BIG_TESTS = 20_000

BOTH = ("test_features", "bug_attribution")


# -- processes ---------------------------------------------------------------------------------


def run_cli(
    args: Sequence[Any], env: Env | None = None, *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``backfill ARGS`` to completion and capture its output."""
    return cli_support.run_cli(args, env, timeout=timeout)


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


class Spawned:
    """A ``backfill`` process running in the background; its output goes to files, so a full
    pipe can never stall it."""

    def __init__(self, args: Sequence[Any], workdir: Path, env: Env | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.monotonic_ns()}"
        self.out_path = workdir / f"out-{stamp}.txt"
        self.err_path = workdir / f"err-{stamp}.txt"
        self._out = self.out_path.open("w")
        self._err = self.err_path.open("w")
        self.args = [str(BACKFILL), *map(str, args)]
        self.popen = subprocess.Popen(
            self.args, env=make_env(env), stdout=self._out, stderr=self._err, text=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait_stopped(self) -> None:
        """Wait until the process stops itself at its ``BACKFILL_STOP_AT`` point."""
        wait_until_stopped(self.popen)

    def resume(self) -> None:
        """SIGCONT: a signal sent while it was stopped is handled now."""
        if self.alive():
            self.popen.send_signal(signal.SIGCONT)

    def wait(self, timeout: float = 300) -> Finished:
        rc = self.popen.wait(timeout=timeout)
        self._out.close()
        self._err.close()
        return Finished(rc, self.out_path.read_text(), self.err_path.read_text())

    def stop(self) -> None:
        """Teardown: kill this one process if a failed test left it running."""
        if self.alive():
            self.popen.kill()
        try:
            self.popen.wait(timeout=30)
        finally:
            self._out.close()
            self._err.close()


JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
"""The first bytes of a rollback journal that SQLite has synced: once its writer is gone, such a
journal is *hot* and must be rolled back before the database can be read."""


def journal_is_hot(path: Path) -> bool:
    """Whether ``path`` has a synced rollback journal beside it (hot, if no process owns it)."""
    try:
        with open(f"{path}-journal", "rb") as f:
            return f.read(8) == JOURNAL_MAGIC
    except FileNotFoundError:
        return False


def seeded() -> tuple[int, random.Random]:
    """A seed (``CRASH_SEED`` if set, else a fresh one), printed so that a failure can be
    repeated, and a generator drawn from it."""
    raw = os.environ.get("CRASH_SEED")
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    print(f"{test}: seed={seed} (set CRASH_SEED={seed} to repeat)")
    return seed, random.Random(seed)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- reading SQLite files ------------------------------------------------------------------------


def connect_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def query(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    conn = connect_ro(path)
    try:
        return [tuple(r) for r in conn.execute(sql, tuple(params)).fetchall()]
    finally:
        conn.close()


def scalar(path: Path, sql: str, params: Sequence[Any] = ()) -> Any:
    return query(path, sql, params)[0][0]


def table_names(path: Path) -> set[str]:
    return {r[0] for r in query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def runs(path: Path) -> list[dict[str, Any]]:
    """Every ledger row, by id; [] when the ledger does not exist (yet)."""
    if "backfill_runs" not in table_names(path):
        return []
    conn = connect_ro(path)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM backfill_runs ORDER BY id")]
    finally:
        conn.close()


def errors_of(path: Path, run_id: int) -> list[dict[str, Any]]:
    conn = connect_ro(path)
    try:
        sql = "SELECT * FROM backfill_errors WHERE run_id = ? ORDER BY id"
        return [dict(r) for r in conn.execute(sql, (run_id,))]
    finally:
        conn.close()


def decode_key(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def features(path: Path, up_to_test: int | None = None) -> list[tuple[Any, ...]]:
    """All columns of test_features, by id (only the features of tests <= ``up_to_test``)."""
    if up_to_test is None:
        return query(path, "SELECT * FROM test_features ORDER BY id")
    return query(path, "SELECT * FROM test_features WHERE test_id <= ? ORDER BY id", (up_to_test,))


def attributions(path: Path) -> list[tuple[int, int | None]]:
    """(id, test_feature_id) of every bug, by id."""
    return [(r[0], r[1]) for r in query(path, "SELECT id, test_feature_id FROM bugs ORDER BY id")]


def wait_for(
    predicate: Callable[[], bool], proc: Spawned, *, timeout: float = 120, every: float = 0.02
) -> bool:
    """Poll ``predicate`` until it holds (True) or ``proc`` exits first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except sqlite3.OperationalError:
            pass  # e.g. the ledger table does not exist yet, or a writer holds the lock
        if not proc.alive():
            return False
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting on {' '.join(proc.args)}")


# -- writing the ledger by hand (for the stale-run tests) ---------------------------------------


def ledger_time(moment: datetime) -> str:
    """A naive UTC timestamp as SQLAlchemy's SQLite DateTime stores it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def insert_fake_run(
    path: Path,
    *,
    extractor: str,
    host: str,
    pid: int,
    heartbeat_age: float,
    plan: str,
    last_key: Any = None,
    processed: int = 0,
    total: int | None = None,
) -> int:
    """Add a ``running`` row owned by ``host``/``pid`` whose heartbeat is ``heartbeat_age`` s old."""
    beat = utc_now() - timedelta(seconds=heartbeat_age)
    conn = sqlite3.connect(path)
    try:
        with conn:
            cur = conn.execute(
                "INSERT INTO backfill_runs (extractor, plugin, plugin_version, status, invocation, plan, "
                "retry_of, batch_size, options, last_key, total, processed, inserted, updated, unchanged, "
                "record_errors, batch_errors, started_at, finished_at, heartbeat_at, host, pid, message) "
                "VALUES (?, 'testmanagement', '0', 'running', ?, ?, NULL, 500, '{}', ?, ?, ?, 0, 0, 0, 0, 0, "
                "?, NULL, ?, ?, ?, NULL)",
                (
                    extractor,
                    os.urandom(16).hex(),
                    plan,
                    None if last_key is None else json.dumps(last_key),
                    total,
                    processed,
                    ledger_time(beat - timedelta(seconds=5)),
                    ledger_time(beat),
                    host,
                    pid,
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid
    finally:
        conn.close()


# -- what a database must look like after any crash ---------------------------------------------


@dataclass
class Reference:
    """A template database after one uninterrupted run of both extractors."""

    path: Path
    tests: int
    bugs: int
    features: list[tuple[Any, ...]] = field(default_factory=list)
    attributions: list[tuple[int, int | None]] = field(default_factory=list)

    def load(self) -> Reference:
        self.features = features(self.path)
        self.attributions = attributions(self.path)
        return self


def check_consistent(path: Path, ref: Reference, where: str = "") -> None:
    """The data agrees exactly with the ledger's checkpoints, whatever point a run died at.

    * test_features holds exactly the reference features of the tests up to the furthest
      checkpoint of any test_features run, and nothing else;
    * bugs up to the furthest bug_attribution checkpoint carry the reference attribution, the
      others are still NULL;
    * every run's counts agree with its checkpoint and with its recorded errors.
    """
    ledger = [r for r in runs(path) if r["retry_of"] is None]
    keys: dict[str, Any] = {}
    for name in BOTH:
        found = [decode_key(r["last_key"]) for r in ledger if r["extractor"] == name and r["last_key"]]
        keys[name] = max(found) if found else None

    tf_key = keys["test_features"]
    have = features(path)
    want = [] if tf_key is None else [r for r in ref.features if r[2] <= tf_key]
    assert len(have) == len(want), (
        f"{where}: test_features has {len(have)} rows, but the furthest checkpoint (key {tf_key}) "
        f"accounts for {len(want)}"
    )
    assert have == want, f"{where}: test_features differs from the reference up to key {tf_key}"
    assert scalar(path, "SELECT COUNT(DISTINCT id) FROM test_features") == len(have)

    ba_key = keys["bug_attribution"]
    got = attributions(path)
    expected = [(i, (v if ba_key is not None and i <= ba_key else None)) for i, v in ref.attributions]
    wrong = [(g, e) for g, e in zip(got, expected, strict=True) if g != e]
    assert not wrong, (
        f"{where}: {len(wrong)} bugs disagree with the checkpoint (key {ba_key}); "
        f"first (got, want): {wrong[:3]}"
    )

    tf_runs = [r for r in ledger if r["extractor"] == "test_features"]
    ba_runs = [r for r in ledger if r["extractor"] == "bug_attribution"]
    assert sum(r["inserted"] for r in tf_runs) == len(have), (
        f"{where}: test_features runs say they inserted {sum(r['inserted'] for r in tf_runs)}, "
        f"the table has {len(have)} rows"
    )
    attributed = sum(1 for _, v in got if v is not None)
    assert sum(r["updated"] for r in ba_runs) == attributed, (
        f"{where}: bug_attribution runs say they updated {sum(r['updated'] for r in ba_runs)}, "
        f"{attributed} bugs are attributed"
    )
    for r in ledger:
        check_run_counts(path, r, where)


def check_run_counts(path: Path, r: Mapping[str, Any], where: str = "") -> None:
    """A (non-retry) run's processed count matches its checkpoint key, and its recorded errors
    match its error counts with no key recorded twice."""
    source = {"test_features": "tests", "bug_attribution": "bugs"}[r["extractor"]]
    last = decode_key(r["last_key"])
    upto = 0 if last is None else scalar(path, f"SELECT COUNT(*) FROM {source} WHERE id <= ?", (last,))
    assert r["processed"] == upto, (
        f"{where}: run {r['id']} ({r['extractor']}) processed {r['processed']} rows but its "
        f"checkpoint key {last} covers {upto}"
    )
    if r["extractor"] == "bug_attribution":  # one target row per source row
        outcomes = r["updated"] + r["unchanged"] + r["record_errors"] + r["batch_errors"]
        assert r["processed"] == outcomes, f"{where}: run {r['id']} counts do not add up: {r}"
    recorded = [e["key"] for e in errors_of(path, r["id"])]
    assert len(recorded) == r["record_errors"] + r["batch_errors"], (
        f"{where}: run {r['id']} has {len(recorded)} rows in backfill_errors, but counts "
        f"{r['record_errors']} record + {r['batch_errors']} batch errors"
    )
    assert len(set(recorded)) == len(recorded), f"{where}: run {r['id']} recorded a key twice"


def check_equal_to_reference(path: Path, ref: Reference, where: str = "") -> None:
    have = features(path)
    assert len(have) == len(ref.features), (
        f"{where}: {len(have)} test_features rows, want {len(ref.features)}"
    )
    assert have == ref.features, f"{where}: test_features differs from the uninterrupted reference"
    assert scalar(path, "SELECT COUNT(*) - COUNT(DISTINCT id) FROM test_features") == 0
    got = attributions(path)
    wrong = [(g, e) for g, e in zip(got, ref.attributions, strict=True) if g != e]
    assert not wrong, f"{where}: {len(wrong)} bugs differ from the reference; first {wrong[:3]} (got, want)"
    assert scalar(path, "SELECT COUNT(*) - COUNT(DISTINCT id) FROM bugs") == 0


# -- fixtures -----------------------------------------------------------------------------------


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
    attributions = staticmethod(attributions)
    wait_for = staticmethod(wait_for)
    insert_fake_run = staticmethod(insert_fake_run)
    utc_now = staticmethod(utc_now)
    check_consistent = staticmethod(check_consistent)
    check_run_counts = staticmethod(check_run_counts)
    check_equal_to_reference = staticmethod(check_equal_to_reference)

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._spawned: list[Spawned] = []

    def copy(self, template: Path, name: str) -> Path:
        """A private, writable copy of a template database in this test's tmp dir."""
        path = self.tmp_path / name
        shutil.copy(template, path)
        path.chmod(0o644)
        return path

    def readable(self, path: Path) -> Path:
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

    def spawn(self, args: Sequence[Any], env: Env | None = None) -> Spawned:
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


@pytest.fixture
def crash(tmp_path: Path) -> Iterator[Crash]:
    helper = Crash(tmp_path)
    yield helper
    helper.cleanup()


def _build(factory: pytest.TempPathFactory, name: str, tests: int) -> Path:
    path = factory.mktemp(name) / f"{name}.db"
    synthetic.build(path, tests=tests)
    path.chmod(0o444)
    return path


def _reference(factory: pytest.TempPathFactory, template: Path, name: str) -> Reference:
    path = factory.mktemp(name) / f"{name}.db"
    shutil.copy(template, path)
    path.chmod(0o644)
    proc = run_cli(["run", *BOTH, "-d", path, "-q", "--json"])
    assert proc.returncode == 0, proc.stderr
    path.chmod(0o444)
    return Reference(
        path,
        tests=scalar(path, "SELECT COUNT(*) FROM tests"),
        bugs=scalar(path, "SELECT COUNT(*) FROM bugs"),
    ).load()


@pytest.fixture(scope="session")
def small_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 tests (about 1,200 bugs), never written to."""
    return _build(tmp_path_factory, "small", SMALL_TESTS)


@pytest.fixture(scope="session")
def small_reference(tmp_path_factory: pytest.TempPathFactory, small_template: Path) -> Reference:
    return _reference(tmp_path_factory, small_template, "small-ref")


@pytest.fixture(scope="session")
def medium_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 tests (about 12,000 bugs), never written to."""
    return _build(tmp_path_factory, "medium", MEDIUM_TESTS)


@pytest.fixture(scope="session")
def medium_reference(tmp_path_factory: pytest.TempPathFactory, medium_template: Path) -> Reference:
    return _reference(tmp_path_factory, medium_template, "medium-ref")


@pytest.fixture(scope="session")
def big_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 tests (about 80,000 bugs), never written to."""
    return _build(tmp_path_factory, "big", BIG_TESTS)


@pytest.fixture(scope="session")
def small_with_ledger(tmp_path_factory: pytest.TempPathFactory, small_template: Path) -> Path:
    """The small template after one real ``backfill run test_features`` (so the ledger exists)."""
    path = tmp_path_factory.mktemp("small-ledger") / "ledger.db"
    shutil.copy(small_template, path)
    path.chmod(0o644)
    proc = run_cli(["run", "test_features", "-d", path, "-q"])
    assert proc.returncode == 0, proc.stderr
    path.chmod(0o444)
    return path
