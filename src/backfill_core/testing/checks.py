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
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from backfill_core.changes import Change, Ref, Skip, checked, fields
from backfill_core.database import resolve_url
from backfill_core.engine import RunOptions
from backfill_core.errors import RecordError
from backfill_core.extractor import Extractor, Row
from backfill_core.hookspecs import hookimpl
from backfill_core.plugins import make_registry
from backfill_core.report import ExtractorStats, RunReport
from backfill_core.run import run_backfill
from backfill_core.testing import strategies
from backfill_core.testing.database import (
    Rows,
    Schema,
    create_database,
    insert_rows,
    quote_name,
    snapshot,
)

__all__ = [
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


def check_total(extractor: Extractor, row: Row) -> list[Change | Skip] | None:
    """``extract(row)`` returns an iterable of changes or raises RecordError, nothing else.

    Returns the changes as a list, or None when the row was rejected with a RecordError (whose
    ``kind`` and message must be non-empty text).
    """
    label = _label(extractor)
    try:
        result = extractor.extract(row)
    except RecordError as e:
        _check_record_error(label, e, row)
        return None
    except Exception as e:
        raise AssertionError(
            f"{label} raised {type(e).__name__}: {e} on row {_show(row)}; extract may raise only "
            "RecordError (say what is wrong with the row, with a kind)"
        ) from e
    if result is None or isinstance(result, str | bytes | Mapping) or not isinstance(result, Iterable):
        raise AssertionError(
            f"{label} returned {_show(result)} for row {_show(row)}, not a list of changes "
            "(return [] when the row yields nothing)"
        )
    try:
        return list(result)
    except RecordError as e:
        _check_record_error(label, e, row)
        return None
    except Exception as e:
        raise AssertionError(
            f"{label}'s result raised {type(e).__name__}: {e} while iterated, on row {_show(row)}; "
            "only RecordError may be raised"
        ) from e


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


def check_deterministic(extractor: Extractor, row: Row) -> None:
    """The same row gives the same changes (or the same RecordError) every time, and ``extract``
    leaves the row it was given as it was."""
    label = _label(extractor)
    original = copy.deepcopy(dict(row))
    given_row = copy.deepcopy(original)
    first = _outcome(extractor, given_row)
    if given_row != original:
        raise AssertionError(
            f"{label} changed the row it was given: {_show(original)} became {_show(given_row)}"
        )
    second = _outcome(extractor, copy.deepcopy(original))
    if first != second:
        raise AssertionError(
            f"{label} is not deterministic on row {_show(original)}: first {_show(first)}, "
            f"then {_show(second)}; extract must be a pure function of the row (no clock, "
            "randomness, counters or I/O)"
        )


def check_declared(extractor: Extractor, row: Row) -> None:
    """Every change is an Upsert or Update that touches only tables and columns in
    ``extractor.writes``, has a key, requires only ``Ref`` objects, and can be pickled (the
    extraction worker sends changes to the engine that way), or a Skip with a kind."""
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

    @classmethod
    def of(cls, s: ExtractorStats) -> _Counts:
        record = {kind: n for (tier, kind), n in sorted(s.errors.items()) if tier == "record"}
        written = sum(n for (tier, _kind), n in s.errors.items() if tier != "record")
        return cls(s.inserted, s.updated, s.unchanged, record, written)

    def __str__(self) -> str:
        return (
            f"{self.inserted} inserted, {self.updated} updated, {self.unchanged} unchanged, "
            f"record errors {self.record_errors or 'none'}, {self.write_errors} write errors"
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


def _database_checks(
    extractor: Extractor,
    rows: Iterable[Row],
    database_path: Path | str,
    *,
    schema: Schema | None,
    seed: Rows | None,
    idempotent: bool,
    dry_run: bool,
) -> None:
    label = _label(extractor)
    path = create_database(database_path, schema if schema is not None else extractor, seed)
    conn = sqlite3.connect(path)
    try:
        kept = insert_rows(conn, extractor.source_table, rows, skip_rejected=True, fill_required=True)
        conn.commit()
        cols = extractor.read_columns
        stored = conn.execute(  # the rows as extract sees them, after SQLite's type affinity
            f"SELECT {', '.join(map(quote_name, cols))} FROM {quote_name(extractor.source_table)} "
            f"ORDER BY {quote_name(extractor.key)}"
        ).fetchall()
    finally:
        conn.close()
    shown = _show([dict(zip(cols, r, strict=True)) for r in stored])
    batch = max(len(kept), 1)
    dry = None
    if dry_run:
        before = path.read_bytes()
        dry = _Counts.of(run_once(extractor, path, dry_run=True, batch_size=batch))
        if path.read_bytes() != before:
            raise AssertionError(
                f"a dry run of {label} changed the database file, over rows {shown}; "
                "extract must do no I/O, and a dry run must write nothing"
            )
    stats = run_once(extractor, path, batch_size=batch)
    real = _Counts.of(stats)
    if stats.processed != len(kept):
        raise AssertionError(f"the run of {label} processed {stats.processed} of {len(kept)} rows {shown}")
    if dry is not None:
        if real.write_errors == 0:
            agree = (dry.inserted, dry.updated, dry.unchanged, dry.record_errors) == (
                real.inserted,
                real.updated,
                real.unchanged,
                real.record_errors,
            )
        else:  # the database refused some writes, which a dry run cannot foresee
            agree = dry.inserted + dry.updated >= real.inserted + real.updated
        if not agree:
            raise AssertionError(
                f"the dry run of {label} disagrees with the real run over rows {shown}: "
                f"dry run {dry}; real run {real}"
            )
    if idempotent:
        first = snapshot(path)
        again = _Counts.of(run_once(extractor, path, batch_size=batch))
        second = snapshot(path)
        if again.inserted or again.updated or first != second:
            raise AssertionError(
                f"{label} is not idempotent: a second run over the same rows {shown} inserted "
                f"{again.inserted} and updated {again.updated} rows (expected none) after a first run "
                f"with {real}. Changed: {_diff(first, second) or 'nothing'}"
            )


def check_idempotent(
    extractor: Extractor,
    rows: Iterable[Row],
    database_path: Path | str,
    *,
    schema: Schema | None = None,
    seed: Rows | None = None,
) -> None:
    """Applying a batch of rows twice leaves the database as applying it once.

    Creates a new SQLite file at ``database_path`` with ``schema`` (default: the extractor's
    model classes, see :func:`~backfill_core.testing.database.tables_of`), inserts ``seed``
    (rows by table) and ``rows`` into the source table (rows its constraints refuse are left
    out), runs the extractor twice through the real engine in one batch, and checks that the
    second run inserted and updated nothing and that every table is as the first run left it.
    """
    _database_checks(extractor, rows, database_path, schema=schema, seed=seed, idempotent=True, dry_run=False)


def check_dry_run_agrees(
    extractor: Extractor,
    rows: Iterable[Row],
    database_path: Path | str,
    *,
    schema: Schema | None = None,
    seed: Rows | None = None,
) -> None:
    """A dry run leaves the file byte for byte as it was and predicts the real run: the same
    would-insert, would-update, unchanged and record-error counts. (When the database refuses
    some writes, which a dry run cannot foresee, the dry run must predict at least as many.)

    The database is set up as by :func:`check_idempotent`.
    """
    _database_checks(extractor, rows, database_path, schema=schema, seed=seed, idempotent=False, dry_run=True)


# -- everything, under hypothesis --------------------------------------------------------------------


def check_extractor(
    extractor: Extractor,
    *,
    schema: Schema | None = None,
    seed: Rows | None = None,
    rows: SearchStrategy[dict[str, Any]] | None = None,
    max_examples: int = 100,
    database_examples: int | None = None,
    max_batch: int = 20,
) -> None:
    """Put ``extractor`` through every property check, with rows generated by hypothesis.

    - total, deterministic and declared on ``max_examples`` rows from ``rows`` (default:
      :func:`~backfill_core.testing.strategies.rows`, arbitrary values in every column);
    - idempotent and dry run agrees on ``database_examples`` batches of up to ``max_batch`` such
      rows (default: a fifth of ``max_examples``, at least 5), each in a new temporary SQLite
      file built from ``schema`` and ``seed`` as :func:`check_idempotent` describes.

    Raises AssertionError. Hypothesis shrinks a failing row to a small one; a failing batch is
    not shrunk (each attempt runs the engine three times) but reduced to one of its rows when
    a row fails on its own.
    Call it from a plain test function, not from inside another ``@given`` test.
    """
    problems = extractor.declaration_problems()
    if problems:
        raise AssertionError(f"{_label(extractor)} has invalid declarations: {'; '.join(problems)}")
    strategy = rows if rows is not None else strategies.rows(extractor)

    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        report_multiple_bugs=False,
    )
    @given(row=strategy)
    def pure_properties(row: dict[str, Any]) -> None:
        check_total(extractor, row)
        check_deterministic(extractor, row)
        check_declared(extractor, row)

    pure_properties()

    examples = database_examples if database_examples is not None else max(5, max_examples // 5)
    if examples <= 0:
        return
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
            _in_temporary_database(batch)
        except AssertionError:
            for row in batch if len(batch) > 1 else ():
                try:
                    _in_temporary_database([row])
                except AssertionError as alone:
                    raise alone from None  # the smallest failing batch: one row
            raise

    def _in_temporary_database(batch: list[dict[str, Any]]) -> None:
        with tempfile.TemporaryDirectory(prefix="backfill-check-") as tmp:
            _database_checks(
                extractor,
                batch,
                Path(tmp) / "check.db",
                schema=schema,
                seed=seed,
                idempotent=True,
                dry_run=True,
            )

    database_properties()


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
            check_extractor(only, **options)

        test_extractor_properties.__doc__ = (
            f"{only.name}: total, deterministic, declared, idempotent, dry run"
        )
        return test_extractor_properties

    import pytest  # only here: importing backfill_core.testing must not import pytest

    @pytest.mark.parametrize("extractor", extractors, ids=[x.name for x in extractors])
    def test_each_extractor_properties(extractor: Extractor) -> None:
        check_extractor(extractor, **options)

    return test_each_extractor_properties
