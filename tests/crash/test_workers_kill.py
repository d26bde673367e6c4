"""``backfill run --workers N`` stopped part-way, by a SIGKILL of one of its workers or of the
command itself or by SIGTERM, then run again: the tables and the ledger end exactly as one
uninterrupted single-process run leaves them, on SQLite and PostgreSQL. Between the stop and the
rerun the data holds exactly the keys the ledger says are committed (its low-water mark and the
ranges above it, which parallel parts commit out of key order). A live run with workers refuses a
second command, and ``backfill pause`` holds it."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from backfill_core.engine.throttle import CONTROL_EVERY
from support.processes import children, running

if TYPE_CHECKING:
    from support.backends import Backend
    from support.consistency import Reference
    from support.crash import Crash

BATCH = 50
WORKERS = 3
STOP_AT = "test_features:committed:12"
"""Where the run stops itself before a test kills it: each worker has then taken a part (the
3,000 tests are cut into 12 parts of about 250, 5 batches each), so batches of several parts are
committed, not all of them in key order."""

FEATURES = (
    "SELECT id, customer_id, test_id, feature_id, title, description, howtofind, user_stories, "
    "CAST(enable_default AS INTEGER), CAST(enable_content AS INTEGER), CAST(enable_visual AS INTEGER) "
    "FROM test_features ORDER BY id"
)


def _within(key: int, spans: list[tuple[Any, Any]]) -> bool:
    return any((a is None or a < key) and (u is None or key <= u) for a, u in spans)


def _committed(crash: Crash, view: Any, extractor: str) -> list[tuple[Any, Any]]:
    """The key ranges the ledger records as committed by the extractor's run."""
    ((run_id, last),) = crash.query(
        view, f"SELECT id, last_key FROM backfill_runs WHERE extractor = '{extractor}'"
    )
    above = crash.query(view, f"SELECT after, upto FROM backfill_ranges WHERE run_id = {run_id}")
    spans = [(None if a is None else json.loads(a), json.loads(u)) for a, u in above]
    return ([(None, json.loads(last))] if last is not None else []) + spans


def _check_committed_exactly(crash: Crash, db: Backend, ref: Reference) -> None:
    """test_features holds the reference rows of exactly the committed keys, and the run's counts
    are those keys'."""
    view = crash.readable(db)
    spans = _committed(crash, view, "test_features")
    assert len(spans) > 1, f"the killed run committed no part apart from the others: {spans}"
    want = [r for r in crash.query(ref.path, FEATURES) if _within(r[2], spans)]
    assert crash.query(view, FEATURES) == want
    keys = [k for (k,) in crash.query(view, "SELECT id FROM tests")]
    ((processed,),) = crash.query(view, "SELECT processed FROM backfill_runs")
    assert processed == sum(1 for k in keys if _within(k, spans))


def _rerun_matches_reference(crash: Crash, db: Backend, ref: Reference) -> None:
    cmd = ["run", *crash.BOTH, "-d", db.url, "-q", "--json", "--batch-size", str(BATCH)]
    again = crash.run_cli([*cmd, "--workers", str(WORKERS)])
    assert again.returncode == 0, again.stderr
    assert "taking over run 1 of test_features" in again.stderr or "resuming run 1" in again.stderr
    crash.check_equal_to_reference(db, ref, "after the rerun")
    columns = "extractor, status, processed, total, inserted, updated, unchanged, record_errors"
    ledger = crash.query(crash.readable(db), f"SELECT {columns} FROM backfill_runs ORDER BY id")
    assert ledger == crash.query(ref.path, f"SELECT {columns} FROM backfill_runs ORDER BY id")
    assert crash.query(crash.readable(db), "SELECT COUNT(*) FROM backfill_ranges") == [(0,)]
    errors = "SELECT run_id, key, tier, kind FROM backfill_errors ORDER BY run_id, key"
    assert crash.query(crash.readable(db), errors) == crash.query(ref.path, errors)


def _stopped_run(crash: Crash, db: Backend) -> tuple[Any, list[int]]:
    cmd = ["run", *crash.BOTH, "-d", db.url, "-q", "--batch-size", str(BATCH), "--workers", str(WORKERS)]
    proc = crash.spawn(cmd, env={"BACKFILL_STOP_AT": STOP_AT})
    proc.wait_stopped()
    workers = children(proc.pid)
    assert len(workers) == WORKERS, workers
    return proc, workers


def test_a_killed_worker_fails_the_run_and_a_rerun_completes_it(
    kind: str, crash: Crash, medium_template: Any, medium_reference: Reference
) -> None:
    db = crash.database(kind, medium_template, "workers.db")
    proc, workers = _stopped_run(crash, db)
    os.kill(workers[1], signal.SIGKILL)
    proc.resume()
    done = proc.wait()
    assert done.returncode == 3, done.stderr
    assert f"extraction worker (pid {workers[1]}) was killed by signal {int(signal.SIGKILL)}" in done.stderr
    assert "run the same command to resume" in done.stderr
    assert crash.query(crash.readable(db), "SELECT status FROM backfill_runs") == [("failed",)]
    _check_committed_exactly(crash, db, medium_reference)
    _rerun_matches_reference(crash, db, medium_reference)


def test_a_killed_command_takes_its_workers_along_and_a_rerun_completes_it(
    kind: str, crash: Crash, medium_template: Any, medium_reference: Reference
) -> None:
    db = crash.database(kind, medium_template, "workers.db")
    proc, workers = _stopped_run(crash, db)
    proc.signal(signal.SIGKILL)
    assert proc.wait().returncode == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while any(running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(running(w) for w in workers), f"workers {workers} outlived the killed command"
    assert crash.query(crash.readable(db), "SELECT status FROM backfill_runs") == [("running",)]
    _check_committed_exactly(crash, db, medium_reference)
    _rerun_matches_reference(crash, db, medium_reference)


def test_a_second_command_is_refused_while_a_run_with_workers_is_live(
    kind: str, crash: Crash, medium_template: Any, medium_reference: Reference
) -> None:
    db = crash.database(kind, medium_template, "workers.db")
    first, _ = _stopped_run(crash, db)
    (owner,) = crash.runs(crash.readable(db))
    try:
        for extra in (["--workers", "2"], ["--workers", "2", "--restart"], []):
            second = crash.run_cli(["run", *crash.BOTH, "-d", db.url, "-q", *extra])
            assert first.alive(), f"the first run ended while {extra} was tried; the test proves nothing"
            assert second.returncode == 3, (extra, second.stderr)
            assert f"run {owner['id']} of test_features is already running" in second.stderr, second.stderr
    finally:
        first.resume()
    assert first.wait().returncode == 0
    crash.check_equal_to_reference(db, medium_reference, "after the first run")
    assert [r["status"] for r in crash.runs(crash.readable(db))] == ["succeeded", "succeeded"]


def test_sigterm_waits_for_the_batch_being_written_and_a_rerun_completes_it(
    kind: str, crash: Crash, medium_template: Any, medium_reference: Reference
) -> None:
    db = crash.database(kind, medium_template, "workers.db")
    cmd = ["run", *crash.BOTH, "-d", db.url, "-q", "--json", "--batch-size", str(BATCH)]
    proc = crash.spawn(
        [*cmd, "--workers", str(WORKERS)], env={"BACKFILL_STOP_AT": "test_features:written:12"}
    )
    proc.wait_stopped()  # the 12th batch written, not committed
    workers = children(proc.pid)
    proc.signal(signal.SIGTERM)
    proc.resume()
    done = proc.wait()
    assert done.returncode == 143, done.stderr
    assert not any(running(w) for w in workers), f"workers {workers} outlived the command"
    (stopped,) = crash.runs(crash.readable(db))
    assert stopped["status"] == "interrupted", stopped
    (summary,) = json.loads(done.stdout)["extractors"]
    for count in ("processed", "inserted", "unchanged"):
        assert summary[count] == stopped[count], (count, summary, stopped)
    _check_committed_exactly(crash, db, medium_reference)
    _rerun_matches_reference(crash, db, medium_reference)


def test_a_paused_run_with_workers_commits_nothing_until_resumed(
    kind: str, crash: Crash, medium_template: Any, medium_reference: Reference
) -> None:
    db = crash.database(kind, medium_template, "workers.db")
    proc, _ = _stopped_run(crash, db)
    stopped_at = time.monotonic()
    paused = crash.run_cli(["pause", "1", "-d", db.url])
    assert paused.returncode == 0, paused.stderr
    # The run reads its controls at most once per CONTROL_EVERY: its next batch then reads them.
    time.sleep(max(0.0, stopped_at + CONTROL_EVERY - time.monotonic()))
    proc.resume()

    def row() -> tuple[Any, ...]:
        ((processed, heartbeat, message),) = crash.query(
            crash.readable(db), "SELECT processed, heartbeat_at, message FROM backfill_runs WHERE id = 1"
        )
        return processed, str(heartbeat), message or ""

    assert crash.wait_for(lambda: row()[2].startswith("paused"), proc), "the run ended unpaused"
    processed, beat, _ = row()
    seen = {beat}

    def two_more_heartbeats() -> bool:  # the waiting run has read its controls again
        seen.add(row()[1])
        return len(seen) >= 3

    assert crash.wait_for(two_more_heartbeats, proc)
    assert row()[0] == processed, "the paused run committed a batch"
    resumed = crash.run_cli(["resume", "1", "-d", db.url])
    assert resumed.returncode == 0, resumed.stderr
    done = proc.wait()
    assert done.returncode == 0, done.stderr
    assert "test_features: paused (`backfill pause 1` holds run 1)" in done.stderr
    crash.check_equal_to_reference(db, medium_reference, "after the pause")
