"""The run ledger of a SQLite file (``backfill_runs``, ``backfill_errors``), read as the tests
check it and written by hand for the stale-run tests."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from support.sqlite import records, table_names


def runs(path: Path) -> list[dict[str, Any]]:
    """Every ledger row, by id; [] when the ledger does not exist (yet)."""
    if "backfill_runs" not in table_names(path):
        return []
    return records(path, "SELECT * FROM backfill_runs ORDER BY id")


def errors_of(path: Path, run_id: int) -> list[dict[str, Any]]:
    """The recorded errors of run ``run_id``, by id."""
    return records(path, "SELECT * FROM backfill_errors WHERE run_id = ? ORDER BY id", (run_id,))


def decode_key(text: str | None) -> Any:
    """A key as the ledger stores it (JSON text), decoded."""
    return None if text is None else json.loads(text)


def ledger_time(moment: datetime) -> str:
    """A naive UTC timestamp as SQLAlchemy's SQLite DateTime stores it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def insert_fake_run(
    path: Path,
    *,
    extractor: str,
    host: str,
    pid: int,
    heartbeat_age: float,
    plan: str,
    last_key: Any = None,
    processed: int = 0,
    total: int | None = None,
) -> int:
    """Add a ``running`` row owned by ``host``/``pid`` whose heartbeat is ``heartbeat_age`` s old."""
    beat = utc_now() - timedelta(seconds=heartbeat_age)
    conn = sqlite3.connect(path)
    try:
        with conn:
            cur = conn.execute(
                "INSERT INTO backfill_runs (extractor, plugin, plugin_version, status, invocation, plan, "
                "retry_of, batch_size, options, last_key, total, processed, inserted, updated, unchanged, "
                "record_errors, batch_errors, started_at, finished_at, heartbeat_at, host, pid, message) "
                "VALUES (?, 'testmanagement', '0', 'running', ?, ?, NULL, 500, '{}', ?, ?, ?, 0, 0, 0, 0, 0, "
                "?, NULL, ?, ?, ?, NULL)",
                (
                    extractor,
                    os.urandom(16).hex(),
                    plan,
                    None if last_key is None else json.dumps(last_key),
                    total,
                    processed,
                    ledger_time(beat - timedelta(seconds=5)),
                    ledger_time(beat),
                    host,
                    pid,
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid
    finally:
        conn.close()
