"""backfill: fill derived tables and columns from data the database already holds.

The package's top level is the plugin contract: the changes an extractor returns, the
``Extractor`` and ``Validator`` base classes, the hooks and the registry that discovers
plugins, the errors and the JSON helpers.
Importing it loads neither the engine nor a database driver. The API for embedding the
engine in a program lives in ``backfill_core.app``; its names are also importable from here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from backfill_core.changes import Change, Children, Ref, Skip, Update, Upsert
from backfill_core.errors import (
    BackfillError,
    DatabaseUnavailable,
    EnvironmentProblem,
    ExitCode,
    PluginUnavailable,
    RecordError,
    SchemaMissing,
    UsageError,
)
from backfill_core.extractor import Extractor, Row
from backfill_core.hookspecs import hookimpl
from backfill_core.jsonvalue import dump_json, parse_json
from backfill_core.plugins import PluginInfo, Registry, make_registry
from backfill_core.validator import Metric, MetricResult, Validator

if TYPE_CHECKING:
    from backfill_core.app import (
        Database as Database,
        ErrorRecord as ErrorRecord,
        ExtractorStats as ExtractorStats,
        RunOptions as RunOptions,
        RunReport as RunReport,
        resolve_url as resolve_url,
        run_backfill as run_backfill,
        validate_only as validate_only,
    )

__all__ = [
    "BackfillError",
    "Change",
    "Children",
    "DatabaseUnavailable",
    "EnvironmentProblem",
    "ExitCode",
    "Extractor",
    "Metric",
    "MetricResult",
    "PluginInfo",
    "PluginUnavailable",
    "RecordError",
    "Ref",
    "Registry",
    "Row",
    "SchemaMissing",
    "Skip",
    "Update",
    "Upsert",
    "UsageError",
    "Validator",
    "dump_json",
    "hookimpl",
    "make_registry",
    "parse_json",
]

_EMBEDDING = {
    "Database",
    "ErrorRecord",
    "ExtractorStats",
    "RunOptions",
    "RunReport",
    "resolve_url",
    "run_backfill",
    "validate_only",
}


def __getattr__(name: str) -> Any:
    """The embedding API (``backfill_core.app``), loaded when first asked for."""
    if name in _EMBEDDING:
        return getattr(importlib.import_module("backfill_core.app"), name)
    raise AttributeError(f"module 'backfill_core' has no attribute {name!r}")
