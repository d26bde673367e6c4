"""``benchmarks/workers.py`` runs and checks what it measures (issue 20): on a few rows, every mode
of the extractor that costs CPU leaves the same table (on PostgreSQL, the distributed run on two
worker processes too), the built-in job leaves the same tables with 1, 2 and 4 workers, and the
ratios, peaks and plot are made for each database (PostgreSQL's only when
BACKFILL_TEST_POSTGRES_URL names a server).

No timing is asserted here: the script prints the figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.benchmarks import BENCHMARKS


def test_the_benchmark_compares_workers_on_the_same_rows(tmp_path: Path) -> None:
    args = ["--rows", "300", "--tests", "60", "--repeat", "1", "--workdir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "workers.py"), *args, "--plot", str(tmp_path / "images")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    out = result.stdout
    databases = ["SQLite", "PostgreSQL"] if os.environ.get("BACKFILL_TEST_POSTGRES_URL") else ["SQLite"]
    for database in databases:
        assert f"{database}: 2 workers / one process = " in out, out
        assert f"{database}: peak RSS main " in out, out
        rates = [line.split() for line in out.splitlines() if line.startswith(database)]
        assert [row for row in rates if row[1:3] == ["2", "workers"]], out  # the CPU-bound job's
        assert [row for row in rates if len(row) == 4 and row[1].isdigit()], out  # the built-in job's
        distributed = [row for row in rates if row[:3] == [database, "2", "distributed"]]  # table rows
        if database == "PostgreSQL":
            assert f"{database}: 2 distributed / one process = " in out, out
            assert f"{database}: peak RSS of the largest distributed worker " in out, out
            assert len(distributed) == 1, out
        else:
            assert not distributed, out  # procrastinate needs PostgreSQL: no row made up
            assert f"{database}: no 2 distributed mode" in out, out
    assert (tmp_path / "images" / "scaling-workers.png").stat().st_size > 10_000
