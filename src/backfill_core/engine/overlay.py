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

from backfill_core.engine.planner import Target

_CHUNK = 900  # below SQLite's smallest default limit of bound parameters


class Overlay:
    """Would-be rows by target and key; created on first use, deleted by :meth:`close`.

    Each target has a table of its own keyed by its key columns, so lookups are plain index
    probes; the rows themselves are pickled, and a deleted row is remembered as None.
    """

    def __init__(self) -> None:
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._db: sqlite3.Connection | None = None
        self._tables: dict[Target, str] = {}
        self._spans: dict[Target, tuple[tuple[Any, ...], tuple[Any, ...]] | None] = {}
        """The lowest and highest key remembered per target (None: keys that do not compare)."""
        self._indexed: set[tuple[Target, tuple[str, ...]]] = set()

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self._dir = tempfile.TemporaryDirectory(prefix="backfill-dry-run-")
            self._db = sqlite3.connect(Path(self._dir.name) / "overlay.db", isolation_level=None)
            self._db.execute("PRAGMA journal_mode = OFF")
            self._db.execute("PRAGMA synchronous = OFF")
        return self._db

    def _table(self, target: Target) -> str:
        name = self._tables.get(target)
        if name is None:
            name = self._tables[target] = f"t{len(self._tables)}"
            keys = ", ".join(f"k{i}" for i in range(len(target[1])))
            self._open().execute(f"CREATE TABLE {name} ({keys}, row BLOB, PRIMARY KEY ({keys}))")
        return name

    def apply(self, merged: Mapping[Target, Mapping[tuple[Any, ...], dict[str, Any] | None]]) -> None:
        """Remember the rows a batch would leave (a Plan's ``merged``; None for a deleted row)."""
        writes = [(t, by_key) for t, by_key in merged.items() if by_key]
        if not writes:
            return
        db = self._open()
        with db:  # one transaction, not one per row
            db.execute("BEGIN")
            for target, by_key in writes:
                self._extend_span(target, by_key)
                marks = ", ".join("?" * (len(target[1]) + 1))
                db.executemany(
                    f"INSERT OR REPLACE INTO {self._table(target)} VALUES ({marks})",
                    [(*key, None if row is None else _pack(row)) for key, row in by_key.items()],
                )

    def _extend_span(self, target: Target, by_key: Mapping[tuple[Any, ...], Any]) -> None:
        """Extend the span of keys remembered for ``target`` (lookups outside it skip the file)."""
        if target in self._spans and self._spans[target] is None:
            return
        try:
            lo, hi = min(by_key), max(by_key)
            span = self._spans.get(target)
            self._spans[target] = (lo, hi) if span is None else (min(span[0], lo), max(span[1], hi))
        except TypeError:  # keys of mixed types: look every key up
            self._spans[target] = None

    def rows(
        self, target: Target, keys: Iterable[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], dict[str, Any] | None]:
        """The remembered rows of ``target`` among ``keys`` (None: deleted)."""
        name = self._tables.get(target)
        if name is None or self._db is None:
            return {}
        width = len(target[1])
        found: dict[tuple[Any, ...], dict[str, Any] | None] = {}
        span = self._spans.get(target)
        try:
            # A batch in key order usually asks for keys past all that earlier batches wrote.
            wanted = list(keys) if span is None else [k for k in keys if span[0] <= k <= span[1]]
        except TypeError:
            wanted = list(keys)
        step = _CHUNK // width
        cols = ", ".join(f"k{i}" for i in range(width))
        for i in range(0, len(wanted), step):
            chunk = wanted[i : i + step]
            if width == 1:
                where = f"k0 IN ({','.join('?' * len(chunk))})"
            else:
                where = f"({cols}) IN (VALUES {','.join(['(' + ','.join('?' * width) + ')'] * len(chunk))})"
            params = [v for key in chunk for v in key]
            for *key, row in self._db.execute(f"SELECT {cols}, row FROM {name} WHERE {where}", params):
                found[tuple(key)] = None if row is None else pickle.loads(row)
        return found

    def under(
        self, target: Target, parent_cols: tuple[str, ...], parents: Iterable[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], dict[tuple[Any, ...], bool]]:
        """For each of ``parents`` (values of ``parent_cols``), the keys of the rows remembered
        under it, each with whether it is deleted."""
        name = self._tables.get(target)
        if name is None or self._db is None:
            return {}
        at = [target[1].index(c) for c in parent_cols]
        if (target, parent_cols) not in self._indexed:
            self._indexed.add((target, parent_cols))
            cols = ", ".join(f"k{i}" for i in at)
            self._db.execute(f"CREATE INDEX {name}_{'_'.join(map(str, at))} ON {name} ({cols})")
        where = " AND ".join(f"k{i} = ?" for i in at)
        keys = ", ".join(f"k{i}" for i in range(len(target[1])))
        found: dict[tuple[Any, ...], dict[tuple[Any, ...], bool]] = {}
        for parent in parents:
            for *key, row in self._db.execute(f"SELECT {keys}, row FROM {name} WHERE {where}", parent):
                found.setdefault(parent, {})[tuple(key)] = row is None
        return found

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        self._tables.clear()
        self._spans.clear()
        self._indexed.clear()


def _pack(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
