"""The issue 20 benchmark: ``--workers N`` against one process, on SQLite and on PostgreSQL.

    python benchmarks/workers.py [--rows 20000] [--tests 10000] [--repeat 3] [--workdir DIR]
        [--postgres URL | --sqlite-only] [--plot DIR]

Part 1, an extractor that costs CPU: ``items(id, payload)`` becomes ``digests(item_id, digest)``,
and ``extract`` hashes each payload ROUNDS times (about half a millisecond a row; the cost this
machine measures is printed). Each run is a child process of its own (``--child``) on an empty
``digests`` and ledger, timed from the start of the run to its end: one process (``--no-worker``),
the default (``--workers 1``: on SQLite one worker extracts while the main process writes), and
``--workers 2``. Printed: rows per second, the ratio of ``--workers 2`` to one process (the median
of each repeat's own ratio, its runs back to back: this machine's speed drifts within minutes),
with the target (>= 1.6) as PASS/FAIL, and the peak RSS of the main process and of its largest
worker (target < 150 MB each). Every run must leave the same ``digests`` (exit 1 if not).

Part 2, the built-in job (``backfill run test_features bug_attribution``) on the synthetic
database of ``--tests`` tests, with 1, 2 and 4 workers: source rows per second, for machines with
more cores than this one's two. Its tables must be the same whatever the workers (exit 1 if not).

``--plot DIR`` writes both parts' medians as ``scaling-workers.png`` (``plot.scaling``). Every
figure printed comes from this run's measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pg_copies
import run as builtin
from targets import PostgresTarget, SqliteTarget, Target

from backfill_core import (
    Extractor,
    RunOptions,
    RunReport,
    Upsert,
    hookimpl,
    make_registry,
    resolve_url,
    run_backfill,
)
from backfill_core.engine.stats import ErrorLog

HERE = Path(__file__).resolve().parent
ROUNDS = 1000
"""SHA-256 rounds per row: about half a millisecond of CPU on the machine the targets were set on."""
SCHEMA = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
    "CREATE TABLE digests (item_id INTEGER PRIMARY KEY, digest TEXT NOT NULL)",
)
MODES = {"one process": ("--no-worker", 1), "default": ("--worker", 1), "2 workers": ("--worker", 2)}
"""What each mode runs with: ``--no-worker``, the default (``--workers 1``), ``--workers 2``."""
TARGET_RATIO = 1.6
TARGET_MB = 150.0
BUILTIN_WORKERS = (1, 2, 4)


def digest(payload: str) -> str:
    h = payload.encode()
    for _ in range(ROUNDS):
        h = hashlib.sha256(h).digest()
    return h.hex()


class Digest(Extractor):
    """Each item's payload hashed ROUNDS times: an extractor that costs CPU."""

    name = "digest"
    source = "items"
    columns = ("id", "payload")
    writes = {"digests": ("item_id", "digest")}

    def extract(self, row: Any) -> list[Upsert]:
        return [Upsert("digests", {"item_id": row["id"]}, {"digest": digest(row["payload"])})]


class Plugin:
    @hookimpl
    def register_extractors(self, register: Callable[[Extractor], None]) -> None:
        register(Digest())


# --- one measured run, in a child process of its own -----------------------------------------------


def child(url: str, flag: str, workers: int) -> None:
    """Run ``digest`` once and print its seconds, processed rows and peaks as JSON."""
    options = RunOptions(worker=flag == "--worker", workers=workers)
    report = RunReport(database=url, dry_run=False, errors=ErrorLog(keep=10))
    started = time.perf_counter()
    asyncio.run(run_backfill(make_registry(Plugin()), ["digest"], resolve_url(url), options, report))
    seconds = time.perf_counter() - started
    (stats,) = report.extractors
    peaks = [
        resource.getrusage(who).ru_maxrss * 1024 / 1e6
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    ]
    print(
        json.dumps({"seconds": seconds, "rows": stats.inserted, "errors": stats.error_count, "peaks": peaks})
    )


@dataclass
class Run:
    seconds: float
    rows: int
    main_mb: float
    worker_mb: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def measured(url: str, mode: str) -> Run:
    flag, workers = MODES[mode]
    proc = subprocess.run(
        [sys.executable, str(Path(__file__)), "--child", url, flag, str(workers)],
        capture_output=True,
        text=True,
        env=builtin.child_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise builtin.BenchmarkError(f"{mode} on {url} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if got["errors"]:
        raise builtin.BenchmarkError(f"{mode} on {url}: {got['errors']} errors")
    return Run(got["seconds"], got["rows"], *got["peaks"])


# --- the two databases -----------------------------------------------------------------------------


LEDGER = ("backfill_errors", "backfill_ranges", "backfill_controls", "backfill_runs")


def reset(target: Target) -> None:
    """Empty what a run writes: the digests, and the ledger (so that the next run is a first run)."""
    for table in (*LEDGER, "digests"):
        if table == "digests" or target.has(table):
            target.sql(f"DELETE FROM {table}")


def digests(target: Target) -> str:
    rows = target.sql("SELECT item_id, digest FROM digests ORDER BY item_id")
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@contextmanager
def targets(workdir: Path, server: str | None, rows: int) -> Iterator[list[Target]]:
    items = [(i, f"item {i} " + "x" * (i % 50)) for i in range(1, rows + 1)]
    path = workdir / f"items-{rows}.db"
    path.unlink(missing_ok=True)
    made: list[Target] = [SqliteTarget(path, SCHEMA, "items", items)]
    if server is None:
        yield made
        return
    with pg_copies.server(server) as pg:
        url = pg.create(f"{pg_copies.PREFIX}_{pg.run_id}_items")
        made.append(PostgresTarget(url, SCHEMA, "items", items))
        yield made


# --- part 1: the CPU-bound extractor ---------------------------------------------------------------


@dataclass
class Results:
    kind: str
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def median(self, mode: str, attr: str = "rate") -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs[mode]))

    def paired(self, mode: str, base: str) -> float:
        return statistics.median(
            a.rate / b.rate for a, b in zip(self.runs[mode], self.runs[base], strict=True)
        )

    def peak(self, attr: str) -> float:
        return max(float(getattr(r, attr)) for runs in self.runs.values() for r in runs)


def part_one(targets_: Sequence[Target], repeat: int) -> list[Results]:
    out = []
    for target in targets_:
        results = Results(target.kind)
        reference = None
        for i in range(repeat):
            modes = list(MODES) if i % 2 == 0 else list(reversed(MODES))
            for mode in modes:
                reset(target)
                r = measured(target.url, mode)
                results.runs.setdefault(mode, []).append(r)
                got = digests(target)
                if reference is None:
                    reference = got
                elif got != reference:
                    raise builtin.BenchmarkError(f"{target.kind} {mode}: digests differ from the first run's")
                print(
                    f"  {target.kind:<10} repeat {i + 1}  {mode:<12} {r.seconds:7.2f} s  "
                    f"{r.rate:8.0f} rows/s  main {r.main_mb:5.0f} MB  worker {r.worker_mb:5.0f} MB",
                    flush=True,
                )
        out.append(results)
    return out


def report_part_one(results: Sequence[Results], per_row_ms: float) -> bool:
    print(f"\nthe extractor's cost on this machine: {per_row_ms:.3f} ms a row ({ROUNDS} SHA-256 rounds)")
    print(f"{'database':<10}  {'mode':<12}  {'rows/s':>8}  {'vs one process':>14}")
    ok = True
    for r in results:
        for mode in MODES:
            shown = "" if mode == "one process" else f"{r.paired(mode, 'one process'):.2f}"
            print(f"{r.kind:<10}  {mode:<12}  {r.median(mode):8.0f}  {shown:>14}")
    print()
    for r in results:
        ratio = r.paired("2 workers", "one process")
        passed = ratio >= TARGET_RATIO
        ok &= passed
        print(
            f"{r.kind}: 2 workers / one process = {ratio:.2f} "
            f"(target >= {TARGET_RATIO}) {builtin.verdict(passed)}"
        )
        main, worker = r.peak("main_mb"), r.peak("worker_mb")
        passed = max(main, worker) < TARGET_MB
        ok &= passed
        print(
            f"{r.kind}: peak RSS main {main:.0f} MB, largest worker {worker:.0f} MB "
            f"(target < {TARGET_MB:.0f} MB) {builtin.verdict(passed)}"
        )
    return ok


def per_row_cost() -> float:
    started = time.process_time()
    for i in range(200):
        digest(f"item {i}")
    return (time.process_time() - started) / 200 * 1000


# --- part 2: the built-in job ----------------------------------------------------------------------


def part_two(workdir: Path, tests: int, server: str | None, repeat: int) -> dict[str, dict[str, float]]:
    """The built-in job's source rows per second by workers, per database (medians)."""
    template = builtin.database(workdir, tests)
    rows = builtin.source_rows(template)
    medians: dict[str, dict[str, float]] = {}
    with pg_copies.server(server) if server else nullcontext() as pg:
        copies: list[Any] = [builtin.Copies(workdir, template)]
        if pg is not None:
            copies.append(pg.template(template, tests))
        for c in copies:
            runs: dict[str, list[builtin.Measurement]] = {}
            reference: tuple[Any, object] | None = None
            for i in range(repeat):
                for n in BUILTIN_WORKERS:
                    db = c.fresh(f"w{n}-{i}")
                    m = builtin.measure(builtin.backfill_cmd(db, "--workers", str(n)), split_peaks=True)
                    runs.setdefault(workers_label(n), []).append(m)
                    got = c.digest(db)
                    if reference is None:
                        reference = (db, got)
                        continue
                    if got != reference[1]:
                        raise builtin.BenchmarkError(
                            f"{c.kind} --workers {n}: tables differ from --workers 1's: "
                            f"{c.first_difference(reference[0], db)}"
                        )
                    c.drop(db)
                    print(f"  {c.kind:<10} repeat {i + 1}  --workers {n}  {m.seconds:7.2f} s", flush=True)
            if reference is not None:
                c.drop(reference[0])
            medians[c.kind] = {k: rows / statistics.median(m.seconds for m in v) for k, v in runs.items()}
            worker_mb = max(m.worker_mb for v in runs.values() for m in v)
            main_mb = max(m.peak_mb - m.worker_mb for v in runs.values() for m in v)
            print(f"  {c.kind}: peak RSS main {main_mb:.0f} MB, largest worker {worker_mb:.0f} MB")
    print(f"\nthe built-in job at {tests} tests ({rows} source rows), source rows per second:")
    print(f"{'database':<10}  " + "  ".join(f"{workers_label(n):>10}" for n in BUILTIN_WORKERS))
    for kind, by_workers in medians.items():
        print(f"{kind:<10}  " + "  ".join(f"{by_workers[workers_label(n)]:>10.0f}" for n in BUILTIN_WORKERS))
    return medians


def workers_label(n: int) -> str:
    return "default" if n == 1 else f"{n} workers"


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2], int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--tests", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "backfill-bench")
    parser.add_argument("--postgres", default=os.environ.get("BACKFILL_TEST_POSTGRES_URL"))
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="write scaling-workers.png there")
    args = parser.parse_args(argv)
    server = None if args.sqlite_only else args.postgres
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    try:
        cost = per_row_cost()
        with targets(args.workdir, server, args.rows) as made:
            one = part_one(made, args.repeat)
        ok = report_part_one(one, cost)
        two = part_two(args.workdir, args.tests, server, args.repeat)
    except builtin.BenchmarkError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    if args.plot:
        import plot  # the bench extra's matplotlib, only when asked for

        panels = {
            f"an extractor costing {cost:.2f} ms a row ({args.rows:,} rows)": {
                r.kind: {mode: r.median(mode) for mode in MODES} for r in one
            },
            f"the built-in job ({args.tests:,} tests)": two,
        }
        print(f"wrote {plot.scaling(args.plot, panels)}")
    print(f"\ntargets {'all PASS' if ok else 'not all met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
