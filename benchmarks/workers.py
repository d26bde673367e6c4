"""The issue 20 benchmark: ``--workers N`` and distributed workers against one process, on SQLite
and on PostgreSQL.

    python benchmarks/workers.py [--rows 20000] [--tests 10000] [--repeat 3] [--workdir DIR]
        [--postgres URL | --sqlite-only] [--plot DIR]

Part 1, an extractor that costs CPU: ``items(id, payload)`` becomes ``digests(item_id, digest)``,
and ``extract`` hashes each payload ROUNDS times (about half a millisecond a row; the cost this
machine measures is printed). Each run is a child process of its own (``--child``) on an empty
``digests`` and ledger, timed from the start of the run to its end: one process (``--no-worker``),
the default (``--workers 1``: on SQLite one worker extracts while the main process writes), and
``--workers 2``. On PostgreSQL only (procrastinate keeps its job queue there) a fourth mode, ``2
distributed``: two worker processes (``--worker-child``, each ``serve`` with one job at a time, as
``backfill worker --concurrency 1``) are started and have announced that they are serving before
the clock starts; a child (``--distributed-child``) then ``enqueue``s the run in PARTS parts
(``backfill enqueue --parts PARTS --no-validate``, the default batch size) and is timed from the
start of the enqueue until the run's ledger row says it succeeded (polled every POLL seconds); the
workers are then stopped with SIGTERM and report their peak RSS. Printed: rows per second, the
ratio of ``--workers 2`` and of ``2 distributed`` to one process (the median of each repeat's own
ratio, its runs back to back: this machine's speed drifts within minutes), with the target (>= 1.6)
as PASS/FAIL, and the peak RSS of the main process and of its largest worker, and of the largest
distributed worker (target < 150 MB each). Every run must leave the same ``digests`` (exit 1 if
not). Before each run the digests, the ledger (``backfill_parts`` included) and procrastinate's
jobs are emptied.

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
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
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
DISTRIBUTED = "2 distributed"
"""The mode of distributed runs (PostgreSQL only): DISTRIBUTED_WORKERS worker processes."""
DISTRIBUTED_WORKERS = 2
PARTS = 32
"""``backfill enqueue --parts``: the key ranges the distributed run is cut into, a job each."""
POLL = 0.02
"""Seconds between two looks at the distributed run's ledger row."""
WORKER_START_TIMEOUT = 120.0
WORKER_STOP_TIMEOUT = 60.0
RUN_TIMEOUT = 3600.0
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


def announce_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def worker_child(url: str) -> None:
    """Serve distributed jobs (one at a time) until SIGTERM, then print the peak RSS as JSON."""
    from backfill_core.app.distributed.commands import serve

    asyncio.run(serve(make_registry(Plugin()), resolve_url(url), 1, announce_to_stderr))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    print(json.dumps({"peak_mb": peak}))


def distributed_child(url: str, parts: int) -> None:
    """Enqueue ``digest`` as a distributed run and wait until its ledger row says it ended; print
    the seconds from the start of the enqueue to then, the rows, the errors and the peak RSS."""
    got = asyncio.run(enqueue_and_wait(url, parts))
    got["peaks"] = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6, 0.0]
    print(json.dumps(got))


async def enqueue_and_wait(url: str, parts: int) -> dict[str, Any]:
    import asyncpg

    from backfill_core.app.distributed.commands import enqueue

    conn = await asyncpg.connect(url)  # before the clock starts, as the other modes' imports are
    try:
        started = time.perf_counter()
        enqueued = await enqueue(
            make_registry(Plugin()),
            ["digest"],
            resolve_url(url),
            RunOptions(),
            parts=parts,
            validate=False,
            thresholds={},
            restart=False,
            announce=announce_to_stderr,
        )
        if enqueued.run_id is None:
            raise SystemExit(f"nothing was enqueued: {enqueued.to_dict()}")
        query = (
            "SELECT status, inserted, record_errors + batch_errors AS errors, message, parts "
            "FROM backfill_runs WHERE id = $1"
        )
        while (row := await conn.fetchrow(query, enqueued.run_id))["status"] == "running":
            await asyncio.sleep(POLL)
        seconds = time.perf_counter() - started
        if row["status"] != "succeeded":
            raise SystemExit(f"run {enqueued.run_id} ended {row['status']}: {row['message']}")
        pickup = await conn.fetchval(
            "SELECT EXTRACT(EPOCH FROM MIN(p.started_at) - r.started_at) FROM backfill_parts p "
            "JOIN backfill_runs r ON r.id = p.run_id WHERE p.run_id = $1 GROUP BY r.started_at",
            enqueued.run_id,
        )
    finally:
        await conn.close()
    return {
        "seconds": seconds,
        "rows": row["inserted"],
        "errors": row["errors"],
        "parts": row["parts"],
        "pickup": float(pickup),
    }


@dataclass
class Run:
    seconds: float
    rows: int
    main_mb: float
    """The peak RSS of the process that ran (or, distributed, enqueued) the run."""
    worker_mb: float
    """Its largest worker's (distributed: the largest of the worker processes')."""
    workers_mb: tuple[float, ...] = ()
    """Distributed: each worker process's peak RSS."""
    startup: float = 0.0
    """Distributed: seconds from starting the worker processes until all were serving (untimed)."""
    pickup: float = 0.0
    """Distributed: seconds from the run's start in the ledger until its first part was taken."""

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def measured(url: str, mode: str) -> Run:
    if mode == DISTRIBUTED:
        return measured_distributed(url)
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


class Worker:
    """A distributed worker process (``--worker-child``), its stderr read as it comes."""

    def __init__(self, url: str) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--worker-child", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=builtin.child_env(),
        )
        self.lines: list[str] = []
        self.serving = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "serving" in line:
                self.serving.set()

    def stderr(self) -> str:
        return "".join(self.lines)[-3000:]

    def wait_serving(self) -> float:
        """Seconds from its start until it announced that it is serving."""
        deadline = self.started + WORKER_START_TIMEOUT
        while not self.serving.wait(0.01):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise builtin.BenchmarkError(
                    f"a distributed worker exited with {code} before serving:\n{self.stderr()}"
                )
            if time.perf_counter() > deadline:
                raise builtin.BenchmarkError(
                    f"a distributed worker was not serving after {WORKER_START_TIMEOUT:g}s:\n{self.stderr()}"
                )
        return time.perf_counter() - self.started

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise builtin.BenchmarkError(
                f"a distributed worker exited with {self.proc.returncode} during the run:\n{self.stderr()}"
            )

    def stop(self) -> float:
        """SIGTERM it and wait for it to end; its peak RSS in MB."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise builtin.BenchmarkError(
                f"a distributed worker had not stopped {WORKER_STOP_TIMEOUT:g}s after SIGTERM:\n"
                + self.stderr()
            ) from None
        self.reader.join()
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        if code != 0:
            raise builtin.BenchmarkError(f"a distributed worker exited with {code}:\n{self.stderr()}")
        try:
            return float(json.loads(out.strip().splitlines()[-1])["peak_mb"])
        except (IndexError, ValueError, KeyError):
            raise builtin.BenchmarkError(f"a distributed worker printed no peak: {out[-2000:]!r}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def measured_distributed(url: str, parts: int = PARTS) -> Run:
    """A distributed run of ``digest`` on DISTRIBUTED_WORKERS worker processes, started (and
    serving) before the enqueue, stopped after the run succeeded."""
    workers: list[Worker] = []
    try:
        workers = [Worker(url) for _ in range(DISTRIBUTED_WORKERS)]
        startup = max(w.wait_serving() for w in workers)
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--distributed-child", url, str(parts)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=builtin.child_env(),
        )
        try:
            # Its output is a few lines; a worker that dies would leave the run unfinished.
            deadline = time.perf_counter() + RUN_TIMEOUT
            while proc.poll() is None:
                for w in workers:
                    w.check_alive()
                if time.perf_counter() > deadline:
                    raise builtin.BenchmarkError(f"{DISTRIBUTED} on {url}: no end after {RUN_TIMEOUT:g}s")
                time.sleep(0.05)
            out, err = proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if proc.returncode != 0:
            raise builtin.BenchmarkError(
                f"{DISTRIBUTED} on {url}: the enqueue exited with {proc.returncode}:\n{err[-3000:]}"
            )
        peaks = tuple(w.stop() for w in workers)
    finally:
        for w in workers:
            w.kill()
    got = json.loads(out.strip().splitlines()[-1])
    if got["errors"]:
        raise builtin.BenchmarkError(f"{DISTRIBUTED} on {url}: {got['errors']} errors")
    return Run(got["seconds"], got["rows"], got["peaks"][0], max(peaks), peaks, startup, got["pickup"])


# --- the two databases -----------------------------------------------------------------------------


LEDGER = ("backfill_errors", "backfill_ranges", "backfill_parts", "backfill_controls", "backfill_runs")
QUEUE = ("procrastinate_jobs", "procrastinate_workers")
"""procrastinate's jobs (their procrastinate_events go with them: ON DELETE CASCADE; a trigger
unlinks procrastinate_periodic_defers), then the workers they may name (ON DELETE SET NULL)."""


def reset(target: Target) -> None:
    """Empty what a run writes: the digests, the ledger (so that the next run is a first run) and
    procrastinate's queue (so that each distributed run starts from an empty one)."""
    for table in (*LEDGER, *QUEUE, "digests"):
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

    def peak(self, attr: str, modes: Sequence[str]) -> float:
        return max(float(getattr(r, attr)) for mode in modes for r in self.runs[mode])


def modes_on(target: Target) -> list[str]:
    """The modes measured on ``target``: distributed runs need PostgreSQL."""
    return [*MODES, DISTRIBUTED] if isinstance(target, PostgresTarget) else list(MODES)


def part_one(targets_: Sequence[Target], repeat: int) -> list[Results]:
    out = []
    for target in targets_:
        results = Results(target.kind)
        reference = None
        for i in range(repeat):
            modes = modes_on(target) if i % 2 == 0 else list(reversed(modes_on(target)))
            for mode in modes:
                reset(target)
                r = measured(target.url, mode)
                results.runs.setdefault(mode, []).append(r)
                got = digests(target)
                if reference is None:
                    reference = got
                elif got != reference:
                    raise builtin.BenchmarkError(f"{target.kind} {mode}: digests differ from the first run's")
                peaks = (
                    f"enqueue {r.main_mb:5.0f} MB  "
                    f"workers {', '.join(f'{mb:.0f}' for mb in r.workers_mb)} MB  "
                    f"(serving {r.startup:.1f} s after their start; first part taken {r.pickup:.2f} s "
                    "after the run began)"
                    if mode == DISTRIBUTED
                    else f"main {r.main_mb:5.0f} MB  worker {r.worker_mb:5.0f} MB"
                )
                print(
                    f"  {target.kind:<10} repeat {i + 1}  {mode:<13} {r.seconds:7.2f} s  "
                    f"{r.rate:8.0f} rows/s  {peaks}",
                    flush=True,
                )
        out.append(results)
    return out


def report_part_one(results: Sequence[Results], per_row_ms: float) -> bool:
    print(f"\nthe extractor's cost on this machine: {per_row_ms:.3f} ms a row ({ROUNDS} SHA-256 rounds)")
    print(f"{'database':<10}  {'mode':<13}  {'rows/s':>8}  {'vs one process':>14}")
    ok = True
    for r in results:
        for mode in r.runs:
            shown = "" if mode == "one process" else f"{r.paired(mode, 'one process'):.2f}"
            print(f"{r.kind:<10}  {mode:<13}  {r.median(mode):8.0f}  {shown:>14}")
    print()
    for r in results:
        for mode in ("2 workers", DISTRIBUTED):
            if mode == DISTRIBUTED and mode not in r.runs:
                print(f"{r.kind}: no {DISTRIBUTED} mode: procrastinate keeps its job queue in PostgreSQL")
                continue
            ratio = r.paired(mode, "one process")
            passed = ratio >= TARGET_RATIO
            ok &= passed
            print(
                f"{r.kind}: {mode} / one process = {ratio:.2f} "
                f"(target >= {TARGET_RATIO}) {builtin.verdict(passed)}"
            )
        main, worker = r.peak("main_mb", list(MODES)), r.peak("worker_mb", list(MODES))
        passed = max(main, worker) < TARGET_MB
        ok &= passed
        print(
            f"{r.kind}: peak RSS main {main:.0f} MB, largest worker {worker:.0f} MB "
            f"(target < {TARGET_MB:.0f} MB) {builtin.verdict(passed)}"
        )
        if DISTRIBUTED in r.runs:
            worker = r.peak("worker_mb", [DISTRIBUTED])
            passed = worker < TARGET_MB
            ok &= passed
            print(
                f"{r.kind}: peak RSS of the largest distributed worker {worker:.0f} MB "
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
    if argv[:1] == ["--worker-child"]:
        worker_child(argv[1])
        return 0
    if argv[:1] == ["--distributed-child"]:
        distributed_child(argv[1], int(argv[2]))
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
                r.kind: {mode: r.median(mode) for mode in r.runs} for r in one
            },
            f"the built-in job ({args.tests:,} tests)": two,
        }
        print(f"wrote {plot.scaling(args.plot, panels)}")
    print(f"\ntargets {'all PASS' if ok else 'not all met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
