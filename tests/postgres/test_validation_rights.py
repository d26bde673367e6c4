"""The built-in job validates on any PostgreSQL server as a user with only an application's
rights: no CREATE on the database or on schema ``public``. Before PostgreSQL 16 the JSON metrics
need a temporary function, so the TEMPORARY right (which PUBLIC has unless it is revoked); without
it a run stops before writing, and validate says why, and what to grant.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill_plugins.testmanagement import synthetic
from support.cli import RunCli, parse_json_output, run_cli
from support.postgres import application_role, fetch, needs_server, scratch_database

pytestmark = needs_server
JOB = ["test_features", "bug_attribution"]
TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rights") / "source.db"
    synthetic.build(path, tests=60, seed=11)
    return path


@pytest.fixture
def pg_url(source: Path) -> Iterator[str]:
    with scratch_database(source) as url:
        yield url


@pytest.fixture
def cli() -> RunCli:
    return run_cli


def _rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return asyncio.run(fetch(url, sql, *args))


def _version(url: str) -> int:
    return int(_rows(url, "SELECT current_setting('server_version_num')")[0][0])


def _metrics(proc: Any) -> dict[str, tuple[int, int]]:
    return {m["metric"]: (m["numerator"], m["denominator"]) for m in parse_json_output(proc)["validation"]}


def test_validate_as_a_user_who_may_only_read_the_tables(
    cli: RunCli, pg_url: str, source: Path, tmp_path: Path
) -> None:
    lite = tmp_path / "lite.db"
    shutil.copy(source, lite)
    for database in (str(lite), pg_url):
        assert cli(["run", *JOB, "-d", database, "-q", "--no-validate"]).returncode == 0
    on_sqlite = cli(["validate", "-d", str(lite), "--json"])

    with application_role(pg_url, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}") as as_app:
        role = as_app.split("://", 1)[1].split("@", 1)[0]
        rights = _rows(
            pg_url,
            "SELECT has_database_privilege($1, current_database(), 'CREATE'), "
            "has_schema_privilege($1, 'public', 'CREATE'), has_table_privilege($1, 'bugs', 'UPDATE')",
            role,
        )
        proc = cli(["validate", "-d", as_app, "--json"])

    assert rights == [(False, False, False)]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _metrics(proc) == _metrics(on_sqlite)
    assert _metrics(proc)["bugs_attributed"][1] > 0
    assert _metrics(proc)["features_accounted"][1] > 0


def test_a_run_without_the_temporary_right_stops_before_writing_where_the_server_needs_it(
    cli: RunCli, pg_url: str
) -> None:
    """docs/cli.md, exit 3: a validator query that cannot run here is found before the run writes."""
    grants = "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; "
    grants += "GRANT CREATE ON SCHEMA public TO {role}"  # for the ledger's tables
    before = _rows(pg_url, TABLES)

    with application_role(pg_url, grants, temporary=False) as as_app:
        proc = cli(["run", *JOB, "-d", as_app, "-q", "--json"])
        written = _rows(pg_url, "SELECT count(*) FROM test_features")[0][0]
        tables = _rows(pg_url, TABLES)

    if _version(pg_url) >= 160000:  # pg_input_is_valid: nothing to create
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert written > 0
        return
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert parse_json_output(proc)["exit_code"] == 3
    database = pg_url.rsplit("/", 1)[1]
    assert "validator 'coverage' cannot compute 'bugs_attributed' on postgresql+asyncpg://" in proc.stderr
    assert "permission denied to create temporary tables" in proc.stderr
    assert f'GRANT TEMPORARY ON DATABASE "{database}" TO "backfill_app_' in proc.stderr
    assert "(`backfill run --no-validate` skips validation)" in proc.stderr
    assert (written, tables) == (0, before)


def test_validate_without_the_temporary_right_says_what_to_grant_or_leave_out(
    cli: RunCli, pg_url: str
) -> None:
    with application_role(
        pg_url, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}", temporary=False
    ) as as_app:
        proc = cli(["validate", "-d", as_app])

    if _version(pg_url) >= 160000:
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # the metrics, as they are
        return
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "validator 'coverage' could not compute" in proc.stderr
    assert "GRANT TEMPORARY ON DATABASE" in proc.stderr
    assert "--no-validate" not in proc.stderr
    assert (
        "(leave 'coverage' out: `backfill validate NAME...` validates only the validators named)"
        in proc.stderr
    )
