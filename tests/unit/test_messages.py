"""Messages that say what is wrong and what to do: declarations, --threshold on informational
metrics, validate's way around a metric it cannot compute, a missing PostgreSQL database, and the
public API that list-plugins is built on.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import column, func, select, table

import backfill_core
from backfill_core import (
    Database,
    DatabaseUnavailable,
    EnvironmentProblem,
    Extractor,
    Metric,
    UsageError,
    Validator,
    resolve_url,
)
from backfill_core.app.validation import check_thresholds, run_validators
from backfill_core.changes import Change
from backfill_core.extractor import Row
from support.postgres import SERVER, empty_database, execute, needs_server

# -- declarations ------------------------------------------------------------------------------


def _extractor(**attrs: Any) -> Extractor:
    def extract(self: Extractor, row: Row) -> list[Change]:
        return []

    namespace = {"name": "x", "source": "s", "columns": ("id",), "writes": {"t": ("id",)}, "extract": extract}
    return type("X", (Extractor,), {**namespace, **attrs})()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("attrs", "problem"),
    [
        ({"columns": "id"}, "columns must be a sequence of names, not a string"),
        ({"depends_on": "other"}, "depends_on must be a sequence of names, not a string"),
        (
            {"columns": "id", "depends_on": "other"},
            "columns and depends_on must be sequences of names, not a string",
        ),
    ],
    ids=["columns", "depends_on", "both"],
)
def test_a_string_declaration_is_named_alone(attrs: dict[str, str], problem: str) -> None:
    assert _extractor(**attrs).declaration_problems() == [problem]
    assert _extractor().declaration_problems() == []


# -- --threshold on metrics that have none -----------------------------------------------------------

t = table("t", column("a"))
EVERY = select(func.count()).select_from(t)


class Shop(Validator):
    name = "shop"
    tables = {"t": ("a",)}

    def __init__(self, *metrics: Metric) -> None:
        self._metrics = metrics

    def metrics(self) -> Sequence[Metric]:
        return self._metrics


GRADED = Metric("graded", "d", EVERY.where(t.c.a > 1), EVERY, threshold=0.5)
INFO = Metric("info", "d", EVERY.where(t.c.a > 2), EVERY, threshold=None)
INFO_TOO = Metric("info_too", "d", EVERY.where(t.c.a > 3), EVERY, threshold=None)


def refusal(validators: Sequence[Validator], *names: str, **extra: Any) -> str:
    with pytest.raises(UsageError) as info:
        check_thresholds(validators, dict.fromkeys(names, 0.5), **extra)
    assert info.value.exit_code == 2
    return str(info.value)


def test_a_threshold_for_an_informational_metric_says_it_is_informational() -> None:
    shop = Shop(GRADED, INFO, INFO_TOO)

    assert refusal([shop], "shop.info") == (
        "--threshold shop.info: that metric is informational (shown as info, never failing), "
        "so there is no threshold to set"
    )
    assert refusal([shop], "shop.info", "shop.info_too").startswith(
        "--threshold shop.info, shop.info_too: those metrics are informational"
    )
    assert refusal([shop], "shop.info", "shop.nope") == (
        "--threshold shop.info: that metric is informational (shown as info, never failing), so there is "
        "no threshold to set; names no metric being validated: shop.nope (known: shop, shop.graded)"
    )
    check_thresholds([shop], {"shop.graded": 0.5, "shop": 0.7})  # these are fine


def test_a_threshold_for_a_validator_with_only_informational_metrics_says_so() -> None:
    assert refusal([Shop(INFO)], "shop") == (
        "--threshold shop: that validator has only informational metrics, so there is no threshold to set"
    )


def test_a_threshold_for_a_skipped_validator_says_why() -> None:
    assert refusal(
        [], "coverage.tests_with_features", skipped={"coverage": "table 'tests' does not exist"}
    ) == (
        "--threshold coverage.tests_with_features: validator 'coverage' was skipped "
        "(table 'tests' does not exist)"
    )


# -- a metric query that fails: what validate suggests ---------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_server)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with ``t(a)`` holding 1, 2, 3."""
    ddl = "CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1), (2), (3);"
    if request.param == "sqlite":
        path = tmp_path / "t.db"
        with sqlite3.connect(path) as conn:
            conn.executescript(ddl)
        conn.close()
        yield str(path)
        return
    with empty_database() as pg:
        asyncio.run(execute(pg, ddl))
        yield pg


def failure(url: str, validators: Sequence[Validator], command: str) -> str:
    async def go() -> None:
        async with Database(resolve_url(url)) as db:
            await run_validators(db, validators, command=command)

    with pytest.raises(EnvironmentProblem) as info:
        asyncio.run(go())
    assert info.value.exit_code == 3
    return str(info.value)


class Other(Validator):
    name = "other"

    def metrics(self) -> Sequence[Metric]:
        return [GRADED]


BROKEN = Metric("broken", "d", EVERY.where(column("nope") > 1), EVERY)


def test_a_metric_validate_cannot_compute_suggests_what_validate_can_do(url: str) -> None:
    alone = failure(url, [Shop(BROKEN)], "validate")
    beside = failure(url, [Shop(BROKEN), Other()], "validate")
    in_a_run = failure(url, [Shop(BROKEN)], "run")

    assert alone.startswith("validator 'shop' could not compute 'broken': ")
    assert alone.endswith(
        "(leave 'shop' out: `backfill validate NAME...` validates only the validators named)"
    )
    assert beside.endswith("(`backfill validate other` validates without 'shop')")
    assert "--no-validate" not in alone + beside
    assert in_a_run.endswith("(`backfill run --no-validate` skips validation)")


def test_a_validator_table_missing_in_validate_says_before_validating(url: str) -> None:
    class Elsewhere(Validator):
        name = "elsewhere"
        tables = {"absent": ("id",)}

        def metrics(self) -> Sequence[Metric]:
            return []

    message = failure(url, [Elsewhere()], "validate")

    assert message.startswith("table 'absent' does not exist in ")
    assert message.endswith(
        "; validator 'elsewhere' reads it. Create it (run the application's migrations) before validating"
    )


# -- a PostgreSQL database that does not exist ----------------------------------------------------


@pytest.mark.parametrize("kind", [pytest.param("postgresql", marks=needs_server)])
def test_a_missing_postgresql_database_is_named_with_what_to_do(kind: str) -> None:
    assert SERVER
    url = resolve_url(SERVER.rsplit("/", 1)[0] + "/backfill_absent_db")

    async def go() -> None:
        async with Database(url):
            pass

    with pytest.raises(DatabaseUnavailable) as info:
        asyncio.run(go())

    message = str(info.value)
    assert message.startswith(f"could not connect to {url.render_as_string(hide_password=True)}: ")
    assert 'database "backfill_absent_db" does not exist' in message
    assert message.endswith(
        "(the database 'backfill_absent_db' named in the URL does not exist on that server; create it "
        "(`createdb backfill_absent_db`) and the application's tables, or fix the URL)"
    )
    assert "migrations" not in message


@pytest.mark.parametrize("kind", [pytest.param("postgresql", marks=needs_server)])
def test_a_missing_postgresql_user_is_named_with_what_to_do(kind: str) -> None:
    assert SERVER
    url = resolve_url(SERVER).set(username="backfill_no_such_role")

    async def go() -> None:
        async with Database(url):
            pass

    with pytest.raises(DatabaseUnavailable) as info:
        asyncio.run(go())

    assert str(info.value).endswith(
        "(the user named in the URL does not exist on that server; fix the URL or create the role)"
    )


# -- the public API ----------------------------------------------------------------------------------------


def test_plugin_info_is_exported() -> None:
    from backfill_core.plugins import PluginInfo

    assert backfill_core.PluginInfo is PluginInfo
    assert "PluginInfo" in backfill_core.__all__
