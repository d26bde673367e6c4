"""A dry run's memory of what it would have written, kept on disk so that memory stays flat.

Later batches and dependent extractors read it as if the writes had happened: a dry run of
``test_features bug_attribution`` on an empty table sees the features the first extractor
would insert. Rows live in a temporary SQLite file, removed when the run ends.
"""

from __future__ import annotations

import pickle
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from backfill_core.planner import Target

_CHUNK = 900  # below SQLite's smallest default limit of bound parameters


class Overlay:
    """Would-be rows by target and key; created on first use, deleted by :meth:`close`."""

    def __init__(self) -> None:
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self._dir = tempfile.TemporaryDirectory(prefix="backfill-dry-run-")
            self._db = sqlite3.connect(Path(self._dir.name) / "overlay.db", isolation_level=None)
            self._db.execute("PRAGMA journal_mode = OFF")
            self._db.execute("PRAGMA synchronous = OFF")
            self._db.execute("CREATE TABLE rows (target TEXT, key BLOB, row BLOB, PRIMARY KEY (target, key))")
        return self._db

    def apply(self, merged: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]]) -> None:
        """Remember the rows a batch would leave (a Plan's ``merged``)."""
        rows = [
            (_target(t), _pack(key), _pack(dict(row)))
            for t, by_key in merged.items()
            for key, row in by_key.items()
        ]
        if rows:
            db = self._open()
            with db:  # one transaction, not one per row
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?, ?)", rows)

    def rows(self, target: Target, keys: Iterable[tuple[Any, ...]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The remembered rows of ``target`` among ``keys``."""
        if self._db is None:
            return {}
        found: dict[tuple[Any, ...], dict[str, Any]] = {}
        packed = [_pack(k) for k in keys]
        for i in range(0, len(packed), _CHUNK):
            chunk = packed[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, row in self._db.execute(
                f"SELECT key, row FROM rows WHERE target = ? AND key IN ({marks})", (_target(target), *chunk)
            ):
                found[pickle.loads(key)] = pickle.loads(row)
        return found

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def _target(target: Target) -> str:
    table, cols = target
    return f"{table}:{','.join(cols)}"


def _pack(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
