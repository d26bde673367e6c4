"""Extracting a batch of source rows: the pure half of a batch, run in this process or a worker's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from backfill_core.changes import Fields, Skipped, checked, fields
from backfill_core.engine.planner import (
    Extracted,
    Op,
    Parents,
    Target,
    Targets,
    extracted,
    keys_needed,
    new_tuple,
    parents_needed,
    refs_needed,
)
from backfill_core.errors import EnvironmentProblem, RecordError
from backfill_core.extractor import Extractor
from backfill_core.store.encoding import Salvaged, Undecodable, first_undecodable
from backfill_core.store.records import ErrorRecord

TURN = 50
"""Rows extracted between two turns of the event loop (see :meth:`Converter.in_turns`)."""
INVALID_ENCODING = "invalid-encoding"
"""The kind of the record error of a source row holding text that is not UTF-8."""


class UndecodableKey(EnvironmentProblem):
    """A source row's key is text that cannot be decoded: the run cannot page past it."""


@dataclass(slots=True)
class Batch:
    """One batch of source rows, extracted: everything planning needs, in plain values."""

    keys: list[Any]
    """The key of every source row, in order."""
    items: list[Extracted] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)
    """Rows that failed to extract, in key order."""
    needed: dict[Target, set[tuple[Any, ...]]] = field(default_factory=dict)
    """The target rows whose current values planning needs."""
    refs: dict[Target, tuple[set[str], set[Any]]] = field(default_factory=dict)
    """The referenced tables and columns, with the columns to match and the values looked for."""
    parents: dict[Parents, set[tuple[Any, ...]]] = field(default_factory=dict)
    """The parents whose child rows Children changes own."""
    skips: list[tuple[Any, str]] = field(default_factory=list)
    """(key, kind) of each Skip the rows returned."""

    def __getstate__(self) -> tuple[Any, ...]:
        # The items as plain tuples: a NamedTuple pickles through a Python call per object.
        items = [(key, [tuple(o) for o in ops], checked) for key, ops, checked in self.items]
        return self.keys, items, self.errors, self.needed, self.refs, self.parents, self.skips

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.keys, items, self.errors, self.needed, self.refs, self.parents, self.skips = state
        self.items = [
            new_tuple(Extracted, (key, [new_tuple(Op, o) for o in ops], checked))
            for key, ops, checked in items
        ]

    def settle(self) -> None:
        """Put the errors back in the rows' order and gather what planning needs from the items
        (after items were taken out and their rows made errors)."""
        order = {k: i for i, k in enumerate(self.keys)}
        self.errors.sort(key=lambda e: order[e.key])
        self.needed = keys_needed(self.items)
        self.refs = refs_needed(self.items)
        self.parents = parents_needed(self.items)


class Extracts(NamedTuple):
    """What ``extract`` returned for a page of rows, before the changes are checked."""

    keys: list[Any]
    changes: list[tuple[Any, list[Fields]]]
    """(key, its changes as plain values) of each row that extracted."""
    errors: list[ErrorRecord]
    skips: list[tuple[Any, str]]


class Converter:
    """Runs an extractor over batches of rows (tuples of its read columns) and converts what it
    returns into a :class:`Batch`: :meth:`extract` then :meth:`convert`, which the extraction
    worker may leave to this process (see pool.py).

    A row whose ``extract`` raises, or returns a change the extractor may not make, becomes a
    record error naming the plugin; the batch goes on.
    """

    def __init__(self, extractor: Extractor, plugin: str = "") -> None:
        self.extractor = extractor
        self.name = extractor.name
        self.plugin = plugin
        self.cols = extractor.read_columns
        self.key_index = self.cols.index(extractor.key)
        self.written = extractor.written
        self.targets: Targets = {}
        self.stopped_at: Any = None
        """The key of the row whose ``extract`` raised what is not an Exception (SystemExit,
        KeyboardInterrupt): that ends the batch instead of becoming a record error."""

    def __call__(self, rows: Sequence[Sequence[Any]]) -> Batch:
        return self.convert(self.extract(rows))

    async def in_turns(self, rows: Sequence[Sequence[Any]]) -> Batch:
        """``self(rows)``, letting the event loop run every TURN rows: a write awaiting the
        database then sends its next statement, and the server works while rows are extracted."""
        if type(rows) is not list or len(rows) <= TURN:  # Salvaged rows are extracted at once
            return self(rows)
        out, failed = Batch([]), 0
        for start in range(0, len(rows), TURN):
            part = self.extract(rows[start : start + TURN])
            out.keys += part.keys
            out.errors += part.errors
            out.skips += part.skips
            failed += len(part.errors)
            await asyncio.sleep(0)
            self._check(part.changes, out)
            await asyncio.sleep(0)
        return self._planned(out, failed)

    def extract(self, rows: Sequence[Sequence[Any]]) -> Extracts:
        """Run ``extract`` over ``rows``: each row's changes as plain values, not yet checked.

        A row holding text that could not be decoded (a page read again as ``Salvaged`` rows)
        is an ``invalid-encoding`` record error and is not extracted; one whose key could not
        be decoded ends the run (UndecodableKey).
        """
        out = Extracts([r[self.key_index] for r in rows], [], [], [])
        extract, name, cols = self.extractor.extract, self.name, self.cols
        changed, errors, skips = out.changes, out.errors, out.skips
        key = None
        keys: Sequence[Any] = out.keys
        salvaged = type(rows) is Salvaged
        if salvaged:
            keys, rows = self._decodable(rows, errors)
        try:
            for key, values in zip(keys, rows, strict=True):
                try:
                    # rows are tuples of cols: zip's strict check would only cost time
                    changes = extract(dict(zip(cols, values)))  # noqa: B905
                    got: list[Fields] = []
                    for change in changes:
                        try:
                            got.append(fields(change, name))
                        except Skipped:
                            skips.append((key, change.kind))  # type: ignore[union-attr]
                    changed.append((key, got))
                except Exception as e:
                    errors.append(self.error(key, e))
        except BaseException:
            self.stopped_at = key
            raise
        if salvaged:
            order = {k: i for i, k in enumerate(out.keys)}
            errors.sort(key=lambda e: order[e.key])
        return out

    def _decodable(
        self, rows: Sequence[Sequence[Any]], errors: list[ErrorRecord]
    ) -> tuple[list[Any], list[Sequence[Any]]]:
        """The keys and rows of ``rows`` whose values all decoded; each other row becomes an
        ``invalid-encoding`` record error naming its first undecodable column."""
        keys, kept = [], []
        table, cols, at = self.extractor.source_table, self.cols, self.key_index
        for row in rows:
            key = row[at]
            if type(key) is Undecodable:
                raise self.undecodable_key(key)
            bad = first_undecodable(cols, row)
            if bad is None:
                keys.append(key)
                kept.append(row)
                continue
            column, value = bad
            errors.append(
                ErrorRecord(
                    self.name,
                    key,
                    "record",
                    INVALID_ENCODING,
                    f"{value.describe(f'{table}.{column}')}; the row was left out. Correct the "
                    f"text in the database, then run `backfill run {self.name} --retry-errors`",
                )
            )
        return keys, kept

    def undecodable_key(self, key: Undecodable) -> UndecodableKey:
        """The run-ending error for a source row whose key is text that is not UTF-8."""
        x = self.extractor
        return UndecodableKey(
            f"table {x.source_table!r} has a row whose key column {x.key!r} is text that is not "
            f"valid UTF-8: {key!r} ({key.describe(f'{x.source_table}.{x.key}')}). Extractor "
            f"{self.name!r} ({self.plugin or 'its plugin'}) reads the table in key order and "
            f"cannot page past it: correct that key or delete the row (WHERE {x.key} = {key!r}), "
            "then run the same command to resume; committed batches are kept"
        )

    def convert(self, extracts: Extracts) -> Batch:
        """Check ``extracts``' changes against the declarations and convert them for planning; a
        row whose changes the extractor may not make becomes a record error."""
        out = Batch(extracts.keys, errors=extracts.errors, skips=extracts.skips)
        failed = len(out.errors)
        self._check(extracts.changes, out)
        return self._planned(out, failed)

    def _check(self, changes: list[tuple[Any, list[Fields]]], out: Batch) -> None:
        """Add each row's checked ``changes`` to ``out``'s items, or its error to its errors."""
        written, name, targets, items = self.written, self.name, self.targets, out.items
        for key, got in changes:
            try:
                items.append(extracted(key, [checked(c, written, name) for c in got], targets))
            except Exception as e:
                out.errors.append(self.error(key, e))

    @staticmethod
    def _planned(out: Batch, failed: int) -> Batch:
        """``out`` with what planning needs gathered, and its errors in key order when checking
        added some to the ``failed`` rows' errors of extraction."""
        if failed and len(out.errors) > failed:
            out.settle()
        else:
            out.needed = keys_needed(out.items)
            out.refs = refs_needed(out.items)
            out.parents = parents_needed(out.items)
        return out

    def error(self, key: Any, e: Exception) -> ErrorRecord:
        """The record error of the row ``key`` whose extraction raised ``e``."""
        if isinstance(e, RecordError):
            return ErrorRecord(self.name, key, "record", e.kind, e.message)
        return ErrorRecord(
            self.name,
            key,
            "record",
            "plugin-bug",
            f"extract raised {type(e).__name__}: {e} (a bug in {self.plugin or self.name}; "
            "report it to the plugin's authors)",
        )
