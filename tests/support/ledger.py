"""The run ledger (``backfill_runs``, ``backfill_errors``) of a SQLite file or a ``Backend`` of
either kind, read as the tests check it and written by hand for the stale-run tests."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from support.db import Where, execute, records, scalar, sqlite_path, table_names


def runs(path: Where) -> list[dict[str, Any]]:
    """Every ledger row, by id; [] when the ledger does not exist (yet)."""
    if "backfill_runs" not in table_names(path):
        return []
    return records(path, "SELECT * FROM backfill_runs ORDER BY id")


def errors_of(path: Where, run_id: int) -> list[dict[str, Any]]:
    """The recorded errors of run ``run_id``, by id."""
    return records(path, "SELECT * FROM backfill_errors WHERE run_id = ? ORDER BY id", (run_id,))


def decode_key(text: str | None) -> Any:
    """A key as the ledger stores it (JSON text), decoded."""
    return None if text is None else json.loads(text)


def ledger_time(moment: datetime) -> str:
    """A naive UTC timestamp as SQLAlchemy's SQLite DateTime stores it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _stored_time(path: Where, moment: datetime) -> str | datetime:
    """A naive UTC timestamp as the ledger's DateTime column takes it on ``path``'s database."""
    return ledger_time(moment) if sqlite_path(path) is not None else moment


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def insert_fake_run(
    path: Where,
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
    execute(
        path,
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
            _stored_time(path, beat - timedelta(seconds=5)),
            _stored_time(path, beat),
            host,
            pid,
        ),
    )
    return int(scalar(path, "SELECT MAX(id) FROM backfill_runs"))
