"""``benchmarks/composite_keys.py`` runs and checks what it measures (issue 16): on a few orders,
both extractors leave the same items, a re-run writes nothing, and a ratio is printed for each
database (PostgreSQL's only when BACKFILL_TEST_POSTGRES_URL names a server).

No timing is asserted here: the script prints the figures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.benchmarks import load_benchmark


def test_the_benchmark_measures_the_same_rows_both_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("composite_keys")
    assert bench.main(["--orders", "40", "--repeat", "2", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    databases = ["SQLite", "PostgreSQL"] if os.environ.get("BACKFILL_TEST_POSTGRES_URL") else ["SQLite"]
    for database in databases:
        for run in (["first", "run"], ["re-run"]):
            row = [database, *run]
            assert any(line.split()[: len(row)] == row for line in out.splitlines()), out
