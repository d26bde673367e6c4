"""What one extractor's run found: its counts and samples, and the log its errors go to."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from backfill_core.store.records import ROW_COUNTS, BatchSizes, Delta, ErrorRecord

SHOWN_ERRORS = 10


class ErrorLog:
    """Keeps the first errors for the summary and streams all of them to ``--log-file``."""

    def __init__(self, path: Path | None = None, keep: int = SHOWN_ERRORS) -> None:
        self.path = path
        self.keep = keep
        self.first: list[ErrorRecord] = []
        self.total = 0
        self._file: IO[str] | None = path.open("a", encoding="utf-8") if path else None

    def add(self, error: ErrorRecord) -> None:
        self.total += 1
        if len(self.first) < self.keep:
            self.first.append(error)
        if self._file is not None:
            self._file.write(json.dumps(error.to_dict(), default=str) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class ExtractorStats:
    name: str
    plugin: str = ""
    dry_run: bool = False
    total: int = 0
    processed: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    """Skips the extractor returned, by kind: deliberately not written, not errors."""
    elapsed: float = 0.0
    stopped: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    lock_retries: int = 0
    """Times a batch gave way to another transaction's lock and was tried again."""
    run_id: int | None = None
    note: str | None = None
    """How this run started: resumed, taken over, retrying errors, or skipped as already done."""
    batches: BatchSizes = field(default_factory=BatchSizes)
    """The page sizes of the batches committed in this process, and its slowest write transaction."""

    def add(self, delta: Delta) -> None:
        """Add a committed batch's counts and errors."""
        for name in ROW_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(delta, name))
        for e in delta.errors:
            self.errors[(e.tier, e.kind)] += 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float:
        return self.error_count / self.processed if self.processed else 0.0

    def to_dict(self) -> dict[str, Any]:
        tiers: dict[str, dict[str, int]] = {}
        for (tier, kind), n in sorted(self.errors.items()):
            tiers.setdefault(tier, {})[kind] = n
        return {
            "extractor": self.name,
            "plugin": self.plugin,
            "run_id": self.run_id,
            "note": self.note,
            "dry_run": self.dry_run,
            "processed": self.processed,
            "total": self.total,
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "errors": self.error_count,
            "errors_by_tier": tiers,
            "error_rate": round(self.error_rate, 6),
            "skipped": dict(sorted(self.skipped.items())),
            "lock_retries": self.lock_retries,
            "elapsed_seconds": round(self.elapsed, 3),
            "batch_sizes": self.batches.to_dict(),
            "stopped": self.stopped,
            "samples": self.samples,
        }
