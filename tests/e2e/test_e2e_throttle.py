"""The run's brakes through the real ``backfill`` script: the built-in ``throttles`` plugin's
``--max-replica-lag`` (loaded through the entry point like any plugin), and the options' ranges,
on a SQLite file and on a scratch PostgreSQL database (whose server has no replica).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.backends import GOOD, KINDS, MakeBackend, backends
from support.cli import RunCli

NOT_THROTTLING = {
    "sqlite": "backfill: --max-replica-lag: SQLite has no replicas; not throttling",
    "postgresql": (
        "backfill: --max-replica-lag: the server has no replicas (pg_stat_replication is empty); "
        "not throttling"
    ),
}


@pytest.fixture(params=KINDS)
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    with backends(request.param, tmp_path) as make:
        yield make


def test_max_replica_lag_without_replicas_says_so_once_and_never_waits(
    cli: RunCli, make_db: MakeBackend
) -> None:
    db = make_db([GOOD] * 50)

    proc = cli(
        [
            "run",
            "test_features",
            "bug_attribution",
            "-d",
            db.url,
            "--batch-size",
            "10",
            "--max-replica-lag",
            "0",
            "--no-validate",
            "-q",
        ]
    )

    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines.count(NOT_THROTTLING[db.kind]) == 1  # once for the command: both extractors ran
    assert not [line for line in lines if "waiting" in line]
    assert db.feature_tests() == list(range(1, 51))


def test_without_max_replica_lag_the_throttle_says_nothing(cli: RunCli, make_db: MakeBackend) -> None:
    db = make_db([GOOD] * 5)

    proc = cli(["run", "test_features", "-d", db.url, "--no-validate", "-q"])

    assert proc.returncode == 0, proc.stderr
    assert "replica" not in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--max-rows-per-second", "0"],
        ["--max-rows-per-second", "nan"],
        ["--max-rows-per-second", "-5"],
        ["--sleep-between-batches", "-1"],
        ["--sleep-between-batches", "inf"],
        ["--max-replica-lag", "nan"],
    ],
    ids=["rate-zero", "rate-nan", "rate-negative", "sleep-negative", "sleep-inf", "lag-nan"],
)
def test_a_brake_out_of_range_is_a_usage_error_that_writes_nothing(
    cli: RunCli, make_db: MakeBackend, args: list[str]
) -> None:
    db = make_db([GOOD] * 5)

    proc = cli(["run", "test_features", "-d", db.url, "--no-validate", "-q", *args])

    assert proc.returncode == 2, proc.stderr
    assert f"Invalid value for '{args[0]}'" in proc.stderr
    assert "backfill_runs" not in db.tables()


@pytest.mark.parametrize(
    "args",
    [[], ["--clear", "--max-rows-per-second", "5"], ["--max-rows-per-second", "nan"]],
    ids=["nothing", "clear-and-rate", "nan"],
)
def test_throttle_needs_a_setting_or_clear(cli: RunCli, make_db: MakeBackend, args: list[str]) -> None:
    db = make_db([GOOD] * 5)

    proc = cli(["throttle", "test_features", "-d", db.url, *args])

    assert proc.returncode == 2, proc.stderr
    assert "backfill_controls" not in db.tables()
