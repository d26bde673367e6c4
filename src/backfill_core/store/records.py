"""What the ledger records of a run: its counts and its error records."""

from __future__ import annotations

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
