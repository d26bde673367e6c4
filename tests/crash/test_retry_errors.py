"""--retry-errors reprocesses only the keys recorded as failed, as a new run, and keeps the error
records truthful: fixed keys leave the ledger, keys that still fail stay recorded somewhere. On a
SQLite file and on a scratch PostgreSQL database."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from support.backends import Backend
from support.db import execute, execute_many

if TYPE_CHECKING:
    from support.consistency import Reference
    from support.crash import Crash


def _fixed_data(key: int, feature_id: int, product_feature: int) -> str:
    """Valid test JSON with one feature, whose id is ``feature_id``, of ``product_feature``."""
    feature = {"id": feature_id, "feature_id": product_feature, "title": f"fixed {key}"}
    return json.dumps({"id": key, "features": [feature]})


def _errors_json(crash: Crash, path: Backend, run_id: int) -> list[dict[str, Any]]:
    proc = crash.run_cli(["errors", str(run_id), "-d", path.url, "--json"])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _status(crash: Crash, path: Backend) -> dict[int, dict[str, Any]]:
    proc = crash.run_cli(["status", "-d", path.url, "--json", "--limit", "50"])
    assert proc.returncode == 0, proc.stderr
    return {r["id"]: r for r in json.loads(proc.stdout)}


def test_retry_errors_after_fixing_bad_rows(kind: str, crash: Crash, small_template: Path) -> None:
    path = crash.database(kind, small_template, "cache.db")
    first = crash.run_cli(["run", *crash.BOTH, "-d", path.url, "-q"])
    assert first.returncode == 0, first.stderr
    old = next(r for r in _status(crash, path).values() if r["extractor"] == "test_features")
    failed = _errors_json(crash, path, old["id"])
    keys = [e["key"] for e in failed]
    assert len(keys) >= 2 and len(set(keys)) == len(keys), failed

    still_bad, fixed = keys[-1], keys[:-1]
    first_id = crash.scalar(path, "SELECT MAX(id) FROM test_features") + 1000
    new_ids = {key: first_id + i for i, key in enumerate(fixed)}
    known = crash.scalar(path, "SELECT MIN(id) FROM features")
    execute_many(
        path,
        "UPDATE tests SET data = ? WHERE id = ?",
        [(_fixed_data(key, fid, known), key) for key, fid in new_ids.items()],
    )
    features_before = crash.scalar(path, "SELECT COUNT(*) FROM test_features")
    # A test refused one unknown feature (integrity) still has its other features written.
    rows_of = "SELECT id, test_id, title FROM test_features WHERE test_id = ? ORDER BY id"
    written_before = {key: crash.query(path, rows_of, (key,)) for key in keys}

    retry = crash.run_cli(["run", "test_features", "--retry-errors", "-d", path.url, "-q"])
    assert retry.returncode == 0, retry.stderr
    runs = _status(crash, path)
    new = max(runs.values(), key=lambda r: r["id"])
    assert new["id"] != old["id"] and new["extractor"] == "test_features", new
    assert new["retry_of"] == old["id"], new
    assert new["status"] == "succeeded", new
    announced = f"retrying {len(keys)} failed keys of run {old['id']} as run {new['id']}"
    assert announced in retry.stderr, retry.stderr
    assert new["processed"] == len(keys), new
    assert new["inserted"] == len(fixed), new
    assert new["errors"] == new["record_errors"] == 1, new

    for key, fid in new_ids.items():
        rows = crash.query(path, rows_of, (key,))
        assert rows == [*written_before[key], (fid, key, f"fixed {key}")], (key, rows)
    assert crash.query(path, rows_of, (still_bad,)) == written_before[still_bad]
    assert crash.scalar(path, "SELECT COUNT(*) FROM test_features") == features_before + len(fixed)

    old_listed = {e["key"] for e in _errors_json(crash, path, old["id"])}
    assert not old_listed & set(fixed), f"run {old['id']} still lists fixed keys {old_listed & set(fixed)}"
    new_listed = _errors_json(crash, path, new["id"])
    assert [e["key"] for e in new_listed] == [still_bad], new_listed
    was = next(e for e in failed if e["key"] == still_bad)
    assert (new_listed[0]["tier"], new_listed[0]["kind"]) == (was["tier"], was["kind"]), (new_listed, was)

    assert runs[old["id"]]["status"] == "succeeded"


def _all_broken(crash: Crash, kind: str, template: Path) -> tuple[Backend, list[tuple[int, str]], int]:
    """A copy in which every test's JSON is broken, after a run that recorded every test as failed."""
    path = crash.database(kind, template, "cache.db")
    original = crash.query(path, "SELECT id, data FROM tests ORDER BY id")
    execute(path, "UPDATE tests SET data = 'x' || data")
    proc = crash.run_cli(
        ["run", "test_features", "-d", path.url, "-q", "--max-error-rate", "1", "--no-validate"]
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = crash.runs(path)
    assert run["record_errors"] == len(original), run
    return path, original, run["id"]


def _failing_keys(crash: Crash, path: Backend | Path) -> set[Any]:
    """Every key some test_features run still records as failed."""
    return {
        json.loads(k)
        for (k,) in crash.query(
            path,
            "SELECT e.key FROM backfill_errors e JOIN backfill_runs r ON r.id = e.run_id "
            "WHERE r.extractor = 'test_features'",
        )
    }


def test_interrupted_retry_resumes_with_the_same_command(
    kind: str, crash: Crash, small_template: Path, small_reference: Reference
) -> None:
    """SIGINT stops a --retry-errors run and says "run the same command again to resume"; doing
    so must still reprocess every key the original run recorded as failed."""
    path, original, first = _all_broken(crash, kind, small_template)
    execute_many(path, "UPDATE tests SET data = ? WHERE id = ?", [(d, i) for i, d in original])

    cmd = ["run", "test_features", "--retry-errors", "-d", path.url, "-q", "--batch-size", "1"]
    cmd += ["--max-error-rate", "1", "--no-validate"]
    _seed, rng = crash.seeded()
    # Held still at a seeded batch of the retry (one key each), then signalled: mid-way on any
    # machine (a retry has no worker to hold instead).
    stop_at = f"test_features:{rng.choice(['written', 'committed'])}:{rng.randint(5, len(original) - 11)}"
    proc = crash.spawn(cmd, env={"BACKFILL_STOP_AT": stop_at})
    proc.wait_stopped()
    try:
        done = crash.scalar(path, "SELECT processed FROM backfill_runs WHERE retry_of = ?", (first,))
        assert done < len(original) - 10, f"the retry was all but over before it was stopped: {done}"
        proc.signal(signal.SIGINT)
    finally:
        proc.resume()
    stopped = proc.wait()
    assert stopped.returncode == 130, stopped.stderr
    assert "run the same command again to resume" in stopped.stderr.lower(), stopped.stderr
    retry = crash.runs(path)[-1]
    assert retry["retry_of"] == first and retry["status"] == "interrupted", retry
    assert retry["processed"] < len(original), retry

    again = crash.run_cli(cmd)
    assert again.returncode == 0, again.stderr
    have = crash.scalar(path, "SELECT COUNT(DISTINCT test_id) FROM test_features")
    want = len({r[2] for r in small_reference.features})
    assert have == want, (
        f"after an interrupted --retry-errors and the same command again, {have} tests have features; "
        f"an uninterrupted retry gives {want}. stderr of the second retry:\n{again.stderr}"
    )
    assert crash.features(path) == small_reference.features
    assert _failing_keys(crash, path) == _failing_keys(crash, small_reference.path), (
        "the keys recorded as failing differ from those of one uninterrupted run"
    )


def test_retry_of_keys_that_still_fail_re_records_them_under_the_new_run(
    kind: str, crash: Crash, small_template: Path
) -> None:
    """Nothing fixed: every retried key fails again, and is recorded once, under the new run."""
    path, original, first = _all_broken(crash, kind, small_template)  # and left broken
    every_key = {i for i, _ in original}

    proc = crash.run_cli(
        [
            *("run", "test_features", "--retry-errors", "-d", path.url, "-q", "--batch-size", "7"),
            *("--max-error-rate", "1", "--no-validate"),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    retry = crash.runs(path)[-1]
    assert retry["retry_of"] == first and retry["status"] == "succeeded", retry
    assert retry["processed"] == retry["record_errors"] == len(every_key), retry
    recorded = [json.loads(e["key"]) for e in crash.errors_of(path, retry["id"])]
    assert len(recorded) == len(set(recorded)) == len(every_key)
    assert set(recorded) == every_key
    assert _failing_keys(crash, path) == every_key
    assert crash.scalar(path, "SELECT COUNT(*) FROM test_features") == 0
