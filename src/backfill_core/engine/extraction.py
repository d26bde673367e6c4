"""Extracting a batch of source rows: the pure half of a batch, run by the engine or its worker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill_core.changes import Fields, Skipped, checked, fields
from backfill_core.engine.planner import (
    Extracted,
    Parents,
    Target,
    extracted,
    keys_needed,
    parents_needed,
    refs_needed,
)
from backfill_core.errors import RecordError
from backfill_core.extractor import Extractor

Error = tuple[Any, str, str]
"""(key, kind, message) of a source row that failed to extract."""


@dataclass(slots=True)
class Extraction:
    """One batch of source rows, extracted: everything planning needs, in plain values."""

    keys: list[Any]
    """The key of every source row, in order."""
    items: list[Extracted]
    errors: list[Error] = field(default_factory=list)
    """Rows that failed to extract, in key order."""
    needed: dict[Target, set[tuple[Any, ...]]] = field(default_factory=dict)
    """The target rows whose current values planning needs."""
    refs: dict[Target, tuple[set[str], set[Any]]] = field(default_factory=dict)
    """The referenced tables and columns, with the columns to match and the values looked for."""
    parents: dict[Parents, set[tuple[Any, ...]]] = field(default_factory=dict)
    """The parents whose child rows Children changes own."""
    skips: list[tuple[Any, str]] = field(default_factory=list)
    """(key, kind) of each Skip the rows returned."""
    unchecked: list[tuple[Any, list[Fields]]] | None = None
    """Each row's changes as returned, not yet checked and converted into ``items`` (see
    ``BatchExtractor.finish``); None once they are."""

    def errors_in_key_order(self) -> None:
        """Put errors added after the extraction's own back among them, in the rows' order."""
        order = {k: i for i, k in enumerate(self.keys)}
        self.errors.sort(key=lambda e: order[e[0]])


class BatchExtractor:
    """Runs an extractor over batches of rows (tuples of its read columns).

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
        self.stopped_at: Any = None
        """The key of the row whose ``extract`` raised what is not an Exception (SystemExit,
        KeyboardInterrupt): that ends the batch instead of becoming a record error."""

    def __call__(self, rows: Sequence[Sequence[Any]], *, finish: bool = True) -> Extraction:
        """Extract ``rows``; with ``finish=False`` the changes are left unchecked, for
        :meth:`finish` to check and convert (the worker leaves that to the engine when the
        engine has time to spare: the result is the same)."""
        out = Extraction([r[self.key_index] for r in rows], [])
        extract, name, cols = self.extractor.extract, self.name, self.cols
        unchecked: list[tuple[Any, list[Fields]]] = []
        errors = out.errors
        key = None
        try:
            for key, values in zip(out.keys, rows, strict=True):
                try:
                    # zip without strict=: the keyword costs more than the zip (rows are of cols)
                    changes = extract(dict(zip(cols, values)))  # noqa: B905
                    got: list[Fields] = []
                    for change in changes:
                        try:
                            got.append(fields(change, name))
                        except Skipped:
                            out.skips.append((key, change.kind))  # type: ignore[union-attr]
                    unchecked.append((key, got))
                except Exception as e:
                    errors.append(self._error(key, e))
        except BaseException:
            self.stopped_at = key
            raise
        out.unchecked = unchecked
        if finish:
            self.finish(out)
        return out

    def finish(self, batch: Extraction) -> None:
        """Check and convert ``batch``'s unchecked changes into its items; a row whose changes the
        extractor may not make becomes a record error."""
        if batch.unchecked is None:
            return
        written, name, items = self.written, self.name, batch.items
        failed = len(batch.errors)
        for key, changes in batch.unchecked:
            try:
                items.append(extracted(key, [checked(c, written, name) for c in changes]))
            except Exception as e:
                batch.errors.append(self._error(key, e))
        batch.unchecked = None
        if len(batch.errors) > failed and failed:
            batch.errors_in_key_order()
        batch.needed = keys_needed(items)
        batch.refs = refs_needed(items)
        batch.parents = parents_needed(items)

    def _error(self, key: Any, e: Exception) -> Error:
        if isinstance(e, RecordError):
            return key, e.kind, e.message
        return (
            key,
            "plugin-bug",
            f"extract raised {type(e).__name__}: {e} (a bug in {self.plugin or self.name}; "
            "report it to the plugin's authors)",
        )
