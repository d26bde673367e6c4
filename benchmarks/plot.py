"""The benchmark's figures as images for the performance page (matplotlib, the ``bench`` extra).

``run.py --plot DIR`` calls ``write`` with its own medians: ``performance-approaches.png`` shows
the seconds each approach took at each size, one panel per database; ``performance-batch-size.png``
shows backfill's rows per second against ``--batch-size`` on each database. ``workers.py --plot
DIR`` calls ``scaling``: ``scaling-workers.png`` shows rows per second by number of workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write files only, chosen before pyplot is imported

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

APPROACHES_PNG = "performance-approaches.png"
BATCH_SIZE_PNG = "performance-batch-size.png"
DPI = 110
DEFAULT_BATCH_SIZE = 500

Seconds = Mapping[str, Mapping[str, Mapping[int, float]]]
"""database -> approach -> tests -> median seconds."""
Rates = Mapping[str, Mapping[int, float]]
"""database -> batch size -> median source rows per second."""


def write(directory: Path, seconds: Seconds, rates: Rates, sweep_tests: int) -> list[Path]:
    """Both images in ``directory`` (made if missing); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    approaches_png, batch_png = directory / APPROACHES_PNG, directory / BATCH_SIZE_PNG
    approaches(approaches_png, seconds)
    batch_sizes(batch_png, rates, sweep_tests)
    return [approaches_png, batch_png]


def approaches(path: Path, seconds: Seconds) -> None:
    """Grouped bars: per database a panel, per approach a group, per size a bar (log seconds)."""
    databases = list(seconds)
    fig, axes = plt.subplots(
        1, len(databases), figsize=(5.6 * len(databases), 4.6), sharey=True, squeeze=False
    )
    top = max(
        s for by_approach in seconds.values() for by_size in by_approach.values() for s in by_size.values()
    )
    bottom = min(
        s for by_approach in seconds.values() for by_size in by_approach.values() for s in by_size.values()
    )
    for ax, database in zip(axes[0], databases, strict=True):
        _bars(ax, seconds[database])
        ax.set_title(database)
        ax.set_yscale("log")
        ax.set_ylim(bottom / 2, top * 3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(axis="y", which="major", alpha=0.3)
    axes[0][0].set_ylabel("seconds (log scale, lower is better)")
    fig.suptitle("backfill run test_features bug_attribution, against the baselines")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _bars(ax: Axes, by_approach: Mapping[str, Mapping[int, float]]) -> None:
    names = list(by_approach)
    sizes = sorted({tests for by_size in by_approach.values() for tests in by_size})
    width = 0.8 / len(sizes)
    for n, tests in enumerate(sizes):
        xs = [
            i + (n - (len(sizes) - 1) / 2) * width
            for i, name in enumerate(names)
            if tests in by_approach[name]
        ]
        ys = [by_approach[name][tests] for name in names if tests in by_approach[name]]
        bars = ax.bar(xs, ys, width, label=f"{tests:,} tests")
        ax.bar_label(bars, labels=[_seconds(y) for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(names)), [_wrap(name) for name in names], fontsize=8)
    ax.legend(fontsize=8, loc="upper left")


def batch_sizes(path: Path, rates: Rates, tests: int) -> None:
    """Rows per second of a first run against the batch size, a line per database (log x)."""
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    for n, (database, by_size) in enumerate(rates.items()):
        xs = sorted(by_size)
        ys = [by_size[x] for x in xs]
        ax.plot(xs, ys, marker="o", label=database)
        offset = (0, 7) if n % 2 == 0 else (0, -13)  # two lines close together keep their labels apart
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(
                f"{y:,.0f}", (x, y), textcoords="offset points", xytext=offset, ha="center", fontsize=7
            )
    if DEFAULT_BATCH_SIZE in {size for by_size in rates.values() for size in by_size}:
        ax.axvline(DEFAULT_BATCH_SIZE, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            "default",
            (DEFAULT_BATCH_SIZE, 0),
            textcoords="offset points",
            xytext=(3, 4),
            fontsize=7,
            color="grey",
        )
    every = sorted({size for by_size in rates.values() for size in by_size})
    ax.set_xscale("log")
    ax.set_xticks(every, [f"{size:,}" for size in every])
    ax.minorticks_off()
    ax.set_ylim(0, max(y for by_size in rates.values() for y in by_size.values()) * 1.15)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("--batch-size (source rows per transaction)")
    ax.set_ylabel("source rows per second (higher is better)")
    ax.set_title(f"backfill's first run at {tests:,} tests, by batch size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _wrap(name: str) -> str:
    """An approach's name on two lines, broken where it reads naturally."""
    for sep, broken in ((", ", ",\n"), (" --", "\n--"), (" ", "\n")):
        if sep in name:
            return name.replace(sep, broken, 1)
    return name


SCALING_PNG = "scaling-workers.png"
Panels = Mapping[str, Mapping[str, Mapping[str, float]]]
"""panel title -> database -> mode (``one process``, ``--workers 2``, ...) -> median rows per second."""


def scaling(directory: Path, panels: Panels) -> Path:
    """``workers.py --plot DIR``'s image: rows per second by mode, a panel per job, a group of
    bars per database."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SCALING_PNG
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), squeeze=False)
    for ax, (title, by_database) in zip(axes[0], panels.items(), strict=True):
        modes = list(dict.fromkeys(mode for by_mode in by_database.values() for mode in by_mode))
        width = 0.8 / len(modes)
        for n, mode in enumerate(modes):
            xs = [
                i + (n - (len(modes) - 1) / 2) * width
                for i, d in enumerate(by_database)
                if mode in by_database[d]
            ]
            ys = [by_mode[mode] for by_mode in by_database.values() if mode in by_mode]
            bars = ax.bar(xs, ys, width, label=mode)
            ax.bar_label(bars, labels=[f"{y:,.0f}" for y in ys], fontsize=7, padding=2)
        ax.set_xticks(range(len(by_database)), list(by_database), fontsize=9)
        ax.set_ylim(0, max(y for by_mode in by_database.values() for y in by_mode.values()) * 1.3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_ylabel("source rows per second (higher is better)")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", ncol=len(modes))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
