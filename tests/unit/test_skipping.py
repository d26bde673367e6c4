"""Extractors and validators the command chose itself (``run --all``, a bare ``validate``, the
validators of the extractors that ran) step aside when the database lacks one of their tables;
named ones end the command with a message that names them and their plugin. In process, on a
SQLite file and on a scratch PostgreSQL database.

The plugin ``Mixed`` has ``alpha`` (on ``present``), ``beta`` (reads ``absent``), ``gamma``
(its tables are there, but it depends on ``beta``), ``delta`` (a column of ``present`` that
does not exist) and the validators ``counted`` (on ``present``) and ``elsewhere`` (on
``absent``), both covering ``alpha``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import column, func, select, table

from backfill_core import (
    Extractor,
    Metric,
    RunOptions,
    RunReport,
    SchemaMissing,
    Validator,
    hookimpl,
    make_registry,
    resolve_url,
    run_backfill,
    validate_only,
)
from backfill_core.app.run import Skipped
from backfill_core.changes import Change
from backfill_core.errors import NothingToDo
from backfill_core.extractor import Row
from backfill_core.store.database import display
from support.postgres import empty_database, execute, needs_server

DDL = """
CREATE TABLE present (id INTEGER PRIMARY KEY, value INTEGER);
INSERT INTO present VALUES (1, 10), (2, 20);
"""


def _extractor(
    name: str, source: str, columns: Sequence[str] = ("id",), depends_on: Sequence[str] = ()
) -> Any:
    def extract(self: Extractor, row: Row) -> list[Change]:
        return []

    namespace = {
        "name": name,
        "source": source,
        "columns": tuple(columns),
        "writes": {"present": ("id", "value")},
        "depends_on": tuple(depends_on),
        "extract": extract,
    }
    return type(f"X_{name}", (Extractor,), namespace)()


def _validator(name: str, on: str) -> Validator:
    rows = table(on, column("id"))

    class Counted(Validator):
        covers = ("alpha",)
        tables = {on: ("id",)}

        def metrics(self) -> list[Metric]:
            every = select(func.count()).select_from(rows)
            return [Metric("rows", "rows", every.where(rows.c.id > 0), every)]

    Counted.name = name
    return Counted()


class Mixed:
    """The plugin under test (its name in messages: ``Mixed``)."""

    def __init__(self, *names: str) -> None:
        every = {
            "alpha": _extractor("alpha", "present", ("value",)),
            "beta": _extractor("beta", "absent"),
            "gamma": _extractor("gamma", "present", depends_on=("beta",)),
            "delta": _extractor("delta", "present", ("nope",)),
            "counted": _validator("counted", "present"),
            "elsewhere": _validator("elsewhere", "absent"),
        }
        self.items = [every[n] for n in names]

    @hookimpl
    def register_extractors(self, register: Any) -> None:
        for x in self.items:
            if isinstance(x, Extractor):
                register(x)

    @hookimpl
    def register_validators(self, register: Any) -> None:
        for v in self.items:
            if isinstance(v, Validator):
                register(v)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_server)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database holding only ``present``."""
    if request.param == "sqlite":
        path = tmp_path / "mixed.db"
        with sqlite3.connect(path) as conn:
            conn.executescript(DDL)
        conn.close()
        yield str(path)
        return
    with empty_database() as pg:
        asyncio.run(execute(pg, DDL))
        yield pg


def run(
    url: str, names: Sequence[str], *plugin: str, explicit: bool, dry_run: bool = True
) -> tuple[RunReport, list[Skipped], list[str]]:
    registry = make_registry(Mixed(*plugin))
    report = RunReport(database=url)
    skipped: list[Skipped] = []
    said: list[str] = []
    asyncio.run(
        run_backfill(
            registry,
            names,
            resolve_url(url),
            RunOptions(dry_run=dry_run, worker=False),
            report,
            explicit=explicit,
            skipped=skipped,
            announce=said.append,
        )
    )
    return report, skipped, said


def validate(url: str, names: Sequence[str], *plugin: str) -> tuple[RunReport, list[Skipped], list[str]]:
    report = RunReport(database=url)
    skipped: list[Skipped] = []
    said: list[str] = []
    asyncio.run(
        validate_only(
            make_registry(Mixed(*plugin)),
            names,
            resolve_url(url),
            report,
            announce=said.append,
            skipped=skipped,
        )
    )
    return report, skipped, said


def absent(url: str) -> str:
    return f"table 'absent' does not exist in {display(resolve_url(url))}"


def test_run_all_skips_an_absent_table_and_what_depends_on_it(url: str) -> None:
    report, skipped, said = run(
        url,
        ["alpha", "beta", "gamma"],
        "alpha",
        "beta",
        "gamma",
        "counted",
        "elsewhere",
        explicit=False,
        dry_run=False,
    )

    assert skipped == [
        Skipped("extractor", "beta", "Mixed", absent(url)),
        Skipped("extractor", "gamma", "Mixed", "it depends on extractor 'beta', which was skipped"),
        Skipped("validator", "elsewhere", "Mixed", absent(url)),
    ]
    assert said == [str(s) for s in skipped]
    assert said[0] == f"skipped extractor 'beta' (plugin Mixed): {absent(url)}"
    assert [s.name for s in report.extractors] == ["alpha"]
    assert report.extractors[0].processed == 2
    assert [(m.validator, m.name, m.passed) for m in report.validation or []] == [("counted", "rows", True)]
    assert skipped[0].to_dict() == {
        "kind": "extractor",
        "name": "beta",
        "plugin": "Mixed",
        "reason": absent(url),
    }


def test_a_named_extractor_whose_table_is_absent_ends_the_run(url: str) -> None:
    with pytest.raises(SchemaMissing) as info:
        run(url, ["alpha", "beta"], "alpha", "beta", explicit=True)

    assert str(info.value) == (
        f"{absent(url)}; extractor 'beta' (plugin Mixed) reads it. Create it (run the application's "
        "migrations) before backfilling, or, if this database is another application's, leave 'beta' out "
        "(`backfill run --all` skips it) or disable its plugin (BACKFILL_DISABLE_PLUGINS=Mixed)"
    )
    assert info.value.exit_code == 3


def test_a_missing_column_is_never_skipped(url: str) -> None:
    """A table that is there but lacks a column is the application's, behind on its migrations."""
    with pytest.raises(SchemaMissing) as info:
        run(url, ["alpha", "delta"], "alpha", "delta", explicit=False)

    assert str(info.value) == (
        f"table 'present' has no column 'nope' in {display(resolve_url(url))}; extractor 'delta' "
        "(plugin Mixed) reads it. Add it (run the application's migrations) before backfilling"
    )


def test_when_every_extractor_is_skipped_there_is_nothing_to_do(url: str) -> None:
    with pytest.raises(NothingToDo) as info:
        run(url, ["beta", "gamma"], "beta", "gamma", explicit=False)

    assert info.value.exit_code == 3
    assert str(info.value).startswith("nothing to run: every extractor was skipped, since ")
    assert [s["name"] for s in info.value.skipped] == ["beta", "gamma"]


def test_validation_says_why_when_its_validators_were_all_skipped(url: str) -> None:
    report, skipped, _ = run(url, ["alpha"], "alpha", "elsewhere", explicit=True, dry_run=False)

    assert [s.name for s in skipped] == ["elsewhere"]  # chosen for alpha, not named
    assert report.validation is None
    assert report.validation_skipped == "the validators of these extractors lack their tables"


def test_a_bare_validate_skips_and_a_named_one_does_not(url: str) -> None:
    report, skipped, said = validate(url, [], "counted", "elsewhere")

    assert skipped == [Skipped("validator", "elsewhere", "Mixed", absent(url))]
    assert said == [f"skipped validator 'elsewhere' (plugin Mixed): {absent(url)}"]
    assert [m.validator for m in report.validation or []] == ["counted"]
    with pytest.raises(SchemaMissing) as info:
        validate(url, ["elsewhere", "counted"], "counted", "elsewhere")
    assert str(info.value) == (
        f"{absent(url)}; validator 'elsewhere' (plugin Mixed) reads it. Create it (run the application's "
        "migrations) before validating, or, if this database is another application's, leave 'elsewhere' "
        "out (a bare `backfill validate` skips it) or disable its plugin (BACKFILL_DISABLE_PLUGINS=Mixed)"
    )
    with pytest.raises(NothingToDo) as nothing:
        validate(url, [], "elsewhere")
    assert str(nothing.value).startswith("nothing to validate: every validator was skipped, since ")
    assert nothing.value.skipped == [Skipped("validator", "elsewhere", "Mixed", absent(url)).to_dict()]
