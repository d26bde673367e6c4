"""A run whose batch size adapts (``--target-batch-seconds``), killed at a stop point and resumed
with other sizes, ends with the tables and errors of one uninterrupted run, on SQLite and
PostgreSQL; the ledger keeps counting its batches across the two processes.

The first process's target is far above any batch's time (every batch grows by the most a step
allows), the second's far below (every batch halves down to its minimum): the sizes do not depend
on the machine's speed."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support.postgres import fetch, needs_server, scratch_database

if TYPE_CHECKING:
    from support.consistency import Reference
    from support.crash import Crash

GROWING = ["--batch-size", "10", "--target-batch-seconds", "3600", "--max-batch-size", "40"]
SHRINKING = ["--batch-size", "8", "--target-batch-seconds", "0.000000001", "--min-batch-size", "3"]
KILLED_IN = 8
"""Late enough that pages read after the first batches (pages are read ahead) have grown."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_server)])
def database(request: pytest.FixtureRequest, crash: Crash, small_template: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(crash.copy(small_template, "adaptive.db"))
    else:
        with scratch_database(small_template) as url:
            yield url


def rows(crash: Crash, database: str, sql: str) -> list[tuple[Any, ...]]:
    if database.startswith("postgresql://"):
        return asyncio.run(fetch(database, sql))
    return crash.query(crash.readable(Path(database)), sql)


def batch_sizes(crash: Crash, database: str) -> dict[str, Any]:
    status = crash.run_cli(["status", "-d", database, "--json"])
    assert status.returncode == 0, status.stderr
    (run,) = json.loads(status.stdout)
    sizes: dict[str, Any] = run["batch_sizes"]
    return sizes


@pytest.mark.parametrize("point", ["written", "committed"])
def test_a_killed_adaptive_run_resumed_with_other_sizes_ends_as_an_uninterrupted_run(
    point: str, database: str, crash: Crash, small_reference: Reference
) -> None:
    cmd = ["run", "test_features", "-d", database, "-q", "--json", "--no-validate", "--max-error-rate", "1"]
    first = crash.spawn([*cmd, *GROWING], env={"BACKFILL_STOP_AT": f"test_features:{point}:{KILLED_IN}"})
    first.wait_stopped()
    before = batch_sizes(crash, database)
    assert 1 <= before["batches"] <= KILLED_IN, before
    assert before["min"] == 10 and before["max"] > 10, before  # it had begun to grow
    first.signal(signal.SIGKILL)
    assert first.wait().returncode == -signal.SIGKILL

    again = crash.run_cli([*cmd, *SHRINKING])
    assert again.returncode == 0, again.stderr
    assert "taking over run 1 of test_features" in again.stderr, again.stderr
    (stats,) = json.loads(again.stdout)["extractors"]

    features = "SELECT id, test_id FROM test_features ORDER BY id"
    assert rows(crash, database, features) == [(r[0], r[2]) for r in small_reference.features]
    errors = (
        "SELECT e.key, e.kind FROM backfill_errors e JOIN backfill_runs r ON r.id = e.run_id "
        "WHERE r.extractor = 'test_features'"
    )
    assert sorted(rows(crash, database, errors)) == sorted(crash.query(small_reference.path, errors))
    after = batch_sizes(crash, database)
    assert after["batches"] == before["batches"] + stats["batch_sizes"]["batches"], (before, stats)
    assert (after["min"], after["max"]) == (3, before["max"]), after
    assert after["slowest_write_seconds"] >= before["slowest_write_seconds"]
