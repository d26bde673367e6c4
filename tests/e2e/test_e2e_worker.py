"""The extraction worker, seen from outside: where extraction runs, that it changes no result, and
what happens when the worker or the engine dies.

The probe plugin (tests/plugins/backfill-probe-plugin) records the pid of the process that
extracted each row, and returns a value that cannot be pickled for every tenth test.

SQLite only, but for the last test: a run on PostgreSQL has no worker (extraction runs in the
engine's process), which that test shows.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.backends import builtin_backend
from support.cli import BACKFILL, RunCli, make_env, parse_json_output, plugin_env
from support.postgres import needs_server
from support.processes import children, running, wait_until_stopped
from support.sqlite import query

JOB = ["run", "test_features", "bug_attribution"]
STOP_AT = "test_features:committed:3"
"""Where the engine stops itself (BACKFILL_STOP_AT) before a test kills it or its worker."""


def _with_probe_table(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, pid INTEGER, note TEXT)")
    return path


def _spawn(args: list[str], env: dict[str, str | None] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BACKFILL), *args],
        env=make_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _tables(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    return (
        query(path, "SELECT * FROM test_features ORDER BY id"),
        query(path, "SELECT id, test_feature_id FROM bugs ORDER BY id"),
    )


def _errors(path: Path) -> list[tuple[object, ...]]:
    return query(path, "SELECT run_id, key, tier, kind, message FROM backfill_errors ORDER BY id")


def test_extraction_runs_in_a_worker_unless_told_not_to(fresh_db: Path, probe_site: Path) -> None:
    path = _with_probe_table(fresh_db)
    env = plugin_env(probe_site)
    proc = _spawn(["run", "probe_pid", "-d", str(path), "-q", "--batch-size", "50"], env)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    pids = {pid for (pid,) in query(path, "SELECT DISTINCT pid FROM probe")}
    assert len(pids) == 1 and proc.pid not in pids, (proc.pid, pids)

    proc = _spawn(["run", "probe_pid", "-d", str(path), "-q", "--restart", "--no-worker"], env)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert query(path, "SELECT DISTINCT pid FROM probe") == [(proc.pid,)]


def test_worker_and_main_process_leave_the_same_tables_errors_and_counts(
    copy_db: Callable[[str], Path], cli: RunCli
) -> None:
    results = {}
    for flag in ("--worker", "--no-worker"):
        path = copy_db(f"{flag}.db")
        proc = cli([*JOB, "-d", path, "--json", "--batch-size", "37", flag])
        assert proc.returncode == 0, proc.stderr
        summary = parse_json_output(proc)
        counts = [
            {
                k: x[k]
                for k in ("extractor", "processed", "inserted", "updated", "unchanged", "errors_by_tier")
            }
            for x in summary["extractors"]
        ]
        results[flag] = (_tables(path), _errors(path), counts, summary["validation"])
    assert results["--worker"] == results["--no-worker"]
    (features, _), errors, counts, _ = results["--worker"]
    assert features and errors and all(c["processed"] for c in counts)  # the comparison compares something


def test_values_that_cannot_leave_the_worker_are_record_errors(fresh_db: Path, probe_site: Path) -> None:
    path = _with_probe_table(fresh_db)
    proc = _spawn(
        ["run", "probe_unsendable", "-d", str(path), "-q", "--json", "--max-error-rate", "0.5"],
        plugin_env(probe_site),
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    (stats,) = json.loads(stdout)["extractors"]
    tests = [k for (k,) in query(path, "SELECT id FROM tests ORDER BY id")]
    unsendable = [k for k in tests if k % 10 == 0]
    assert unsendable and stats["errors_by_tier"] == {"record": {"plugin-bug": len(unsendable)}}, stats
    assert stats["inserted"] == len(tests) - len(unsendable)
    assert query(path, "SELECT id FROM probe ORDER BY id") == [(k,) for k in tests if k % 10]
    errors = query(path, "SELECT key, message FROM backfill_errors ORDER BY key")
    assert sorted(int(k) for k, _ in errors) == unsendable
    for _, message in errors:
        assert "cannot take" in message and "backfill-probe-plugin" in message, message


def test_killed_worker_ends_the_run_and_the_next_run_resumes(
    copy_big: Callable[[str], Path], big_full_run_db: Path
) -> None:
    path = copy_big("cache.db")
    proc = _spawn([*JOB, "-d", str(path), "-q", "--batch-size", "10"], {"BACKFILL_STOP_AT": STOP_AT})
    # Killed while test_features runs, however fast the machine: the engine stops itself there.
    wait_until_stopped(proc)
    (worker,) = children(proc.pid)
    os.kill(worker, signal.SIGKILL)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert f"extraction worker (pid {worker}) was killed by signal {int(signal.SIGKILL)}" in stderr, stderr
    assert "run the same command to resume" in stderr
    (status,) = query(path, "SELECT status FROM backfill_runs WHERE extractor = 'test_features'")
    assert status == ("failed",)

    resumed = subprocess.run(
        [str(BACKFILL), *JOB, "-d", str(path), "-q", "--json"],
        env=make_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resum" in resumed.stderr, resumed.stderr
    assert _tables(path) == _tables(big_full_run_db)
    assert json.loads(resumed.stdout)["validation"]


def test_worker_does_not_outlive_a_killed_engine(copy_big: Callable[[str], Path]) -> None:
    path = copy_big("cache.db")
    proc = _spawn([*JOB, "-d", str(path), "-q", "--batch-size", "10"], {"BACKFILL_STOP_AT": STOP_AT})
    # Killed mid-run, however fast the machine: the engine stops itself there first.
    wait_until_stopped(proc)
    (worker,) = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert _wait_for(lambda: not running(worker), timeout=60), f"worker {worker} outlived its engine"


@pytest.mark.parametrize("kind", [pytest.param("postgresql", marks=needs_server)])
def test_on_postgresql_extraction_runs_in_the_engines_process(
    kind: str, template_db: Path, tmp_path: Path, probe_site: Path
) -> None:
    with builtin_backend(kind, template_db, tmp_path / "unused") as db:
        db.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, pid INTEGER, note TEXT)")
        args = ["run", "probe_pid", "-d", db.url, "-q", "--batch-size", "50"]
        proc = _spawn(args, plugin_env(probe_site))
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        assert db.rows("SELECT DISTINCT pid FROM probe") == [(proc.pid,)]
