"""The application: the ``backfill`` command, runs of several extractors, validation and reports.

This is the API for embedding backfill in a program: ``run_backfill`` and ``validate_only``
with a ``Registry`` of plugins, ``RunOptions`` and a ``RunReport`` to fill.
"""

from backfill_core.app.report import RunReport
from backfill_core.app.run import run_backfill, validate_only
from backfill_core.engine.options import RunOptions
from backfill_core.engine.stats import ExtractorStats
from backfill_core.store.database import Database, resolve_url
from backfill_core.store.records import ErrorRecord

__all__ = [
    "Database",
    "ErrorRecord",
    "ExtractorStats",
    "RunOptions",
    "RunReport",
    "resolve_url",
    "run_backfill",
    "validate_only",
]
