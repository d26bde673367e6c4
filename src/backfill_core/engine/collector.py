"""How the cycle collector runs while backfill works: the same policy in the engine and its worker."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

GC_THRESHOLD = 10_000
"""Allocations between the cycle collector's young collections during a run (Python's default is
700): each batch allocates many short-lived, acyclic rows and changes that reference counting
frees, so frequent collections would only rescan them."""


@contextlib.contextmanager
def few_collections() -> Iterator[None]:
    """Run with the objects that exist now (modules, plugins) out of the cycle collector's scans
    and with young collections GC_THRESHOLD allocations apart; restored afterwards.

    A program embedding backfill that froze objects itself keeps its own freeze untouched.
    """
    thresholds = gc.get_threshold()
    freezing = gc.get_freeze_count() == 0
    if freezing:
        gc.freeze()
    gc.set_threshold(max(GC_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freezing:
            gc.unfreeze()
