"""What a run found: per-extractor counts, recorded errors, validation, and their rendering."""

from __future__ import annotations

import json
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill_core.engine.stats import ErrorLog, ExtractorStats
from backfill_core.errors import ExitCode
from backfill_core.store.records import BatchSizes
from backfill_core.validator import MetricResult


@dataclass
class RunReport:
    database: str
    dry_run: bool = False
    extractors: list[ExtractorStats] = field(default_factory=list)
    validation: list[MetricResult] | None = None
    validation_skipped: str | None = None
    errors: ErrorLog = field(default_factory=ErrorLog)
    interrupted_by: int | None = None
    """The signal (SIGINT or SIGTERM) that stopped the run."""

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted_by is not None:
            return ExitCode.TERMINATED if self.interrupted_by == signal.SIGTERM else ExitCode.INTERRUPTED
        if any(s.stopped for s in self.extractors):
            return ExitCode.FAILED
        if self.validation and not all(m.passed for m in self.validation):
            return ExitCode.FAILED
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted_by is not None,
            "signal": signal.Signals(self.interrupted_by).name if self.interrupted_by else None,
            "exit_code": int(self.exit_code),
            "extractors": [s.to_dict() for s in self.extractors],
            "validation": None if self.validation is None else [m.to_dict() for m in self.validation],
            "validation_skipped": self.validation_skipped,
            "errors_total": self.errors.total,
            "errors_first": [e.to_dict() for e in self.errors.first],
            "errors_log": str(self.errors.path) if self.errors.path else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_text(self) -> str:
        lines = [f"database: {self.database}" + ("  (dry run: nothing written)" if self.dry_run else "")]
        if self.extractors:
            # The deleted column only when something was deleted: only Children changes delete.
            deletes = any(s.deleted for s in self.extractors)
            verbs = ("inserted", "updated", "deleted")
            if self.dry_run:
                verbs = ("would insert", "would update", "would delete")
            counted = verbs if deletes else verbs[:2]
            header = ("extractor", "processed", *counted, "unchanged", "errors", "seconds")
            rows = [header] + [
                (
                    s.name,
                    str(s.processed),
                    str(s.inserted),
                    str(s.updated),
                    *((str(s.deleted),) if deletes else ()),
                    str(s.unchanged),
                    str(s.error_count),
                    f"{s.elapsed:.2f}",
                )
                for s in self.extractors
            ]
            lines += _table(rows)
            for s in self.extractors:
                if s.note:
                    lines.append(f"  {s.name}: {s.note}")
                if s.errors:
                    kinds = ", ".join(f"{tier}/{kind}: {n}" for (tier, kind), n in sorted(s.errors.items()))
                    lines.append(f"  {s.name} errors: {kinds}")
                if s.lock_retries:
                    lines.append(
                        f"  {s.name}: {s.lock_retries} lock retries (a batch gave way to another "
                        "transaction's lock, was rolled back and tried again)"
                    )
                if s.skipped:
                    kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(s.skipped.items()))
                    lines.append(f"  {s.name} skipped: {kinds}")
                if s.batches.batches:
                    held = "planning" if s.dry_run else "write"
                    lines.append(f"  {s.name} batches: {describe_batches(s.batches, held)}")
                if s.stopped:
                    lines.append(f"  {s.name} STOPPED: {s.stopped}")
                verb = "would" if s.dry_run else "sample:"
                for sample in s.samples:
                    lines.append(f"  {s.name} {verb} {json.dumps(sample, default=str)}")
        if self.validation == []:
            lines.append("validation: no validator covers these extractors")
        elif self.validation is not None:
            lines.append("validation:")
            for m in self.validation:
                value, bar = metric_figures(m)
                verdict = "info" if m.threshold is None else ("pass" if m.passed else "FAIL")
                lines.append(
                    f"  {verdict:4}  {m.validator}.{m.name} = {value} "
                    f"[{m.numerator}/{m.denominator}]{bar}  {m.description}"
                )
        elif self.validation_skipped:
            lines.append(f"validation: skipped ({self.validation_skipped})")
        if self.errors.total:
            lines.append(f"first {len(self.errors.first)} of {self.errors.total} errors:")
            lines += [f"  {e}" for e in self.errors.first]
            recorded = [s for s in self.extractors if s.run_id is not None and s.errors]
            for s in recorded:
                lines.append(f"all errors of {s.name} are in the ledger: backfill errors {s.run_id}")
            if self.errors.path:
                lines.append(f"all errors are in {self.errors.path}")
            elif not recorded and self.errors.total > len(self.errors.first):
                lines.append("pass --log-file PATH to keep all of them")
        if self.interrupted_by is not None:
            lines.append(
                f"interrupted by {signal.Signals(self.interrupted_by).name} after the batch in flight; "
                "every committed batch is checkpointed"
            )
        return "\n".join(lines)


def metric_figures(m: MetricResult) -> tuple[str, str]:
    """A metric's value (``98.4%``, or ``n/a``) and its threshold (`` (threshold 95%)``, or '')."""
    value = "n/a" if m.value is None else f"{m.value:.1%}"
    return value, "" if m.threshold is None else f" (threshold {m.threshold:.0%})"


def describe_batches(batches: BatchSizes, held: str = "write") -> str:
    """The sizes (min/median/max) and slowest ``held`` transaction of ``batches``, for a summary
    line."""
    low, median, high = batches.summary() or (0, 0, 0)
    sizes = f"{low} rows" if low == high else f"{low}/{median}/{high} rows (min/median/max)"
    return f"{batches.batches} of {sizes}, slowest {held} {batches.slowest:.3f}s"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
    return out
