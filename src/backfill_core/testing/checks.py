"""Property checks any extractor can be put through, one row or one batch at a time.

Each check is a plain function that raises AssertionError naming the extractor and the
offending row(s); :func:`check_extractor` runs them all under hypothesis.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import reprlib
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, event, given, settings, strategies as st
from hypothesis.strategies import SearchStrategy

from backfill_core.app.report import RunReport
from backfill_core.app.run import run_backfill
from backfill_core.changes import Change, Ref, Skip, checked, fields
from backfill_core.engine.options import RunOptions
from backfill_core.engine.stats import ExtractorStats
from backfill_core.errors import RecordError
from backfill_core.extractor import Extractor, Row
from backfill_core.hookspecs import hookimpl
from backfill_core.plugins import make_registry
from backfill_core.store.database import resolve_url
from backfill_core.testing import strategies
from backfill_core.testing.database import (
    Inserted,
    Rows,
    Schema,
    create_database,
    insert_generated,
    quote_name,
    snapshot,
)

__all__ = [
    "MIN_ACCEPTED",
    "CheckSummary",
    "check_declared",
    "check_deterministic",
    "check_dry_run_agrees",
    "check_extractor",
    "check_idempotent",
    "check_total",
    "extractor_properties",
    "run_once",
]

T = TypeVar("T")

_repr = reprlib.Repr()
_repr.maxstring = 160
_repr.maxother = 160
_repr.maxdict = _repr.maxlist = _repr.maxtuple = 12
_repr.maxlevel = 5


def _show(value: object) -> str:
    return _repr.repr(value)


def _label(extractor: Extractor) -> str:
    return f"extractor {getattr(extractor, 'name', '?')!r} ({type(extractor).__name__})"


# -- checks on one row: pure, no database ----------------------------------------------------------


def _copy(row: Row) -> dict[str, Any]:
    """A row of its own for one call of ``extract``: what one call changes, the next does not see."""
    return copy.deepcopy(dict(row))


def _same(a: Any, b: Any) -> bool:
    return a is b or a == b


def _mutation(label: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str | None:
    """The failure message when ``extract`` changed its row (``before`` → ``after``), else None."""
    changed = [
        f"column {c!r} from {_show(before[c])} to {_show(after[c])}"
        if c in before and c in after
        else f"column {c!r} ({'removed' if c in before else 'added'})"
        for c in [*before, *(c for c in after if c not in before)]
        if not (c in before and c in after and _same(before[c], after[c]))
    ]
    if not changed:
        return None
    return (
        f"{label} changed the row it was given: {', '.join(changed)}, in row {_show(dict(before))}; "
        "extract must leave its row as it is (the engine may pass the same row again, and a "
        "check would then test the changed row)"
    )


def _extract(extractor: Extractor, row: Row, label: str) -> list[Change | Skip] | RecordError:
    """``extract`` on a copy of ``row``: its changes, or the RecordError it raised (checked to have
    a kind and a message). Any other exception, a result that is not a list of changes, or a
    change to the row it was given is an AssertionError."""
    before, given = _copy(row), _copy(row)
    try:
        result = extractor.extract(given)
    except RecordError as e:
        _check_record_error(label, e, before)
        outcome: list[Change | Skip] | RecordError = e
    except Exception as e:
        raise AssertionError(
            f"{label} raised {type(e).__name__}: {e} on row {_show(before)}; extract may raise only "
            "RecordError (say what is wrong with the row, with a kind)"
        ) from e
    else:
        if result is None or isinstance(result, str | bytes | Mapping) or not isinstance(result, Iterable):
            raise AssertionError(
                f"{label} returned {_show(result)} for row {_show(before)}, not a list of changes "
                "(return [] when the row yields nothing)"
            )
        try:
            outcome = list(result)
        except RecordError as e:
            _check_record_error(label, e, before)
            outcome = e
        except Exception as e:
            raise AssertionError(
                f"{label}'s result raised {type(e).__name__}: {e} while iterated, on row "
                f"{_show(before)}; only RecordError may be raised"
            ) from e
    mutated = _mutation(label, before, given)
    if mutated:
        raise AssertionError(mutated)
    return outcome


def check_total(extractor: Extractor, row: Row) -> list[Change | Skip] | None:
    """``extract(row)`` returns an iterable of changes or raises RecordError, nothing else, and
    leaves the row it is given as it was.

    ``extract`` gets a deep copy of ``row``. Returns the changes as a list, or None when the row
    was rejected with a RecordError (whose ``kind`` and message must be non-empty text).
    """
    outcome = _extract(extractor, row, _label(extractor))
    return None if isinstance(outcome, RecordError) else outcome


def _check_record_error(label: str, error: RecordError, row: Row) -> None:
    if not isinstance(error.kind, str) or not error.kind:
        raise AssertionError(f"{label} raised RecordError with kind {error.kind!r} on row {_show(row)}")
    if not isinstance(error.message, str) or not error.message:
        raise AssertionError(f"{label} raised RecordError with no message on row {_show(row)}")


def _outcome(extractor: Extractor, row: Row) -> tuple[Any, ...]:
    try:
        return ("changes", list(extractor.extract(row)))
    except RecordError as e:
        return ("RecordError", e.kind, e.message)
    except Exception as e:
        return (type(e).__name__, str(e))


def _unpicklable(label: str, changes: Any, row: Row) -> str | None:
    """The failure message when a change in ``changes`` cannot be pickled, else None."""
    for change in changes if isinstance(changes, list) else ():
        try:
            pickle.dumps(change)
        except Exception as e:
            return (
                f"{label} returned a value that cannot be pickled ({type(e).__name__}: {e}) in "
                f"{_show(change)} for row {_show(row)}; the extraction worker could not send it"
            )
    return None


def check_deterministic(extractor: Extractor, row: Row) -> None:
    """The same row gives the same changes (or the same RecordError) every time, and ``extract``
    leaves the row it was given as it was. Each call gets a deep copy of ``row``.

    Changes that differ because a value cannot be pickled (a lambda, an object without ``==``)
    are reported as that: the engine could not receive them from the extraction worker anyway.
    """
    label = _label(extractor)
    original = _copy(row)
    given_row = _copy(original)
    first = _outcome(extractor, given_row)
    mutated = _mutation(label, original, given_row)
    if mutated:
        raise AssertionError(mutated)
    second = _outcome(extractor, _copy(original))
    if first != second:
        unpicklable = _unpicklable(label, first[-1], original)
        if unpicklable:
            raise AssertionError(unpicklable)
        raise AssertionError(
            f"{label} is not deterministic on row {_show(original)}: first {_show(first)}, "
            f"then {_show(second)}; extract must be a pure function of the row (no clock, "
            "randomness, counters or I/O)"
        )


def check_declared(extractor: Extractor, row: Row) -> None:
    """Every change is an Upsert or Update that touches only tables and columns in
    ``extractor.writes``, has a key, requires only ``Ref`` objects, and can be pickled (the
    extraction worker sends changes to the engine that way), or a Skip with a kind.

    ``extract`` gets a deep copy of ``row``, as in :func:`check_total`."""
    label = _label(extractor)
    changes = check_total(extractor, row) or []
    written = extractor.written
    for change in changes:
        if isinstance(change, Skip):
            if not isinstance(change.kind, str) or not change.kind:
                raise AssertionError(
                    f"{label} returned a Skip with kind {change.kind!r} for row {_show(row)}"
                )
            continue
        bad = [r for r in getattr(change, "requires", ()) if not isinstance(r, Ref)]
        if bad:
            raise AssertionError(f"{label} required {_show(bad)}, not Ref objects, for row {_show(row)}")
        try:
            sent = checked(fields(change, extractor.name), written, extractor.name)
        except RecordError as e:
            raise AssertionError(f"{e.message}; returned {_show(change)} for row {_show(row)}") from None
        try:
            pickle.dumps(sent)
        except Exception as e:
            raise AssertionError(
                f"{label} returned a value that cannot be pickled ({type(e).__name__}: {e}) in "
                f"{_show(change)} for row {_show(row)}; the extraction worker could not send it"
            ) from None


# -- checks on a batch: a real SQLite file, the real engine ----------------------------------------


def _run_sync(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion, also from code already inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


class _OnlyThis:
    """A plugin object registering one extractor."""

    def __init__(self, extractor: Extractor) -> None:
        self.extractor = extractor

    @hookimpl
    def register_extractors(self, register: Callable[[Extractor], None]) -> None:
        register(self.extractor)


def _standalone(extractor: Extractor) -> Extractor:
    """The extractor without its dependencies, which the checks do not run."""
    if not extractor.depends_on:
        return extractor
    alone = copy.copy(extractor)
    alone.__dict__["depends_on"] = ()
    return alone


def run_once(
    extractor: Extractor, path: Path | str, *, dry_run: bool = False, batch_size: int = 500
) -> ExtractorStats:
    """One ``backfill run`` of ``extractor`` alone over the SQLite file at ``path``, in-process,
    through the real engine and ledger, without validators and without an error-rate limit.

    Extraction stays in this process (no worker): a check must see the state an impure
    extractor keeps between calls, which a forked worker would keep to itself.
    """
    registry = make_registry(_OnlyThis(_standalone(extractor)))
    failed = [p for p in registry.plugins if p.status != "ok"]
    if failed:
        raise AssertionError(f"{_label(extractor)} cannot be registered: {failed[0].error}")
    report = RunReport(database=str(path), dry_run=dry_run)
    options = RunOptions(batch_size=batch_size, dry_run=dry_run, max_error_rate=1.0, worker=False)
    url = resolve_url(str(path))
    _run_sync(lambda: run_backfill(registry, [extractor.name], url, options, report, validate=False))
    (stats,) = report.extractors
    return stats


@dataclass
class _Counts:
    inserted: int
    updated: int
    unchanged: int
    record_errors: dict[str, int]
    write_errors: int
    deleted: int | None = None
    """None while the engine's stats have no ``deleted`` count."""
    skipped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, s: ExtractorStats) -> _Counts:
        record = {kind: n for (tier, kind), n in sorted(s.errors.items()) if tier == "record"}
        written = sum(n for (tier, _kind), n in s.errors.items() if tier != "record")
        deleted = getattr(s, "deleted", None)
        skipped = dict(sorted(s.skipped.items()))
        return cls(s.inserted, s.updated, s.unchanged, record, written, deleted, skipped)

    @property
    def writes(self) -> int:
        """Rows inserted, updated or deleted."""
        return self.inserted + self.updated + (self.deleted or 0)

    def predicted(self) -> tuple[Any, ...]:
        """What a dry run must predict of the real run."""
        return (self.inserted, self.updated, self.deleted, self.unchanged, self.record_errors, self.skipped)

    def __str__(self) -> str:
        deleted = "" if self.deleted is None else f"{self.deleted} deleted, "
        skipped = f", skipped {self.skipped}" if self.skipped else ""
        return (
            f"{self.inserted} inserted, {self.updated} updated, {deleted}{self.unchanged} unchanged, "
            f"record errors {self.record_errors or 'none'}, {self.write_errors} write errors{skipped}"
        )


def _diff(before: Mapping[str, list[tuple[Any, ...]]], after: Mapping[str, list[tuple[Any, ...]]]) -> str:
    lines = []
    for table in sorted(set(before) | set(after)):
        old, new = before.get(table, []), after.get(table, [])
        gone = [r for r in old if r not in new]
        came = [r for r in new if r not in old]
        if gone or came:
            lines.append(f"{table}: before {_show(gone[:3])}, after {_show(came[:3])}")
    return "; ".join(lines)


MIN_ACCEPTED = 0.5
"""The default share of the rows that the test schema's source table must accept."""


@dataclass
class _Batch:
    """What one database check saw: the rows given, those the source table took, the real run."""

    inserted: Inserted
    real: _Counts | None = None

    @property
    def given(self) -> int:
        return len(self.inserted.kept) + len(self.inserted.refused)


def _refusals(
    label: str, table: str, accepted: int, given: int, reasons: Counter[str], share: float, what: str
) -> str:
    listed = "; ".join(f"{n} rows: {why}" for why, n in reasons.most_common(3))
    more = f" (and {len(reasons) - 3} other reasons)" if len(reasons) > 3 else ""
    tested = "nothing" if not accepted else "too little"
    return (
        f"{label}: {accepted} of {given} {what} were accepted by {table!r}, fewer than "
        f"min_accepted={share:g} of them, so the database checks test {tested}. Refused: {listed}{more}"
    )


def _database_checks(
    extractor: Extractor,
    rows: Iterable[Row],
    database_path: Path | str,
    *,
    schema: Schema | None,
    seed: Rows | None,
    idempotent: bool,
    dry_run: bool,
    min_accepted: float | None,
    batch: _Batch | None = None,
) -> _Batch:
    label = _label(extractor)
    path = create_database(database_path, schema if schema is not None else extractor, seed)
    conn = sqlite3.connect(path)
    try:
        inserted = insert_generated(conn, extractor.source_table, rows)
        conn.commit()
        cols = extractor.read_columns
        stored = conn.execute(  # the rows as extract sees them, after SQLite's type affinity
            f"SELECT {', '.join(map(quote_name, cols))} FROM {quote_name(extractor.source_table)} "
            f"ORDER BY {quote_name(extractor.key)}"
        ).fetchall()
    finally:
        conn.close()
    seen = batch if batch is not None else _Batch(inserted)
    seen.inserted = inserted
    kept = inserted.kept
    if min_accepted is not None and seen.given and len(kept) < min_accepted * seen.given:
        raise AssertionError(
            _refusals(
                label, extractor.source_table, len(kept), seen.given, inserted.reasons, min_accepted, "rows"
            )
        )
    shown = _show([dict(zip(cols, r, strict=True)) for r in stored])
    size = max(len(kept), 1)
    dry = None
    if dry_run:
        before = path.read_bytes()
        dry = _Counts.of(run_once(extractor, path, dry_run=True, batch_size=size))
        if path.read_bytes() != before:
            raise AssertionError(
                f"a dry run of {label} changed the database file, over rows {shown}; "
                "extract must do no I/O, and a dry run must write nothing"
            )
    stats = run_once(extractor, path, batch_size=size)
    real = seen.real = _Counts.of(stats)
    if stats.processed != len(kept):
        raise AssertionError(f"the run of {label} processed {stats.processed} of {len(kept)} rows {shown}")
    if dry is not None:
        # When the database refused some writes, which a dry run cannot foresee, it must predict
        # at least as many.
        agree = dry.predicted() == real.predicted() if not real.write_errors else dry.writes >= real.writes
        if not agree:
            raise AssertionError(
                f"the dry run of {label} disagrees with the real run over rows {shown}: "
                f"dry run {dry}; real run {real}"
            )
    if idempotent:
        first = snapshot(path)
        again = _Counts.of(run_once(extractor, path, batch_size=size))
        second = snapshot(path)
        if again.writes or first != second:
            deleted = "" if again.deleted is None else f", deleted {again.deleted}"
            raise AssertionError(
                f"{label} is not idempotent: a second run over the same rows {shown} inserted "
                f"{again.inserted} and updated {again.updated} rows{deleted} (expected none) after a "
                f"first run with {real}. Changed: {_diff(first, second) or 'nothing'}"
            )
    return seen


def check_idempotent(
    extractor: Extractor,
    rows: Iterable[Row],
    database_path: Path | str,
    *,
    schema: Schema | None = None,
    seed: Rows | None = None,
    min_accepted: float = MIN_ACCEPTED,
) -> None:
    """Applying a batch of rows twice leaves the database as applying it once.

    Creates a new SQLite file at ``database_path`` with ``schema`` (default: the extractor's
    model classes, see :func:`~backfill_core.testing.database.tables_of`), inserts ``seed``
    (rows by table) and ``rows`` into the source table, runs the extractor twice through the
    real engine in one batch, and checks that the second run inserted, updated (and deleted)
    nothing and that every table is as the first run left it.

    Required columns a row leaves out are filled
    (:func:`~backfill_core.testing.database.insert_generated`); rows the source table still
    refuses are left out, but fewer than ``min_accepted`` of them accepted is a failure naming
    why they were refused.
    """
    _database_checks(
        extractor,
        rows,
        database_path,
        schema=schema,
        seed=seed,
        idempotent=True,
        dry_run=False,
        min_accepted=min_accepted,
    )


def check_dry_run_agrees(
    extractor: Extractor,
    rows: Iterable[Row],
    database_path: Path | str,
    *,
    schema: Schema | None = None,
    seed: Rows | None = None,
    min_accepted: float = MIN_ACCEPTED,
) -> None:
    """A dry run leaves the file byte for byte as it was and predicts the real run: the same
    would-insert, would-update (would-delete), unchanged, record-error and skip counts. (When
    the database refuses some writes, which a dry run cannot foresee, the dry run must predict
    at least as many.)

    The database is set up as by :func:`check_idempotent`.
    """
    _database_checks(
        extractor,
        rows,
        database_path,
        schema=schema,
        seed=seed,
        idempotent=False,
        dry_run=True,
        min_accepted=min_accepted,
    )


# -- everything, under hypothesis --------------------------------------------------------------------


@dataclass
class CheckSummary:
    """What the rows :func:`check_extractor` generated did: how many produced changes, and how
    many reached the database. ``str()`` gives it in two lines."""

    table: str
    """The extractor's source table."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """Rows of the row checks by what ``extract`` did: ``changes`` (at least one change that is
    not a Skip), ``record error``, ``skips only``, ``nothing``."""
    record_errors: Counter[str] = field(default_factory=Counter)
    """Rows whose ``extract`` raised RecordError, by kind."""
    batches: int = 0
    """Batches put through the database checks."""
    batch_rows: int = 0
    """Rows in those batches."""
    accepted: int = 0
    """Of those, the rows the source table accepted."""
    refused: Counter[str] = field(default_factory=Counter)
    """The rows it refused, by why."""
    runs: Counter[str] = field(default_factory=Counter)
    """The first real run of each batch: rows ``inserted``, ``updated``, ``unchanged`` (and
    ``deleted``), source rows with ``record errors``, ``skipped`` changes."""

    @property
    def rows(self) -> int:
        """Rows put through the row checks."""
        return sum(self.outcomes.values())

    @property
    def changed(self) -> int:
        """Of those, the rows for which ``extract`` returned at least one change."""
        return self.outcomes["changes"]

    def _row(self, outcome: list[Change | Skip] | RecordError) -> None:
        if isinstance(outcome, RecordError):
            what = "record error"
            self.record_errors[outcome.kind] += 1
            event(f"extract: record error ({outcome.kind})")
        elif any(not isinstance(c, Skip) for c in outcome):
            what = "changes"
        elif outcome:
            what = "skips only"
        else:
            what = "nothing"
        self.outcomes[what] += 1
        event(f"extract: {what}")

    def _batch(self, seen: _Batch) -> None:
        self.batches += 1
        self.batch_rows += seen.given
        self.accepted += len(seen.inserted.kept)
        self.refused.update(seen.inserted.reasons)
        share = "every" if not seen.inserted.refused else "no" if not seen.inserted.kept else "some"
        event(f"database: {share} row of the batch accepted by {self.table!r}")
        if seen.real is not None:
            for what in ("inserted", "updated", "deleted", "unchanged"):
                self.runs[what] += getattr(seen.real, what) or 0
            self.runs["record errors"] += sum(seen.real.record_errors.values())
            self.runs["skipped"] += sum(seen.real.skipped.values())
            event(f"database: the run {'wrote rows' if seen.real.writes else 'wrote nothing'}")

    def describe_rows(self) -> str:
        if not self.rows:
            return "no row checked"
        kinds = ", ".join(f"{k} {v}" for k, v in self.record_errors.most_common(4))
        return (
            f"of {self.rows} generated rows, {self.changed} produced changes, "
            f"{self.outcomes['record error']} record errors{f' ({kinds})' if kinds else ''}, "
            f"{self.outcomes['skips only']} only skips, {self.outcomes['nothing']} nothing"
        )

    def describe_database(self) -> str:
        if not self.batches:
            return "no database check run"
        runs = ", ".join(f"{v} {k}" for k, v in self.runs.items() if v or k != "deleted")
        return (
            f"{self.accepted} of {self.batch_rows} rows in {self.batches} batches accepted by "
            f"{self.table!r}; their first runs: {runs or 'none completed'}"
        )

    def __str__(self) -> str:
        return f"{self.describe_rows()}\n{self.describe_database()}"


def check_extractor(
    extractor: Extractor,
    *,
    schema: Schema | None = None,
    seed: Rows | None = None,
    rows: SearchStrategy[dict[str, Any]] | None = None,
    max_examples: int = 100,
    database_examples: int | None = None,
    max_batch: int = 20,
    min_accepted: float = MIN_ACCEPTED,
    min_changed: float = 0.0,
) -> CheckSummary:
    """Put ``extractor`` through every property check, with rows generated by hypothesis, and
    return what the generated rows did (a :class:`CheckSummary`).

    - total, declared and deterministic on ``max_examples`` rows from ``rows`` (default:
      :func:`~backfill_core.testing.strategies.rows`, arbitrary values in every column); each
      check, and each call of ``extract``, gets its own deep copy of the row, holding only the
      columns the extractor reads;
    - idempotent and dry run agrees on ``database_examples`` batches of up to ``max_batch`` such
      rows (default: a fifth of ``max_examples``, at least 5), each in a new temporary SQLite
      file built from ``schema`` and ``seed`` as :func:`check_idempotent` describes.

    Guards against passing without testing anything:

    - ``min_accepted`` (default 0.5): fewer than this share of the rows of all batches accepted
      by the source table fails, naming why the table refused them (a required column nobody
      generates, a CHECK...); single batches may be refused entirely;
    - ``min_changed`` (default 0, off): fewer than this share of the generated rows producing
      a change (not only skips) fails, and so do database checks whose runs inserted, updated
      or left unchanged no row at all (every change refused by a Ref, say). Set it once
      ``rows`` are meant to reach the writes.

    How many rows produced changes, record errors (by kind), only skips or nothing, and how many
    the source table accepted, is the returned summary; it is also added to any failure as a
    note, and recorded as hypothesis events.

    Raises AssertionError. Hypothesis shrinks a failing row to a small one; a failing batch is
    not shrunk (each attempt runs the engine three times) but reduced to one of its rows when
    a row fails on its own.
    Call it from a plain test function, not from inside another ``@given`` test.
    """
    label = _label(extractor)
    problems = extractor.declaration_problems()
    if problems:
        raise AssertionError(f"{label} has invalid declarations: {'; '.join(problems)}")
    strategy = rows if rows is not None else strategies.rows(extractor)
    read = extractor.read_columns
    table = extractor.source_table
    tally = CheckSummary(table)

    def as_read(row: Row) -> dict[str, Any]:
        """The row as the engine gives it to ``extract``: only the columns it reads."""
        return _copy({c: v for c, v in row.items() if c in read})

    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        report_multiple_bugs=False,
    )
    @given(row=strategy)
    def pure_properties(row: dict[str, Any]) -> None:
        tally._row(_extract(extractor, as_read(row), label))
        check_declared(extractor, as_read(row))
        check_deterministic(extractor, as_read(row))

    try:
        pure_properties()
    except AssertionError as e:
        e.add_note(f"check_extractor, rows tried so far (shrinking included): {tally.describe_rows()}")
        raise
    if tally.rows and tally.changed < min_changed * tally.rows:
        raise AssertionError(
            f"{label}: only {tally.changed} of {tally.rows} generated rows produced changes, fewer than "
            f"min_changed={min_changed:g} of them, so the checks {'rarely' if tally.changed else 'never'} "
            f"reach the code that writes "
            f"({tally.describe_rows()}); generate rows that do, with well_formed_rows() and payloads_like() "
            "overrides that draw the values extract accepts"
        )

    examples = database_examples if database_examples is not None else max(5, max_examples // 5)
    if examples <= 0:
        return tally
    key = extractor.key

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        report_multiple_bugs=False,
        # Every attempt runs the engine three times: rather than shrink, find a failing row.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )
    @given(batch=st.lists(strategy, min_size=1, max_size=max_batch, unique_by=lambda r: r[key]))
    def database_properties(batch: list[dict[str, Any]]) -> None:
        try:
            _in_temporary_database(batch, count=True)
        except AssertionError:
            for row in batch if len(batch) > 1 else ():
                try:
                    _in_temporary_database([row], count=False)
                except AssertionError as alone:
                    raise alone from None  # the smallest failing batch: one row
            raise

    def _in_temporary_database(batch: list[dict[str, Any]], *, count: bool) -> None:
        seen = _Batch(Inserted(table))
        try:
            with tempfile.TemporaryDirectory(prefix="backfill-check-") as tmp:
                _database_checks(
                    extractor,
                    batch,
                    Path(tmp) / "check.db",
                    schema=schema,
                    seed=seed,
                    idempotent=True,
                    dry_run=True,
                    min_accepted=None,  # one batch may be refused entirely; all of them may not
                    batch=seen,
                )
        finally:
            if count:
                tally._batch(seen)

    try:
        database_properties()
    except AssertionError as e:
        e.add_note(f"check_extractor so far: {tally.describe_rows()}; {tally.describe_database()}")
        raise
    if tally.batch_rows and tally.accepted < min_accepted * tally.batch_rows:
        raise AssertionError(
            _refusals(
                label,
                table,
                tally.accepted,
                tally.batch_rows,
                tally.refused,
                min_accepted,
                f"generated rows (in {tally.batches} batches)",
            )
        )
    reached = sum(tally.runs[what] for what in ("inserted", "updated", "deleted", "unchanged"))
    if min_changed > 0 and tally.batches and not reached:
        raise AssertionError(
            f"{label}: no change of {tally.batches} batches reached the database "
            f"({tally.describe_database()}), so idempotent and dry run agrees tested nothing "
            "that writes; seed the rows the changes' Refs and Updates need (seed=), or generate "
            "rows whose changes apply"
        )
    return tally


def extractor_properties(*extractors: Extractor, **options: Any) -> Callable[..., None]:
    """A ready test function running :func:`check_extractor` (with ``options``) on each extractor.

    Assign it to a ``test_`` name at module level::

        test_bug_severity_properties = extractor_properties(BugSeverityExtractor(), schema=SCHEMA)

    With several extractors the test is parametrised, one test per extractor (by name).
    """
    if not extractors:
        raise TypeError("extractor_properties needs at least one extractor")
    if len(extractors) == 1:
        (only,) = extractors

        def test_extractor_properties() -> None:
            print(check_extractor(only, **options))  # shown by pytest -rP

        test_extractor_properties.__doc__ = (
            f"{only.name}: total, deterministic, declared, idempotent, dry run"
        )
        return test_extractor_properties

    import pytest  # only here: importing backfill_core.testing must not import pytest

    @pytest.mark.parametrize("extractor", extractors, ids=[x.name for x in extractors])
    def test_each_extractor_properties(extractor: Extractor) -> None:
        print(check_extractor(extractor, **options))  # shown by pytest -rP

    return test_each_extractor_properties
