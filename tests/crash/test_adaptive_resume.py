"""A run whose batch size adapts (``--target-batch-seconds``), killed at a stop point and resumed
with other sizes, ends with the tables and errors of one uninterrupted run, on SQLite and
PostgreSQL; the ledger keeps counting its batches across the two processes.

The first process's target is far above any batch's time (every batch grows by the most a step
allows), the second's far below (every batch halves down to its minimum): the sizes do not depend
on the machine's speed."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING, Any

import pytest

from support.backends import Backend

if TYPE_CHECKING:
    from support.consistency import Reference
    from support.crash import Crash

GROWING = ["--batch-size", "10", "--target-batch-seconds", "3600", "--max-batch-size", "40"]
SHRINKING = ["--batch-size", "8", "--target-batch-seconds", "0.000000001", "--min-batch-size", "3"]
KILLED_IN = 8
"""Late enough that pages read after the first batches (pages are read ahead) have grown."""


def batch_sizes(crash: Crash, database: str) -> dict[str, Any]:
    status = crash.run_cli(["status", "-d", database, "--json"])
    assert status.returncode == 0, status.stderr
    (run,) = json.loads(status.stdout)
    sizes: dict[str, Any] = run["batch_sizes"]
    return sizes


@pytest.mark.parametrize("point", ["written", "committed"])
def test_a_killed_adaptive_run_resumed_with_other_sizes_ends_as_an_uninterrupted_run(
    point: str, small: Backend, crash: Crash, small_reference: Reference
) -> None:
    cmd = ["run", "test_features", "-d", small.url, "-q", "--json", "--no-validate", "--max-error-rate", "1"]
    first = crash.spawn([*cmd, *GROWING], env={"BACKFILL_STOP_AT": f"test_features:{point}:{KILLED_IN}"})
    first.wait_stopped()
    before = batch_sizes(crash, small.url)
    assert 1 <= before["batches"] <= KILLED_IN, before
    assert before["min"] == 10 and before["max"] > 10, before  # it had begun to grow
    first.signal(signal.SIGKILL)
    assert first.wait().returncode == -signal.SIGKILL

    again = crash.run_cli([*cmd, *SHRINKING])
    assert again.returncode == 0, again.stderr
    assert "taking over run 1 of test_features" in again.stderr, again.stderr
    (stats,) = json.loads(again.stdout)["extractors"]

    features = "SELECT id, test_id FROM test_features ORDER BY id"
    assert crash.query(crash.readable(small), features) == [(r[0], r[2]) for r in small_reference.features]
    errors = (
        "SELECT e.key, e.kind FROM backfill_errors e JOIN backfill_runs r ON r.id = e.run_id "
        "WHERE r.extractor = 'test_features'"
    )
    assert sorted(crash.query(crash.readable(small), errors)) == sorted(
        crash.query(small_reference.path, errors)
    )
    after = batch_sizes(crash, small.url)
    assert after["batches"] == before["batches"] + stats["batch_sizes"]["batches"], (before, stats)
    assert (after["min"], after["max"]) == (3, before["max"]), after
    assert after["slowest_write_seconds"] >= before["slowest_write_seconds"]
