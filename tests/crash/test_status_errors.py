"""`backfill status` and `backfill errors` read the ledger; a dry run never creates it. On a SQLite
file and on a scratch PostgreSQL database."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from support.backends import Backend
from support.db import fingerprint, sqlite_path

if TYPE_CHECKING:
    from support.consistency import Reference
    from support.crash import Crash


def test_dry_run_creates_no_ledger(kind: str, crash: Crash, small_template: Path) -> None:
    db = crash.database(kind, small_template, "cache.db")
    path = db.url
    digest = fingerprint(db)
    tests = crash.scalar(db, "SELECT COUNT(*) FROM tests")

    proc = crash.run_cli(["run", *crash.BOTH, "-d", path, "--dry-run", "-q", "--json"])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["dry_run"] is True
    assert report["extractors"][0]["processed"] == tests
    assert all(x["run_id"] is None for x in report["extractors"]), report["extractors"]

    names = crash.table_names(db)
    assert "backfill_runs" not in names and "backfill_errors" not in names, names
    assert fingerprint(db) == digest, "a dry run changed the database"
    assert kind != "sqlite" or not Path(f"{path}-journal").exists()

    status = crash.run_cli(["status", "-d", path])
    assert status.returncode == 0, status.stderr
    assert "no runs recorded yet" in status.stdout, status.stdout
    as_json = crash.run_cli(["status", "-d", path, "--json"])
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == []
    missing = crash.run_cli(["errors", "1", "-d", path])
    assert missing.returncode == 2, missing.stderr
    assert fingerprint(db) == digest, "status or errors changed the database"
    assert "backfill_runs" not in crash.table_names(db)


def test_dry_run_neither_records_nor_takes_over(crash: Crash, with_ledger: Backend) -> None:
    """With a ledger present, and a dead run in it, a dry run still writes nothing at all."""
    path = with_ledger
    dead = crash.insert_fake_run(
        path,
        extractor="test_features",
        host=socket.gethostname(),
        pid=crash.dead_pid(),
        heartbeat_age=0,
        plan="test_features",
    )
    before = crash.runs(path)
    digest = fingerprint(path)
    proc = crash.run_cli(["run", "test_features", "-d", path.url, "--dry-run", "-q"])
    assert proc.returncode == 0, proc.stderr
    assert "taking over" not in proc.stderr and "resuming" not in proc.stderr, proc.stderr
    assert fingerprint(path) == digest, "a dry run changed the database"
    assert crash.runs(path) == before
    assert before[-1]["id"] == dead and before[-1]["status"] == "running"


def test_status_json_after_a_complete_run(
    kind: str, crash: Crash, small_template: Path, small_reference: Reference
) -> None:
    path: Path | str = small_reference.path  # read-only file: status and errors must only read
    if kind != "sqlite":
        db = crash.database(kind, small_template, "complete.db")
        done = crash.run_cli(["run", *crash.BOTH, "-d", db.url, "-q"])
        assert done.returncode == 0, done.stderr
        path = db.url
    proc = crash.run_cli(["status", "-d", path, "--json"])
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    by_name = {r["extractor"]: r for r in listed}
    assert sorted(by_name) == sorted(crash.BOTH), listed
    totals = {"test_features": small_reference.tests, "bug_attribution": small_reference.bugs}
    for name, r in by_name.items():
        assert r["status"] == "succeeded", r
        assert r["processed"] == r["total"] == totals[name], r
        assert r["retry_of"] is None
        assert r["errors"] == r["record_errors"] + r["batch_errors"], r
        assert r["finished_at"] is not None
        errors = crash.run_cli(["errors", str(r["id"]), "-d", path, "--json"])
        assert errors.returncode == 0, errors.stderr
        listed_errors = json.loads(errors.stdout)
        assert len(listed_errors) == r["errors"], (name, listed_errors)
        assert len({e["key"] for e in listed_errors}) == len(listed_errors)
    assert (
        by_name["bug_attribution"]["updated"]
        + by_name["bug_attribution"]["unchanged"]
        + by_name["bug_attribution"]["errors"]
        == small_reference.bugs
    )
    assert by_name["test_features"]["inserted"] == len(small_reference.features)

    text = crash.run_cli(["status", "-d", path])
    assert text.returncode == 0, text.stderr
    for name in crash.BOTH:
        line = next(line for line in text.stdout.splitlines() if f" {name} " in f" {line} ")
        assert "succeeded" in line and f"{totals[name]}/{totals[name]}" in line, line

    missing = crash.run_cli(["errors", "999", "-d", path])
    assert missing.returncode == 2, missing.stderr
    assert "no run 999" in missing.stderr, missing.stderr
    missing_json = crash.run_cli(["errors", "999", "-d", path, "--json"])
    assert missing_json.returncode == 2, missing_json.stderr


def test_status_and_errors_work_right_after_a_crash(kind: str, crash: Crash, medium_template: Path) -> None:
    """SIGKILL lands while a batch is being written, on SQLite leaving a hot rollback journal
    beside the database: `backfill status` and `backfill errors` are what a user runs next, and
    must still work."""
    db = crash.database(kind, medium_template, "cache.db")
    file = sqlite_path(db)
    path = db.url
    cmd = ["run", *crash.BOTH, "-d", path, "-q", "--batch-size", "4000"]
    # A batch of 4,000 bugs changes more pages than SQLite's page cache holds, so SQLite syncs the
    # journal and writes pages to the database before the commit: stopped once the second such
    # batch is written, the run has a hot journal beside the file, which the kill leaves behind.
    proc = crash.spawn(cmd, env={"BACKFILL_STOP_AT": "bug_attribution:written:2"})
    proc.wait_stopped()
    if file is not None:  # SQLite only: the journal a killed writer leaves beside the file
        assert crash.journal_is_hot(file), "the batch spilled nothing to the file: no hot journal to test"
    proc.signal(signal.SIGKILL)
    assert proc.wait().returncode == -signal.SIGKILL
    if file is not None:
        assert crash.journal_is_hot(file)
    expected = crash.runs(crash.readable(db))  # what the ledger says once the journal is rolled back
    dead = expected[-1]
    assert dead["status"] == "running" and dead["extractor"] == "bug_attribution", dead
    assert dead["processed"] == 4000, dead  # the first batch committed, the second rolled back

    status = crash.run_cli(["status", "-d", path, "--json"])
    assert status.returncode == 0, f"`backfill status` fails after a crash:\n{status.stderr}"
    listed = {r["id"]: r for r in json.loads(status.stdout)}
    assert listed[dead["id"]]["status"] == "dead", listed  # recorded 'running'; its process is gone
    assert listed[dead["id"]]["processed"] == dead["processed"], listed
    errors = crash.run_cli(["errors", str(dead["id"]), "-d", path])
    assert errors.returncode == 0, f"`backfill errors` fails after a crash:\n{errors.stderr}"

    resumed = crash.run_cli(cmd)
    assert resumed.returncode == 0, resumed.stderr
    assert f"taking over run {dead['id']} of {dead['extractor']}" in resumed.stderr, resumed.stderr
