"""``benchmarks/run.py --plot DIR --markdown`` on tiny databases: the batch-size sweep runs (and
checks its tables) on each database, and the performance page's images and tables come out. No
timing is asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.benchmarks import BENCHMARKS, load_benchmark
from support.postgres import SERVER, needs_server

PNG = b"\x89PNG\r\n\x1a\n"


plot = load_benchmark("plot")


def _image_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG, f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_writes_both_images_from_the_figures_given(tmp_path: Path) -> None:
    seconds = {
        database: {
            "set-based SQL": {100: 0.1, 400: 0.3},
            "backfill": {100: 0.5, 400: 0.9},
            "naive ORM": {100: 2.0},
        }
        for database in ("SQLite", "PostgreSQL")
    }
    rates = {"SQLite": {100: 900.0, 500: 1200.0, 5000: 1300.0}, "PostgreSQL": {100: 500.0, 500: 800.0}}
    written = plot.write(tmp_path / "images", seconds, rates, 400)
    assert [p.name for p in written] == [plot.APPROACHES_PNG, plot.BATCH_SIZE_PNG]
    wide, high = _image_size(written[0])
    assert wide > high > 300  # two panels side by side
    assert min(_image_size(written[1])) > 300


@pytest.mark.parametrize(
    "databases",
    [
        pytest.param(("SQLite",), id="sqlite"),
        pytest.param(("SQLite", "PostgreSQL"), id="postgresql", marks=needs_server),
    ],
)
def test_run_sweeps_the_batch_size_and_writes_the_page_s_figures(
    tmp_path: Path, databases: tuple[str, ...]
) -> None:
    run = load_benchmark("run")
    server = ["--postgres", SERVER] if "PostgreSQL" in databases and SERVER else ["--sqlite-only"]
    images = tmp_path / "images"
    args = ["--tests", "40", "--small", "20", "--repeat", "1", "--naive-budget", "0", *server]
    args += ["--workdir", str(tmp_path / "work"), "--plot", str(images), "--markdown"]
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    out = result.stdout
    for database in databases:
        for batch_size in run.BATCH_SIZES:
            assert re.search(rf"^  {database} +40 tests  --batch-size {batch_size} ", out, re.MULTILINE), (
                database,
                batch_size,
            )
    sweep = out.split("tests by --batch-size (medians):\n\n", 1)[1]
    header = " | ".join(f"{d} rows/s | {d} peak MB" for d in databases)
    assert sweep.startswith(f"| --batch-size | {header} |")
    cells = r" \| [\d,]+ \| [\d.]+" * len(databases)
    for batch_size in run.BATCH_SIZES:
        assert re.search(rf"^\| {batch_size:,}{cells} \|$", sweep, re.MULTILINE), batch_size
    for database in databases:
        assert f"\n{database}:\n\n| approach | tests |" in out
    assert sorted(p.name for p in images.iterdir()) == sorted([plot.APPROACHES_PNG, plot.BATCH_SIZE_PNG])
    assert all(_image_size(images / name) for name in (plot.APPROACHES_PNG, plot.BATCH_SIZE_PNG))
