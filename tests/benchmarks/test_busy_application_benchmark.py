"""``benchmarks/busy_application.py`` runs the application beside a backfill and alone, on fresh
copies, and prints its latencies and their ratios, on SQLite and on PostgreSQL. No timing is
asserted: only that every figure is printed and nothing failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.benchmarks import load_benchmark
from support.postgres import SERVER, needs_server


@pytest.mark.parametrize("kind", [pytest.param("sqlite"), pytest.param("postgresql", marks=needs_server)])
def test_latencies_beside_and_alone_are_printed_with_their_ratios(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("busy_application")
    args = ["--tests", "150", "--rate", "200", "--workdir", str(tmp_path), "--", "--batch-size", "50"]
    if kind == "postgresql":
        assert SERVER
        args[:0] = ["--postgres", SERVER]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    kinds = ["sqlite", *(["postgresql"] if kind == "postgresql" else [])]
    assert [line.split(":")[0] for line in out.splitlines() if "application write latency" in line] == kinds
    assert "backfill run options: --batch-size 50" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("  beside", "  alone"))]
    assert [r[0] for r in rows] == ["beside", "alone", "beside/alone"] * len(kinds)
    for beside, alone, ratios in zip(rows[::3], rows[1::3], rows[2::3], strict=True):
        assert int(beside[1]) == int(alone[1]) >= 20
        assert all(float(v) > 0 for v in [*beside[2:], *alone[2:], *ratios[1:]])
