"""``benchmarks/compare_trees.py`` runs both trees on the same copies and checks their tables: here
this tree against its own virtualenv, on a small database, each tree's bytecode compiled first as
an install would. No timing is asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support.benchmarks import load_benchmark


def test_both_trees_run_on_the_same_copies_and_ratios_are_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("compare_trees")
    venv = Path(sys.executable).parent.parent
    assert bench.main([str(venv), "--tests", "200", "--repeat", "2", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("repeat 1:") == 2 and out.count("repeat 2:") == 2
    assert out.count("bytecode of backfill_core and backfill_plugins compiled for") == 2  # both trees
    table = out.splitlines()[-3:]
    assert [line.split()[0] for line in table] == ["this", "other", "this/other"]
    for line in table:
        assert all(float(v) > 0 for v in line.split()[-3:])
