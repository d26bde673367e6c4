"""What the ledger records of a run: its counts, its error records and its batch sizes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ROW_COUNTS = ("processed", "inserted", "updated", "deleted", "unchanged")
"""Source rows processed, and target rows by what was done to them."""
COUNTS = (*ROW_COUNTS, "record_errors", "batch_errors", "lock_retries")
"""What a run counts: its rows, its errors by tier, and the times a batch gave way to another
transaction's lock and was tried again."""


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One record that contributed nothing: which extractor, which source key, and why."""

    extractor: str
    key: Any
    tier: str  # "record" (extraction or reference check) or "batch" (isolated write failure)
    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "extractor": self.extractor,
            "key": self.key,
            "tier": self.tier,
            "kind": self.kind,
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"{self.extractor} key={self.key!r} [{self.tier}/{self.kind}] {self.message}"


@dataclass
class Delta:
    """Counts a checkpoint adds to its run."""

    processed: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    record_errors: int = 0
    batch_errors: int = 0
    lock_retries: int = 0
    errors: list[ErrorRecord] = field(default_factory=list)

    def add(self, other: Delta) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in COUNTS)


@dataclass(frozen=True, slots=True)
class KeyRange:
    """The source keys ``k`` with ``after < k <= upto``; None leaves that end open.

    The unit of work: a run processes its extractor's key ranges, and the ledger records the
    ranges it has committed.
    """

    after: Any = None
    upto: Any = None


@dataclass
class BatchSizes:
    """The sizes of a run's committed batches (how many batches read pages of each size) and its
    slowest write transaction, in seconds."""

    counts: dict[int, int] = field(default_factory=dict)
    slowest: float = 0.0

    def add(self, size: int, held: float | None = None) -> None:
        """Count a batch of ``size``; ``held``: how long its write transaction held its locks."""
        self.counts[size] = self.counts.get(size, 0) + 1
        if held is not None and held > self.slowest:
            self.slowest = held

    def plus(self, other: BatchSizes) -> BatchSizes:
        """These batches and ``other``'s."""
        both = BatchSizes(dict(self.counts), max(self.slowest, other.slowest))
        for size, n in other.counts.items():
            both.counts[size] = both.counts.get(size, 0) + n
        return both

    @property
    def batches(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> tuple[int, int, int] | None:
        """(min, median, max) of the sizes, the median being the lower one; None without batches."""
        if not self.counts:
            return None
        sizes = sorted(self.counts)
        middle, seen = (self.batches - 1) // 2, 0
        median = sizes[-1]
        for size in sizes:
            seen += self.counts[size]
            if seen > middle:
                median = size
                break
        return sizes[0], median, sizes[-1]

    def to_dict(self) -> dict[str, Any]:
        low, median, high = self.summary() or (None, None, None)
        return {
            "batches": self.batches,
            "min": low,
            "median": median,
            "max": high,
            "slowest_write_seconds": round(self.slowest, 3),
        }

    def encode(self) -> str:
        """The counts as the ledger stores them: a JSON object from size to batches."""
        return json.dumps({str(size): n for size, n in sorted(self.counts.items())}, separators=(",", ":"))

    @classmethod
    def decode(cls, counts: Any, slowest: Any) -> BatchSizes:
        """What ``encode`` stored (NULL, or 0 from a ledger that lacks the columns: none)."""
        decoded = json.loads(counts) if isinstance(counts, str) and counts else {}
        return cls({int(size): int(n) for size, n in decoded.items()}, float(slowest or 0.0))
