"""SIGINT and SIGTERM stop a run cleanly: exit 130 / 143, the run marked interrupted, the batch
in flight rolled back, a hint on stderr; the same command then resumes, --restart starts over. On a
SQLite file and on a scratch PostgreSQL database."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from support.backends import Backend
from support.consistency import Reference
from support.db import sqlite_path

if TYPE_CHECKING:
    from support.crash import Crash

SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}


@dataclass
class Start:
    """The database a test starts from, its reference, and the last batch a signal may aim at."""

    db: Backend
    reference: Reference
    last_batch: int


@pytest.fixture
def start(kind: str, crash: Crash, request: pytest.FixtureRequest) -> Start:
    """The medium database (300 test batches and about 1,200 bug batches of 10) on SQLite; on
    PostgreSQL the small one (30 and about 120), which shows the same behaviour in a fraction of
    the time, with the signal aimed within it."""
    size, last_batch = ("medium", 250) if kind == "sqlite" else ("small", 25)
    template: Path = request.getfixturevalue(f"{size}_template")
    reference: Reference = request.getfixturevalue(f"{size}_reference")
    return Start(crash.database(kind, template, "cache.db"), reference, last_batch)


def _start_and_stop(crash: Crash, start: Start, sig: int, extra: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """Start both extractors with --batch-size 10, and send ``sig`` at a seeded random point.

    The run stops itself there (BACKFILL_STOP_AT: a batch of either extractor, written but not
    committed or just committed) and gets the signal while stopped, so it lands mid-run however
    fast the machine. With batches this small one messy row is 10% of a batch, so the error-rate
    limit is raised out of the way.
    """
    _seed, rng = crash.seeded()
    path = start.db
    spec = (
        f"{rng.choice(crash.BOTH)}:{rng.choice(['written', 'committed'])}:{rng.randint(1, start.last_batch)}"
    )
    print(f"stopping at {spec}")
    cmd = ["run", *crash.BOTH, "-d", path.url, "-q", "--batch-size", "10", "--max-error-rate", "0.5", *extra]
    proc = crash.spawn(cmd, env={"BACKFILL_STOP_AT": spec})
    proc.wait_stopped()
    try:
        proc.signal(sig)
    finally:
        proc.resume()
    return cmd, proc.wait(timeout=120)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_signal_interrupts_then_resumes(name: str, crash: Crash, start: Start) -> None:
    sig, code = SIGNALS[name]
    path, reference = start.db, start.reference
    cmd, done = _start_and_stop(crash, start, sig, ("--json",))

    assert done.returncode == code, done.stderr
    report = json.loads(done.stdout)
    assert report["interrupted"] is True and report["signal"] == name, report
    assert report["exit_code"] == code, report
    err = done.stderr.lower()
    assert "interrupted" in err, done.stderr
    assert "run the same command again to resume" in err and "--restart" in err, done.stderr
    file = sqlite_path(path)
    assert file is None or not Path(f"{file}-journal").exists(), "a clean stop left a hot journal behind"

    ledger = crash.runs(path)
    assert ledger, "the interrupted run left no ledger"
    stopped = ledger[-1]
    assert stopped["status"] == "interrupted", ledger
    assert stopped["finished_at"] is not None
    assert "interrupted" in (stopped["message"] or ""), stopped
    assert [r["status"] for r in ledger[:-1]] == ["succeeded"] * (len(ledger) - 1), ledger
    # Every committed batch is in the checkpoint, and nothing after it was written.
    crash.check_consistent(path, reference, f"after {name}")
    # The summary this process printed agrees with what its ledger run committed.
    summary = next(x for x in report["extractors"] if x["extractor"] == stopped["extractor"])
    assert summary["run_id"] == stopped["id"], summary
    for count in ("processed", "inserted", "updated", "unchanged"):
        assert summary[count] == stopped[count], (count, summary, stopped)
    assert summary["errors"] == stopped["record_errors"] + stopped["batch_errors"], (summary, stopped)
    source = "tests" if stopped["extractor"] == "test_features" else "bugs"
    total = crash.scalar(path, f"SELECT COUNT(*) FROM {source}")
    assert stopped["processed"] < total, f"{name} landed after the run had finished: {stopped}"

    again = crash.run_cli(cmd)
    assert again.returncode == 0, again.stderr
    last = crash.decode_key(stopped["last_key"])
    origin = "from the start" if last is None else f"from key {last}"
    assert f"backfill: resuming run {stopped['id']} of {stopped['extractor']} {origin}" in again.stderr, (
        again.stderr
    )
    if stopped["extractor"] == "bug_attribution":
        assert "test_features: already completed in run" in again.stderr, again.stderr
    crash.check_equal_to_reference(path, reference, f"after resuming from {name}")

    after = {r["id"]: r for r in crash.runs(path)}
    resumed = after[stopped["id"]]
    assert resumed["status"] == "succeeded", resumed
    assert resumed["processed"] == resumed["total"] == total, resumed
    assert len(after) == 2, f"resuming created extra runs: {list(after.values())}"
    for r in after.values():
        crash.check_run_counts(path, r, f"after resuming from {name}")
    tf = next(r for r in after.values() if r["extractor"] == "test_features")
    assert tf["inserted"] == len(reference.features), tf


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_restart_after_interruption_starts_over(how: str, crash: Crash, start: Start) -> None:
    path, reference = start.db, start.reference
    _cmd, done = _start_and_stop(crash, start, signal.SIGINT if how == "SIGINT" else signal.SIGKILL)
    assert done.returncode == (130 if how == "SIGINT" else -signal.SIGKILL), done.stderr
    readable = crash.readable(path)
    before = crash.runs(readable)
    assert before, "the stopped run left no ledger"
    stopped = before[-1]
    assert stopped["status"] == ("interrupted" if how == "SIGINT" else "running"), before
    # The signal landed before the stopped run finished: maybe before its first batch committed,
    # as when the poll saw test_features' rows so late that bug_attribution had just begun.
    source = "tests" if stopped["extractor"] == "test_features" else "bugs"
    assert stopped["processed"] < crash.scalar(readable, f"SELECT COUNT(*) FROM {source}"), stopped

    again = crash.run_cli(["run", *crash.BOTH, "-d", path.url, "-q", "--restart", "--json"])
    assert again.returncode == 0, again.stderr
    assert "resuming run" not in again.stderr and "taking over run" not in again.stderr, again.stderr
    report = json.loads(again.stdout)
    new_ids = {x["extractor"]: x["run_id"] for x in report["extractors"]}
    old_ids = {r["id"] for r in before}
    assert all(i not in old_ids for i in new_ids.values()), (new_ids, old_ids)

    after = {r["id"]: r for r in crash.runs(path)}
    assert not [r for r in after.values() if r["status"] == "running"], list(after.values())
    assert after[stopped["id"]]["status"] == "interrupted", after[stopped["id"]]
    totals = {"test_features": reference.tests, "bug_attribution": reference.bugs}
    for name, run_id in new_ids.items():
        r = after[run_id]
        assert r["status"] == "succeeded", r
        assert r["retry_of"] is None
        assert r["processed"] == r["total"] == totals[name], r
        crash.check_run_counts(path, r, f"--restart after {how}")
        x = next(x for x in report["extractors"] if x["extractor"] == name)
        assert x["processed"] == totals[name], x
    crash.check_equal_to_reference(path, reference, f"--restart after {how}")
