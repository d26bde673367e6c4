"""What a run is asked to do (RunOptions), and how it reports progress (Progress)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Progress(Protocol):
    def update(self, n: int) -> object: ...
    def close(self) -> object: ...


ProgressFactory = Callable[[str, int], Progress]


class NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class RunOptions:
    batch_size: int = 500
    dry_run: bool = False
    max_error_rate: float = 0.05
    sample_size: int = 0
    worker: bool = True
    """Extract in a worker process where one can run (see pool.py)."""
    workers: int = 1
    """Extraction workers processing the key ranges of each extractor at once (see lanes.py);
    above 1, they run on either database, whatever ``worker`` says."""
    target_batch_seconds: float | None = None
    """Adapt the batch size so that each write transaction takes about this long (batchsize.py);
    ``batch_size`` is then the starting size."""
    min_batch_size: int | None = None
    max_batch_size: int | None = None
    lock_timeout: float = 5.0
    """Seconds a batch's transaction waits for a lock on PostgreSQL (``lock_timeout``; 0: no limit)."""
    lock_retries: int = 5
    """Times a batch that gave way to another transaction's lock is tried again (see retry.py)."""
    max_rows_per_second: float | None = None
    """Source rows per second at most (None: no limit); see throttle.py."""
    sleep_between_batches: float = 0.0
    """Seconds to wait before each batch after the first."""
    max_replica_lag: float | None = None
    """Read by the built-in replica_lag throttle (backfill_plugins.throttles)."""
