"""Extracting a batch of source rows: the pure half of a batch, run by the engine or its worker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill_core.changes import check_change
from backfill_core.errors import RecordError
from backfill_core.extractor import Extractor
from backfill_core.planner import Extracted, Target, extracted, keys_needed, refs_needed


@dataclass(slots=True)
class Extraction:
    """One batch of source rows, extracted: everything planning needs, in plain values."""

    keys: list[Any]
    """The key of every source row, in order."""
    items: list[Extracted]
    errors: list[tuple[Any, str, str]] = field(default_factory=list)
    """(key, kind, message) of each row that failed to extract."""
    needed: dict[Target, set[tuple[Any, ...]]] = field(default_factory=dict)
    """The target rows whose current values planning needs."""
    refs: dict[Target, tuple[set[str], set[Any]]] = field(default_factory=dict)
    """The referenced tables and columns, with the columns to match and the values looked for."""


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

    def __call__(self, rows: Sequence[Sequence[Any]]) -> Extraction:
        out = Extraction([r[self.key_index] for r in rows], [])
        extract, written, name, cols = self.extractor.extract, self.written, self.name, self.cols
        items, errors = out.items, out.errors
        key = None
        try:
            for key, values in zip(out.keys, rows, strict=True):
                try:
                    # zip without strict=: the keyword costs more than the zip (rows are of cols)
                    changes = extract(dict(zip(cols, values)))  # noqa: B905
                    items.append(extracted(key, [check_change(c, written, name) for c in changes]))
                except RecordError as e:
                    errors.append((key, e.kind, e.message))
                except Exception as e:
                    errors.append(
                        (
                            key,
                            "plugin-bug",
                            f"extract raised {type(e).__name__}: {e} (a bug in {self.plugin or name}; "
                            "report it to the plugin's authors)",
                        )
                    )
        except BaseException:
            self.stopped_at = key
            raise
        out.needed = keys_needed(items)
        out.refs = refs_needed(items)
        return out
