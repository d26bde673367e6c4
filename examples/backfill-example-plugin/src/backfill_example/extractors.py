"""``bug_severity``: the severity a bug's JSON names, into ``bug_severities``."""

from __future__ import annotations

from backfill_core import Extractor, RecordError, Ref, Row, Upsert, parse_json

from backfill_example.models import BugSeverity

SEVERITIES = ("low", "high", "critical", "visual", "content")


class BugSeverityExtractor(Extractor):
    """One ``bug_severities`` row per bug whose ``raw_data`` names a known severity.

    - no JSON (NULL), or no ``severity`` key, or ``"severity": null``: nothing to write;
    - JSON that is not valid, or not an object: RecordError ``invalid-json``/``invalid-shape``;
    - a severity that is not text: RecordError ``invalid-type``;
    - text that is not one of SEVERITIES: RecordError ``unknown-value``.
    """

    name = "bug_severity"
    description = "bug_severities rows from bugs.raw_data.severity"
    source = "bugs"
    columns = ("id", "raw_data")
    writes = {BugSeverity: ("bug_id", "severity")}

    def extract(self, row: Row) -> list[Upsert]:
        raw = parse_json(row["raw_data"], "bugs.raw_data")
        if raw is None:
            return []
        if not isinstance(raw, dict):
            raise RecordError(f"bugs.raw_data is {type(raw).__name__}, not an object", kind="invalid-shape")
        severity = raw.get("severity")
        if severity is None:
            return []
        if not isinstance(severity, str):
            raise RecordError(
                f"raw_data.severity is {type(severity).__name__}, not text", kind="invalid-type"
            )
        if severity not in SEVERITIES:
            raise RecordError(
                f"raw_data.severity {severity[:80]!r} is not one of {', '.join(SEVERITIES)}",
                kind="unknown-value",
            )
        return [
            Upsert(
                "bug_severities",
                key={"bug_id": row["id"]},
                values={"severity": severity},
                # SQLite enforces REFERENCES only with PRAGMA foreign_keys on, which backfill
                # leaves off: have the engine check that the bug still exists when it writes.
                requires=(Ref("bugs", "id", row["id"]),),
            )
        ]
