"""backfill: fill derived tables and columns from data the database already holds.

The public API for plugin authors and for embedding the engine.
"""

from backfill_core.changes import Change, Children, Ref, Skip, Update, Upsert
from backfill_core.database import Database, resolve_url
from backfill_core.engine import RunOptions
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
from backfill_core.report import ErrorRecord, ExtractorStats, RunReport
from backfill_core.run import run_backfill, validate_only
from backfill_core.validator import Metric, MetricResult, Validator

__all__ = [
    "BackfillError",
    "Change",
    "Children",
    "Database",
    "DatabaseUnavailable",
    "EnvironmentProblem",
    "ErrorRecord",
    "ExitCode",
    "Extractor",
    "ExtractorStats",
    "Metric",
    "MetricResult",
    "PluginInfo",
    "PluginUnavailable",
    "RecordError",
    "Ref",
    "Registry",
    "Row",
    "RunOptions",
    "RunReport",
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
    "resolve_url",
    "run_backfill",
    "validate_only",
]
