"""A 'running' run whose owner is dead or silent is taken over; a live one is never run twice. On a
SQLite file and on a scratch PostgreSQL database (the stand-in for a live ``backfill`` process waits
on a SQLite file of its own either way: only its process matters)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from support.backends import Backend
from support.db import sqlite_path

if TYPE_CHECKING:
    from support.crash import Crash

OTHER_HOST = "some-other-host"


# (host, owner process, heartbeat age in s, BACKFILL_STALE_AFTER, taken over?)
CASES: dict[str, tuple[str, str | int, int, str | None, bool]] = {
    # On this host the owner process itself is asked.
    "same-host-pid-gone": ("HOST", "dead", 0, None, True),
    "same-host-pid-reused-by-another-program": ("HOST", "sleep", 0, None, True),
    "same-host-live-backfill": ("HOST", "backfill", 0, None, False),
    # A slow batch does not make a live local process look dead, however old its heartbeat.
    "same-host-live-backfill-silent-10min": ("HOST", "backfill", 600, None, False),
    # On another host only the heartbeat tells.
    "other-host-heartbeat-10min-old": (OTHER_HOST, 424242, 600, None, True),
    "other-host-fresh-heartbeat": (OTHER_HOST, 424242, 0, None, False),
    "other-host-30s-old-stale-after-10s": (OTHER_HOST, 424242, 30, "10", True),
    "other-host-10min-old-stale-after-1h": (OTHER_HOST, 424242, 600, "3600", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_running_row_is_taken_over_only_when_dead_or_stale(
    case: str, crash: Crash, small_template: Path, with_ledger: Backend
) -> None:
    host, owner, age, stale_after, taken_over = CASES[case]
    host = socket.gethostname() if host == "HOST" else host
    with contextlib.ExitStack() as stack:
        if owner == "dead":
            pid = crash.dead_pid()
        elif owner == "sleep":
            sleeper = subprocess.Popen(["sleep", "600"])
            stack.callback(sleeper.wait)
            stack.callback(sleeper.kill)
            pid = sleeper.pid
        elif owner == "backfill":
            pid = stack.enter_context(crash.live_backfill(small_template))
        else:
            assert isinstance(owner, int)
            pid = owner
        _check_takeover(crash, with_ledger, case, host, pid, age, stale_after, taken_over)


def _check_takeover(
    crash: Crash,
    path: Backend,
    case: str,
    host: str,
    pid: int,
    age: float,
    stale_after: str | None,
    taken_over: bool,
) -> None:
    tests = crash.scalar(path, "SELECT COUNT(*) FROM tests")
    halfway = 150
    done_before = crash.scalar(path, "SELECT COUNT(*) FROM tests WHERE id <= ?", (halfway,))
    fake = crash.insert_fake_run(
        path,
        extractor="test_features",
        host=host,
        pid=pid,
        heartbeat_age=age,
        plan="test_features",
        last_key=halfway,
        processed=done_before,
        total=tests,
    )
    before = crash.runs(path)
    features_before = crash.features(path)

    env = {"BACKFILL_STALE_AFTER": stale_after}
    proc = crash.run_cli(["run", "test_features", "-d", path.url, "-q"], env=env)

    after = {r["id"]: r for r in crash.runs(path)}
    if taken_over:
        assert proc.returncode == 0, proc.stderr
        assert f"backfill: taking over run {fake} of test_features from key {halfway}" in proc.stderr, (
            proc.stderr
        )
        assert len(after) == len(before), f"taking over created a new run: {list(after.values())}"
        r = after[fake]
        assert r["status"] == "succeeded", r
        assert r["host"] == socket.gethostname() and r["pid"] != pid, r
        assert r["processed"] == r["total"] == tests, r
        crash.check_run_counts(path, r, case)
        assert crash.features(path) == features_before  # the first run had written them all
    else:
        assert proc.returncode == 3, proc.stderr
        assert "already running" in proc.stderr, proc.stderr
        assert f"run {fake} of test_features" in proc.stderr, proc.stderr
        assert "taking over" not in proc.stderr
        assert list(after.values()) == before, "a refused run changed the ledger"


def test_second_run_of_a_live_extractor_is_refused(kind: str, crash: Crash, small_template: Path) -> None:
    path = crash.database(kind, small_template, "cache.db")
    _seed, rng = crash.seeded()
    # The first run is held mid-way, however fast the machine: it stops itself after committing a
    # batch (of 60), alive and holding no lock.
    stop_at = f"test_features:committed:{rng.randint(1, 59)}"
    first = crash.spawn(
        ["run", "test_features", "-d", path.url, "-q", "--batch-size", "5"],
        env={"BACKFILL_STOP_AT": stop_at},
    )
    first.wait_stopped()
    (owner,) = crash.runs(path)
    assert owner["status"] == "running" and owner["processed"] > 0, owner
    try:
        for extra in ([], ["--restart"], ["--retry-errors"]):
            second = crash.run_cli(["run", "test_features", "-d", path.url, "-q", *extra])
            assert first.alive(), f"the first run ended while {extra} was tried; the test proves nothing"
            assert second.returncode == 3, (extra, second.stderr)
            assert "already running" in second.stderr, (extra, second.stderr)
            assert f"run {owner['id']} of test_features" in second.stderr, second.stderr
    finally:
        first.resume()

    done = first.wait()
    assert done.returncode == 0, done.stderr
    ledger = crash.runs(path)
    assert [(r["id"], r["status"]) for r in ledger] == [(owner["id"], "succeeded")], ledger
    tests = crash.scalar(path, "SELECT COUNT(*) FROM tests")
    assert ledger[0]["processed"] == ledger[0]["total"] == tests, ledger[0]
    crash.check_run_counts(path, ledger[0], "concurrent")


def test_dependent_extractor_waits_for_a_live_run_of_its_dependency(
    crash: Crash, with_ledger: Backend, small_with_ledger: Path
) -> None:
    path = with_ledger
    with crash.live_backfill(small_with_ledger) as pid:
        fake = crash.insert_fake_run(
            path,
            extractor="test_features",
            host=socket.gethostname(),
            pid=pid,
            heartbeat_age=0,
            plan="test_features",
            last_key=10,
            processed=10,
            total=300,
        )
        before = crash.runs(path)
        proc = crash.run_cli(["run", "bug_attribution", "-d", path.url, "-q"])

    assert proc.returncode == 3, proc.stderr
    assert f"bug_attribution depends on test_features, which run {fake} is still filling" in proc.stderr
    assert crash.runs(path) == before, "a refused run changed the ledger"


def test_a_run_recorded_with_this_process_pid_is_dead(crash: Crash, with_ledger: Backend) -> None:
    """A container restarted with the same hostname: the dead run's pid is the new process's."""
    path = with_ledger
    if sqlite_path(path) is not None:
        own_pid = (
            "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
            "c.execute('UPDATE backfill_runs SET pid = ? WHERE id = ?', (os.getpid(), int(sys.argv[2])));"
            "c.commit(); c.close();"
        )
    else:
        own_pid = (
            "import asyncio, asyncpg, os, sys\n"
            "async def own():\n"
            "    c = await asyncpg.connect(sys.argv[1])\n"
            "    await c.execute('UPDATE backfill_runs SET pid = $1 WHERE id = $2',\n"
            "                    os.getpid(), int(sys.argv[2]))\n"
            "    await c.close()\n"
            "asyncio.run(own())\n"
        )
    script = own_pid + (
        "import sys; sys.argv = ['backfill', 'run', 'test_features', '-d', sys.argv[1], '-q'];"
        "from backfill_core.app.cli import main; main()"
    )
    fake = crash.insert_fake_run(
        path,
        extractor="test_features",
        host=socket.gethostname(),
        pid=1,
        heartbeat_age=0,
        plan="test_features",
        last_key=150,
        processed=150,
        total=300,
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, path.url, str(fake)],
        capture_output=True,
        text=True,
        env=crash.make_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"taking over run {fake} of test_features" in proc.stderr


def test_status_shows_a_running_run_whose_process_is_gone_as_dead(crash: Crash, with_ledger: Backend) -> None:
    path = with_ledger
    fake = crash.insert_fake_run(
        path,
        extractor="test_features",
        host=socket.gethostname(),
        pid=crash.dead_pid(),
        heartbeat_age=0,
        plan="test_features",
        last_key=150,
        processed=150,
        total=300,
    )
    proc = crash.run_cli(["status", "-d", path.url, "--json"])
    assert proc.returncode == 0, proc.stderr
    shown = {r["id"]: r["status"] for r in json.loads(proc.stdout)}
    assert shown[fake] == "dead", shown
    assert crash.scalar(path, "SELECT status FROM backfill_runs WHERE id = ?", (fake,)) == "running"
