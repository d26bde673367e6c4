"""Another process locking the SQLite file in the middle of a run: a clear error, nothing lost."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from backfill_core import DatabaseUnavailable, RunOptions, RunReport, make_registry, resolve_url, run_backfill
from backfill_core.engine.stats import ErrorLog
from backfill_plugins.testmanagement import plugin, synthetic


class LockAfterFirstBatch:
    """A progress bar that, when the first batch is done, takes ``lock`` with another connection."""

    def __init__(self, path: Path, lock: str) -> None:
        self.holder = sqlite3.connect(path, isolation_level=None)
        self.lock = lock
        self.batches = 0

    def __call__(self, _name: str, _total: int) -> LockAfterFirstBatch:
        return self

    def update(self, _n: int) -> None:
        self.batches += 1
        if self.batches == 1:
            self.holder.execute(f"BEGIN {self.lock}")

    def close(self) -> None:
        if self.holder.in_transaction:
            self.holder.execute("ROLLBACK")


@pytest.mark.parametrize("worker", [True, False], ids=["worker", "no-worker"])
@pytest.mark.parametrize("lock", ["EXCLUSIVE", "IMMEDIATE"])
def test_lock_taken_mid_run_ends_it_with_its_committed_batches_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock: str, worker: bool
) -> None:
    """EXCLUSIVE blocks the next page read, IMMEDIATE the next write transaction (with a worker,
    whichever of its reads and the engine's write comes first)."""
    path = tmp_path / "db.sqlite"
    synthetic.build(path, tests=40, seed=5)
    monkeypatch.setenv("BACKFILL_BUSY_TIMEOUT", "0.3")
    bar = LockAfterFirstBatch(path, lock)
    report = RunReport(database=str(path), errors=ErrorLog())
    options = RunOptions(batch_size=10, max_error_rate=1.0, worker=worker)
    with pytest.raises(DatabaseUnavailable, match=r"database is locked.*BACKFILL_BUSY_TIMEOUT"):
        asyncio.run(
            run_backfill(
                make_registry(plugin),
                ["test_features"],
                resolve_url(str(path)),
                options,
                report,
                progress=bar,
            )
        )
    bar.close()
    with sqlite3.connect(path) as conn:
        status, processed, last_key = conn.execute(
            "SELECT status, processed, last_key FROM backfill_runs"
        ).fetchone()
        owners = {r[0] for r in conn.execute("SELECT DISTINCT test_id FROM test_features")}
    assert (status, processed, last_key) == ("failed", 10, "10")
    assert owners <= set(range(1, 11)) and owners  # the first batch, and nothing after it
