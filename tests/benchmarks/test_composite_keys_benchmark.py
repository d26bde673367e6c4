"""``benchmarks/composite_keys.py`` runs and checks what it measures (issue 16): on a few orders,
both extractors leave the same items, a re-run writes nothing, and a ratio is printed for each
database (PostgreSQL's only when BACKFILL_TEST_POSTGRES_URL names a server).

No timing is asserted here: the script prints the figures.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "benchmark_composite_keys", ROOT / "benchmarks" / "composite_keys.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_measures_the_same_rows_both_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _load()
    assert bench.main(["--orders", "40", "--repeat", "2", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    databases = ["SQLite", "PostgreSQL"] if os.environ.get("BACKFILL_TEST_POSTGRES_URL") else ["SQLite"]
    for database in databases:
        for run in (["first", "run"], ["re-run"]):
            row = [database, *run]
            assert any(line.split()[: len(row)] == row for line in out.splitlines()), out
