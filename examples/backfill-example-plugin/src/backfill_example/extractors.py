"""``bug_severity``: the severity a bug's JSON names, into ``bug_severities``; ``bug_steps``: the
steps it lists, into ``bug_steps``."""

from __future__ import annotations

from typing import Any

from backfill_core import Children, Extractor, RecordError, Ref, Row, Upsert, parse_json

from backfill_example.models import BugSeverity, BugStep

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


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class BugStepsExtractor(Extractor):
    """The ``bug_steps`` rows of each bug whose ``raw_data`` lists its steps, numbered from 1.

    One ``Children`` change per bug owns the bug's rows: a step added to the list is inserted, a
    changed one updated, and the rows past the end of a shorter list deleted.

    - no JSON (NULL), or no ``steps`` key, or ``"steps": null``: nothing to write, and the bug's
      rows stay as they are (the JSON says nothing about its steps);
    - ``"steps": []``: the bug has no steps, so its rows are deleted;
    - JSON that is not valid, or not an object: RecordError ``invalid-json``/``invalid-shape``;
    - steps that are not a list: RecordError ``invalid-shape``;
    - a step that is not text: RecordError ``invalid-type``; one holding a NUL character, which
      PostgreSQL text cannot store: RecordError ``invalid-value`` (so that both databases agree).

    A record error writes nothing: the bug's rows stay as the last good JSON left them.
    """

    name = "bug_steps"
    description = "bug_steps rows from the list bugs.raw_data.steps"
    source = "bugs"
    columns = ("id", "raw_data")
    writes = {BugStep: ("bug_id", "step_no", "step")}

    def extract(self, row: Row) -> list[Children]:
        raw = parse_json(row["raw_data"], "bugs.raw_data")
        if raw is None:
            return []
        if not isinstance(raw, dict):
            raise RecordError(f"bugs.raw_data is {type(raw).__name__}, not an object", kind="invalid-shape")
        steps = raw.get("steps")
        if steps is None:
            return []
        if not isinstance(steps, list):
            raise RecordError(f"raw_data.steps is {_type_name(steps)}, not a list", kind="invalid-shape")
        rows: list[dict[str, object]] = []
        for n, step in enumerate(steps, 1):
            if not isinstance(step, str):
                raise RecordError(
                    f"raw_data.steps[{n - 1}] is {_type_name(step)}, not text", kind="invalid-type"
                )
            if "\x00" in step:
                raise RecordError(
                    f"raw_data.steps[{n - 1}] holds a NUL character, which PostgreSQL text cannot store",
                    kind="invalid-value",
                )
            rows.append({"step_no": n, "step": step})
        return [
            Children(
                "bug_steps",
                parent={"bug_id": row["id"]},
                key=("step_no",),
                rows=rows,
                # As for bug_severity: write nothing for a bug that no longer exists.
                requires=(Ref("bugs", "id", row["id"]),),
            )
        ]
