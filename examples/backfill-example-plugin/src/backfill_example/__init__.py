"""An example third-party backfill plugin: one row per bug in ``bug_severities``, from the
severity named in the bug's JSON (``bugs.raw_data.severity``)."""

from backfill_example.extractors import SEVERITIES, BugSeverityExtractor
from backfill_example.models import DDL, BugSeverity
from backfill_example.validators import SeverityCoverage

__all__ = ["DDL", "SEVERITIES", "BugSeverity", "BugSeverityExtractor", "SeverityCoverage"]
