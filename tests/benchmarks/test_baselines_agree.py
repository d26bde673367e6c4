"""The benchmark's three approaches leave identical tables (issues 5 and 19): the set-based SQL
baseline, the naive ORM baseline and the real ``backfill`` CLI, on a small synthetic database with
messy rows, on SQLite and on PostgreSQL (where they must also leave what SQLite's set-based SQL
left).

No timing here: ``benchmarks/run.py`` prints the figures.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from backfill_plugins.testmanagement import synthetic
from support.benchmarks import load_benchmark
from support.postgres import needs_server, scratch_database

BACKFILL = Path(sys.executable).parent / "backfill"
TESTS = 150
SCRUBBED = ("BACKFILL_DATABASE_URL", "BACKFILL_LOAD_PLUGINS", "BACKFILL_BUSY_TIMEOUT")


baselines = load_benchmark("baselines")
pg_baselines = load_benchmark("pg_baselines")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "template.db"
    counts = synthetic.build(path, tests=TESTS, messy=0.03)  # 4 or 5 messy tests: one of each kind
    assert counts.messy_tests > 0 and counts.messy_bugs > 0
    path.chmod(0o444)
    return path


def _copy(template: Path, directory: Path, name: str) -> Path:
    path = directory / f"{name}.db"
    shutil.copy(template, path)
    path.chmod(0o644)
    return path


def _scalar(path: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql).fetchone()[0] or 0)
    finally:
        conn.close()


VALID_DATA = "CASE WHEN json_valid(data) THEN data END"
VALID_RAW = "CASE WHEN json_valid(raw_data) THEN raw_data END"
MESSY_KINDS = {
    "test with malformed JSON": "SELECT count(*) FROM tests WHERE NOT json_valid(data)",
    "test with JSON null": "SELECT count(*) FROM tests WHERE data = 'null'",
    "test whose features are not a list": (
        f"SELECT count(*) FROM tests WHERE json_type({VALID_DATA}, '$.features') NOT IN ('array', 'null')"
    ),
    "test with a non-integer feature id": (
        f"SELECT count(*) FROM tests WHERE json_type({VALID_DATA}, '$.features[0].id') = 'text'"
    ),
    "bug with malformed JSON": "SELECT count(*) FROM bugs WHERE NOT json_valid(raw_data)",
    "bug naming a feature that does not exist": (
        f"SELECT count(*) FROM bugs WHERE json_extract({VALID_RAW}, '$.test_feature.id') >= 10000000"
    ),
}


def test_the_data_has_messy_rows_of_every_kind(template: Path) -> None:
    missing = [kind for kind, sql in MESSY_KINDS.items() if _scalar(template, sql) == 0]
    assert not missing, f"no {', '.join(missing)} in the synthetic data: the comparison proves less"


@pytest.mark.parametrize("kind", [pytest.param("sqlite"), pytest.param("postgresql", marks=needs_server)])
def test_set_based_naive_and_backfill_leave_identical_tables(
    kind: str, template: Path, tmp_path: Path
) -> None:
    pristine = baselines.snapshot_digest(template)
    reference = _copy(template, tmp_path, "reference")
    baselines.set_based(reference)
    expected = baselines.snapshot_digest(reference)
    assert expected != pristine, "SQLite's set-based SQL changed nothing"

    with ExitStack() as stack:
        if kind == "sqlite":
            databases = {
                name: str(_copy(template, tmp_path, name)) for name in ("set-based", "naive", "backfill")
            }
            set_based: Callable[[str], None] = baselines.set_based
            naive: Callable[[str], None] = baselines.naive_orm
            digest: Callable[[str], object] = baselines.snapshot_digest
        else:
            databases = {
                name: stack.enter_context(scratch_database(template))
                for name in ("set-based", "naive", "backfill")
            }
            set_based = lambda url: asyncio.run(pg_baselines.set_based(url))  # noqa: E731
            naive = lambda url: asyncio.run(pg_baselines.naive_orm(url))  # noqa: E731
            digest = pg_baselines.snapshot_digest
        assert digest(databases["set-based"]) == pristine, "the copy is not the template"
        set_based(databases["set-based"])
        naive(databases["naive"])
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        cmd = [
            str(BACKFILL),
            "run",
            "test_features",
            "bug_attribution",
            "-d",
            databases["backfill"],
            "--quiet",
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr + done.stdout

        for name, db in databases.items():
            assert digest(db) == expected, f"{kind} {name} differs from SQLite's set-based SQL: " + str(
                baselines.first_difference(reference, db)
                if kind == "sqlite"
                else pg_baselines.first_difference(db, str(reference), read_b=baselines._rows)
            )

    # The result is not trivially empty, and the messy bugs were really left unattributed.
    assert _scalar(reference, "SELECT count(*) FROM test_features") > TESTS
    assert _scalar(reference, "SELECT count(*) FROM bugs WHERE test_feature_id IS NOT NULL") > TESTS
    other_customer = """
        SELECT count(*) FROM bugs b JOIN test_features tf
          ON tf.id = json_extract(CASE WHEN json_valid(b.raw_data) THEN b.raw_data END, '$.test_feature.id')
        WHERE tf.customer_id != b.customer_id AND b.test_feature_id IS NULL"""
    assert _scalar(reference, other_customer) > 0, "no bug names another customer's feature"
