"""The engine's check of one change, as a function of the change alone."""

from __future__ import annotations

from collections.abc import Mapping

from backfill_core.changes import checked, fields


def check_change(change: object, writes: Mapping[str, frozenset[str]], extractor: str) -> object:
    """``change`` if it only touches what the extractor declared, else the RecordError the engine
    records for it."""
    checked(fields(change, extractor), writes, extractor)
    return change
