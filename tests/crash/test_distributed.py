"""Distributed runs (``backfill enqueue`` + ``backfill worker``) on the real PostgreSQL server:
several workers leave exactly the tables, ledger totals and errors of one uninterrupted process;
a SIGKILLed worker's part is retried from its checkpoint by another, losing and duplicating
nothing; a worker thought dead (stopped, not killed) is fenced off when it wakes; SIGTERM stops a
worker after its batch in flight and puts its part back in the queue; two enqueues racing start
one run; a paused distributed run commits nothing until resumed; a part that fails is recorded and
resumed by the next ``enqueue``, as is a run whose jobs were lost.

The workers are real ``backfill worker`` processes; where a test needs one at a given moment it
stops itself there (``BACKFILL_STOP_AT``), so nothing depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import TYPE_CHECKING, Any

from support.postgres import SERVER, execute, needs_server
from support.processes import Spawned

if TYPE_CHECKING:
    from support.backends import Backend
    from support.consistency import Reference
    from support.crash import Crash

pytestmark = needs_server

BATCH = 20
PARTS = 6
"""The small database's 300 tests cut into 6 parts of 50 rows: 3 batches each."""
LEDGER = "extractor, status, processed, total, inserted, updated, unchanged, record_errors, batch_errors"
ERRORS = "SELECT run_id, key, tier, kind, message FROM backfill_errors ORDER BY run_id, key"
QUICK = {"BACKFILL_STALE_AFTER": "2"}
"""A worker silent for 2 s counts as dead, and others retry its jobs (checked every second)."""


def _enqueue(crash: Crash, db: Backend, *extra: str) -> Any:
    args = ["enqueue", *crash.BOTH, "-d", db.url, "--batch-size", str(BATCH), "--parts", str(PARTS)]
    return crash.run_cli([*args, *extra])


def _worker(crash: Crash, db: Backend, env: dict[str, str] | None = None) -> Spawned:
    proc = crash.spawn(["worker", "-d", db.url], env=env)
    _serving(crash, proc)
    return proc


def _serving(crash: Crash, proc: Spawned) -> None:
    assert crash.wait_for(lambda: "serving" in proc.err_path.read_text(), proc), proc.wait().stderr


def _parts(crash: Crash, db: Backend, run_id: int = 1) -> list[dict[str, Any]]:
    columns = "part, status, attempts, pid, message"
    rows = crash.query(db, f"SELECT {columns} FROM backfill_parts WHERE run_id = {run_id} ORDER BY part")
    return [dict(zip(("part", "status", "attempts", "pid", "message"), r, strict=True)) for r in rows]


def _validated(crash: Crash, db: Backend) -> bool:
    rows = crash.query(db, "SELECT status, message FROM backfill_runs ORDER BY id")
    return (
        len(rows) == 2 and all(s == "succeeded" for s, _ in rows) and (rows[1][1] or "").startswith("valid")
    )


def _wait_validated(crash: Crash, db: Backend, worker: Spawned) -> None:
    assert crash.wait_for(lambda: _validated(crash, db), worker, timeout=300), worker.wait().stderr


def _stop(*workers: Spawned) -> list[str]:
    """SIGTERM each worker; each exits 0 once its batches in flight are done. Their stderr."""
    for w in workers:
        w.signal(signal.SIGTERM)
    said = []
    for w in workers:
        done = w.wait()
        assert done.returncode == 0, done.stderr
        assert "stopped" in done.stderr.splitlines()[-1], done.stderr
        said.append(done.stderr)
    return said


_RUN = ["run", "test_features", "bug_attribution", "-q", "--batch-size", str(BATCH)]


def _matches_reference(crash: Crash, db: Backend, ref: Reference, *, parts: bool = True) -> None:
    """The tables, the ledger's totals and the errors of one uninterrupted ``backfill run``."""
    crash.check_equal_to_reference(db, ref, "after the distributed run")
    query = f"SELECT {LEDGER} FROM backfill_runs ORDER BY id"
    assert crash.query(db, query) == crash.query(ref.path, query)
    assert crash.query(db, ERRORS) == crash.query(ref.path, ERRORS)
    assert crash.query(db, "SELECT COUNT(*) FROM backfill_ranges") == [(0,)], (
        crash.query(db, "SELECT * FROM backfill_ranges"),
        crash.query(db, "SELECT id, last_key FROM backfill_runs"),
        crash.query(db, "SELECT * FROM backfill_parts ORDER BY run_id, part"),
    )
    for run_id in (1, 2) if parts else ():
        assert {p["status"] for p in _parts(crash, db, run_id)} == {"done"}


def test_two_workers_leave_what_one_process_leaves(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    # Worker a stops after the first batch of its first part: b must process every other part.
    a = _worker(crash, db, {"BACKFILL_STOP_AT": "test_features:committed:1"})
    b = _worker(crash, db)
    queued = _enqueue(crash, db)
    assert queued.returncode == 0, queued.stderr
    applied = [w for w in (a, b) if "applied procrastinate's schema" in w.err_path.read_text()]
    assert applied == [a], "the first worker to start applies the queue's schema, and only it"
    assert f"queued run 1 of test_features: {PARTS} parts, 300 rows" in queued.stdout
    a.wait_stopped()
    assert crash.wait_for(lambda: sum(p["status"] == "done" for p in _parts(crash, db)) == PARTS - 1, b), (
        b.wait().stderr
    )
    status = crash.run_cli(["status", "-d", db.url])
    assert f"run 1: parts 1 running, {PARTS - 1} done" in status.stdout, status.stdout
    a.resume()
    _wait_validated(crash, db, b)
    _matches_reference(crash, db, small_reference)
    assert {p["pid"] for p in _parts(crash, db)} == {a.pid, b.pid}
    status = crash.run_cli(["status", "-d", db.url])
    assert f"run 1: parts {PARTS} done" in status.stdout, status.stdout
    assert "run 2: validation passed: coverage.tests_with_features" in status.stdout, status.stdout
    _stop(a, b)
    again = _enqueue(crash, db)  # as `backfill run` again: a new run over the same rows
    assert again.returncode == 0, again.stderr
    assert f"queued run 3 of test_features: {PARTS} parts, 300 rows" in again.stdout
    assert "applied procrastinate's schema" not in again.stderr


def test_workers_started_at_once_on_a_new_database_all_serve(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    workers = [crash.spawn(["worker", "-d", db.url, "--concurrency", "2"]) for _ in range(3)]
    for w in workers:  # each created the ledger and the queue's schema, or found them
        _serving(crash, w)
    applied = [w for w in workers if "applied procrastinate's schema" in w.err_path.read_text()]
    assert len(applied) == 1
    assert _enqueue(crash, db).returncode == 0
    _wait_validated(crash, db, workers[0])
    _matches_reference(crash, db, small_reference)
    _stop(*workers)


def test_a_killed_worker_s_part_is_carried_on_from_its_checkpoint(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    a = _worker(crash, db, {**QUICK, "BACKFILL_STOP_AT": "test_features:committed:2"})
    assert _enqueue(crash, db).returncode == 0
    a.wait_stopped()
    (held,) = [p for p in _parts(crash, db) if p["status"] == "running"]
    ((processed,),) = crash.query(db, "SELECT processed FROM backfill_runs WHERE id = 1")
    assert processed == 2 * BATCH  # its two batches, and nothing else yet
    a.signal(signal.SIGKILL)
    assert a.wait().returncode == -signal.SIGKILL
    b = _worker(crash, db, QUICK)
    _wait_validated(crash, db, b)
    _matches_reference(crash, db, small_reference)  # processed counts each row once
    (again,) = [p for p in _parts(crash, db) if p["part"] == held["part"]]
    assert (again["attempts"], again["pid"]) == (2, b.pid), again
    (said,) = _stop(b)
    assert "its worker sent no heartbeat for 2s; retrying it" in said


def test_a_worker_thought_dead_is_fenced_off_when_it_wakes(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    a = _worker(crash, db, {**QUICK, "BACKFILL_STOP_AT": "test_features:committed:1"})
    assert _enqueue(crash, db).returncode == 0
    a.wait_stopped()  # silent: b takes its part up again, from its checkpoint
    (held,) = [p for p in _parts(crash, db) if p["status"] == "running"]
    b = _worker(crash, db, QUICK)
    _wait_validated(crash, db, b)
    a.resume()  # it carries on with the part it had: its next batch must not commit
    assert crash.wait_for(lambda: "taken up again by another worker" in a.err_path.read_text(), a)
    _matches_reference(crash, db, small_reference)
    (again,) = [p for p in _parts(crash, db) if p["part"] == held["part"]]
    assert (again["status"], again["attempts"], again["pid"]) == ("done", 2, b.pid), again
    _stop(a, b)


def test_sigterm_stops_a_worker_after_its_batch_and_its_part_goes_back_in_the_queue(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    a = _worker(crash, db, {"BACKFILL_STOP_AT": "test_features:written:2"})
    assert _enqueue(crash, db).returncode == 0
    a.wait_stopped()  # its second batch written, not committed
    (held,) = [p for p in _parts(crash, db) if p["status"] == "running"]
    a.signal(signal.SIGTERM)
    a.resume()
    stopped = a.wait()  # not _stop: a second SIGTERM would get the default action
    assert stopped.returncode == 0, stopped.stderr
    said = stopped.stderr
    ((processed,),) = crash.query(db, "SELECT processed FROM backfill_runs WHERE id = 1")
    assert processed >= 2 * BATCH, "the batch in flight was not committed"
    (back,) = [p for p in _parts(crash, db) if p["part"] == held["part"]]
    assert back["status"] == "queued", (back, said)
    jobs = crash.query(db, "SELECT status FROM procrastinate_jobs WHERE task_name = 'backfill.part'")
    assert sorted(s for (s,) in jobs) == ["todo"] * PARTS
    b = _worker(crash, db)
    _wait_validated(crash, db, b)
    _matches_reference(crash, db, small_reference)
    _stop(b)


def test_two_enqueues_racing_start_one_run_and_a_local_run_waits_for_it(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    args = ["enqueue", *crash.BOTH, "-d", db.url, "--batch-size", str(BATCH), "--parts", str(PARTS)]
    racing = [crash.spawn(args) for _ in range(2)]
    done = sorted((p.wait() for p in racing), key=lambda d: d.returncode)
    assert [d.returncode for d in done] == [0, 3], [d.stderr for d in done]
    assert "run 1 of test_features is" in done[1].stderr, done[1].stderr
    assert crash.query(db, "SELECT id, extractor, status FROM backfill_runs") == [
        (1, "test_features", "running")
    ]
    assert crash.query(db, "SELECT COUNT(*) FROM procrastinate_jobs") == [(PARTS,)]
    for cmd in (["run", *crash.BOTH], ["run", "test_features", "--restart"], ["enqueue", "test_features"]):
        refused = crash.run_cli([*cmd, "-d", db.url])
        assert refused.returncode == 3, (cmd, refused.stderr)
        assert f"run 1 of test_features is distributed: its {PARTS} parts are queued" in refused.stderr
    w = _worker(crash, db)
    _wait_validated(crash, db, w)
    _matches_reference(crash, db, small_reference)
    _stop(w)


def test_a_paused_distributed_run_commits_nothing_until_resumed(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    assert _enqueue(crash, db).returncode == 0
    paused = crash.run_cli(["pause", "1", "-d", db.url])
    assert paused.returncode == 0, paused.stderr
    assert "paused run 1 of test_features (running, distributed in 6 parts)" in paused.stdout
    w = _worker(crash, db)

    def message() -> str:
        ((text,),) = crash.query(db, "SELECT message FROM backfill_runs WHERE id = 1")
        return text or ""

    assert crash.wait_for(lambda: message().startswith("paused"), w)
    status = crash.run_cli(["status", "-d", db.url])
    assert "paused" in status.stdout.splitlines()[1], status.stdout
    time.sleep(1)  # a paused job holds; were it not paused it would have committed by now
    assert crash.query(db, "SELECT processed FROM backfill_runs WHERE id = 1") == [(0,)]
    assert crash.run_cli(["resume", "1", "-d", db.url]).returncode == 0
    _wait_validated(crash, db, w)
    _matches_reference(crash, db, small_reference)
    _stop(w)


def test_parts_a_worker_cannot_process_fail_the_run_and_enqueue_resumes_it(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    assert _enqueue(crash, db).returncode == 0
    lacking = _worker(crash, db, {"BACKFILL_DISABLE_PLUGINS": "testmanagement"})
    assert crash.wait_for(
        lambda: crash.query(db, "SELECT status FROM backfill_runs WHERE id = 1") == [("failed",)], lacking
    ), lacking.wait().stderr
    ((message,),) = crash.query(db, "SELECT message FROM backfill_runs WHERE id = 1")
    assert message.startswith(f"{PARTS} of its {PARTS} parts failed, the first (part 0) with: the worker on ")
    assert "cannot process it" in message and "test_features" in message
    assert "run the same `backfill enqueue` command" in message
    _stop(lacking)
    again = _enqueue(crash, db)
    assert again.returncode == 0, again.stderr
    assert "resuming run 1 of test_features from the start" in again.stderr
    w = _worker(crash, db)
    _wait_validated(crash, db, w)
    _matches_reference(crash, db, small_reference)
    _stop(w)


def test_a_failed_distributed_run_is_resumed_by_backfill_run_on_one_machine(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    a = _worker(crash, db, {"BACKFILL_STOP_AT": "test_features:committed:1"})
    queued = crash.run_cli(
        ["enqueue", *crash.BOTH, "-d", db.url, "--batch-size", str(BATCH), "--parts", str(PARTS), "--json"]
    )
    assert queued.returncode == 0, queued.stderr
    got = json.loads(queued.stdout)
    assert {k: got[k] for k in ("run_id", "extractor", "parts", "rows", "following")} == {
        "run_id": 1,
        "extractor": "test_features",
        "parts": PARTS,
        "rows": 300,
        "following": ["bug_attribution"],
    }
    a.wait_stopped()
    a.signal(signal.SIGKILL)
    a.wait()
    # A worker without the built-in plugin retries a's job and fails every part: the run fails.
    lacking = _worker(crash, db, {**QUICK, "BACKFILL_DISABLE_PLUGINS": "testmanagement"})
    assert crash.wait_for(
        lambda: crash.query(db, "SELECT status FROM backfill_runs WHERE id = 1") == [("failed",)], lacking
    ), lacking.wait().stderr
    _stop(lacking)
    local = crash.run_cli([*_RUN, "-d", db.url, "--workers", "2"])
    assert local.returncode == 0, local.stderr
    assert "resuming run 1 of test_features from key 20" in local.stderr
    _matches_reference(crash, db, small_reference, parts=False)


def test_enqueue_goes_on_with_a_command_whose_next_extractor_never_started(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    queued = crash.run_cli(
        ["enqueue", "test_features", "-d", db.url, "--batch-size", str(BATCH), "--parts", str(PARTS)]
    )
    assert queued.returncode == 0, queued.stderr
    w = _worker(crash, db)
    assert crash.wait_for(
        lambda: crash.query(db, "SELECT status FROM backfill_runs") == [("succeeded",)], w
    ), w.wait().stderr
    # As a worker killed between ending test_features' run and queuing bug_attribution leaves it:
    crash.query(db, "UPDATE backfill_runs SET plan = 'test_features,bug_attribution' RETURNING id")
    again = _enqueue(crash, db)
    assert again.returncode == 0, again.stderr
    assert "test_features: already completed in run 1 of this command" in again.stderr
    assert f"queued run 2 of bug_attribution: {PARTS} parts" in again.stdout
    _wait_validated(crash, db, w)
    _matches_reference(crash, db, small_reference)
    _stop(w)


def test_a_run_whose_jobs_were_lost_is_resumed_by_the_next_enqueue(
    crash: Crash, small_template: Any, small_reference: Reference
) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    a = _worker(crash, db, {"BACKFILL_STOP_AT": "test_features:committed:1"})
    assert _enqueue(crash, db).returncode == 0
    a.wait_stopped()
    a.signal(signal.SIGKILL)
    a.wait()
    crash.query(db, "DELETE FROM procrastinate_jobs RETURNING id")  # an operator cleared the queue
    refused_before = crash.run_cli(["run", *crash.BOTH, "-d", db.url, "-q"])
    assert refused_before.returncode == 3  # still 'running': only enqueue looks at the queue
    again = _enqueue(crash, db)
    assert again.returncode == 0, again.stderr
    assert "run 1 of test_features: none of its unfinished parts had a job left in the queue" in again.stderr
    assert "resuming run 1 of test_features from key" in again.stderr
    w = _worker(crash, db)
    _wait_validated(crash, db, w)
    _matches_reference(crash, db, small_reference)
    _stop(w)


def test_a_worker_that_loses_the_database_stops_with_exit_3(crash: Crash, small_template: Any) -> None:
    db = crash.database("postgresql", small_template, "distributed.db")
    w = _worker(crash, db, QUICK)
    name = db.url.rsplit("/", 1)[1]
    # A dropped connection is replaced (the worker goes on); a database that refuses new ones is lost.
    asyncio.run(execute(SERVER or "", f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
    asyncio.run(
        execute(
            SERVER or "",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )
    )
    try:
        done = w.wait(timeout=120)
    finally:
        asyncio.run(execute(SERVER or "", f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
    assert done.returncode == 3, done.stderr
    assert "stopped without being asked: it lost its connection to" in done.stderr
    assert "start it again once the database answers" in done.stderr
