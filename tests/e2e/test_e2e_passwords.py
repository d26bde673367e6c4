"""A database password never appears in anything backfill prints, whatever goes wrong.

A PostgreSQL server listens on 127.0.0.1:5432 (trust auth); the database named here does
not exist, so the connection fails after the URL has been parsed and the driver loaded.
"""

from __future__ import annotations

import pytest

from support.cli import RunCli, parse_json_output

SECRET = "s3cret"
PG_URL = f"postgresql://someone:{SECRET}@127.0.0.1:5432/no_such_db_xyz"


def _assert_no_secret(proc: object) -> None:
    out, err = proc.stdout, proc.stderr  # type: ignore[attr-defined]
    assert SECRET not in out, out
    assert SECRET not in err, err


@pytest.mark.parametrize(
    "args",
    [
        ["run", "test_features", "-d", PG_URL],
        ["run", "test_features", "bug_attribution", "-d", PG_URL, "--dry-run", "--verbose"],
        ["validate", "-d", PG_URL],
    ],
    ids=["run", "dry-run", "validate"],
)
def test_unreachable_postgres_exits_3_without_the_password(cli: RunCli, args: list[str]) -> None:
    proc = cli(args)

    assert proc.returncode == 3, proc.stdout + proc.stderr
    _assert_no_secret(proc)
    assert "backfill: error:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_password_hidden_in_json_and_from_the_environment(cli: RunCli) -> None:
    proc = cli(["run", "test_features", "--json"], env={"BACKFILL_DATABASE_URL": PG_URL})

    assert proc.returncode == 3, proc.stdout + proc.stderr
    _assert_no_secret(proc)
    assert parse_json_output(proc)["exit_code"] == 3


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://someone:{SECRET}@127.0.0.1:notaport/no_such_db_xyz",
        f"post gres://someone:{SECRET}@127.0.0.1:5432/no_such_db_xyz",
        f"postgresql+nosuchdriver://someone:{SECRET}@127.0.0.1:5432/no_such_db_xyz",
        f"nosuchdialect://someone:{SECRET}@127.0.0.1:5432/no_such_db_xyz",
    ],
    ids=["bad-port", "bad-scheme", "unknown-driver", "unknown-dialect"],
)
def test_malformed_url_exits_3_without_the_password(cli: RunCli, url: str) -> None:
    proc = cli(["run", "test_features", "-d", url])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    _assert_no_secret(proc)
    assert "Traceback" not in proc.stderr
