"""An example third-party backfill plugin: one row per bug in ``bug_severities``, from the
severity named in the bug's JSON (``bugs.raw_data.severity``), and one row per step in
``bug_steps``, from the list of steps it holds (``bugs.raw_data.steps``)."""

from backfill_example.extractors import SEVERITIES, BugSeverityExtractor, BugStepsExtractor
from backfill_example.models import BUG_SEVERITIES_DDL, BUG_STEPS_DDL, DDL, BugSeverity, BugStep
from backfill_example.validators import SeverityCoverage, StepsCoverage

__all__ = [
    "BUG_SEVERITIES_DDL",
    "BUG_STEPS_DDL",
    "DDL",
    "SEVERITIES",
    "BugSeverity",
    "BugSeverityExtractor",
    "BugStep",
    "BugStepsExtractor",
    "SeverityCoverage",
    "StepsCoverage",
]
