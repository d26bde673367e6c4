"""The issue 5 and 19 benchmark: backfill against the set-based SQL and the naive ORM baselines,
on SQLite and on PostgreSQL.

    python benchmarks/run.py [--tests 50000] [--small 10000] [--repeat 3] [--workdir DIR]
        [--postgres URL | --sqlite-only] [--plot DIR] [--markdown]

Builds synthetic databases (cached in the workdir, keyed by size and generator version), runs
every approach in its own child process on a fresh copy, checks that all of them leave identical
tables (exit status 1 if not), and prints medians and the issue's ratios with PASS/FAIL. A ratio
to the set-based SQL is also given paired: the median of each repeat's own ratio, whose runs were
back to back (this machine's speed drifts within minutes); it passes only if both forms do.
Every figure printed comes from this run's measurements. With a PostgreSQL server (``--postgres``,
default ``$BACKFILL_TEST_POSTGRES_URL``) every approach runs there too, on copies of a template
database per size (``pg_copies``), and the two databases' figures are printed side by side.
``--plot DIR`` also runs backfill at several ``--batch-size`` values on the large size and writes
the performance page's images there (``plot``, which needs the ``bench`` extra); ``--markdown``
prints the medians, the ratios and that sweep as the page's Markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Protocol, TypeVar

import baselines
import pg_baselines
import pg_copies

from backfill_plugins.testmanagement import synthetic

HERE = Path(__file__).resolve().parent
BASELINES = HERE / "baselines.py"
BIN = Path(sys.executable).parent
BACKFILL = BIN / "backfill"
JOB = ("test_features", "bug_attribution")
SCRUBBED = ("BACKFILL_DATABASE_URL", "BACKFILL_LOAD_PLUGINS", "BACKFILL_BUSY_TIMEOUT")
NAIVE_GROWTH = 1.2
"""Exponent used to extrapolate the naive script's time from the small size to the large one
(measured near 1.0 from 2,000 to 10,000 tests; OFFSET paging adds a quadratic term that shows
at larger sizes)."""

SET_BASED = "set-based SQL"
BACKFILL_RUN = "backfill"
SECOND_RUN = "backfill, 2nd run"
DRY_RUN = "backfill --dry-run"
NAIVE = "naive ORM"
ORDER = (SET_BASED, BACKFILL_RUN, SECOND_RUN, DRY_RUN, NAIVE)
BATCH_SIZES = (100, 250, 500, 1000, 2000, 5000)
"""The ``--batch-size`` values of ``--plot``'s sweep (500 is the default)."""


class BenchmarkError(Exception):
    """A child failed or the approaches disagree: the figures cannot be trusted."""


@dataclass
class Measurement:
    seconds: float
    peak_mb: float
    """Peak resident set size of the child (ru_maxrss), in MB of 10^6 bytes; for backfill, the sum
    of its main process's and its extraction worker's peaks."""
    stdout: str
    worker_mb: float = 0.0
    """backfill's extraction worker's own peak, included in peak_mb (0 without a worker)."""
    cpu: float = 0.0
    """CPU seconds (user + system) of the child and the children it waited for (the worker)."""

    @property
    def cores(self) -> float:
        """How many cores the child kept busy on average: its CPU time over its wall time."""
        return self.cpu / self.seconds if self.seconds else 0.0


@dataclass
class Size:
    tests: int
    path: Path
    source_rows: int = 0
    runs: dict[str, list[Measurement]] = field(default_factory=dict)
    database: str = "SQLite"
    """The database the runs were on: SQLite, or PostgreSQL (a copy of ``path`` on the server)."""
    sweep: dict[int, list[Measurement]] = field(default_factory=dict)
    """backfill's first runs by ``--batch-size`` (``--plot``'s sweep)."""

    def median(self, approach: str, attr: str = "seconds") -> float | None:
        found = self.runs.get(approach)
        return statistics.median(getattr(m, attr) for m in found) if found else None

    def rate(self, batch_size: int) -> float:
        """Source rows per second of the median first run at ``batch_size``."""
        return self.source_rows / self.swept(batch_size)

    def swept(self, batch_size: int, attr: str = "seconds") -> float:
        """The median of ``attr`` over the first runs at ``batch_size``."""
        return float(statistics.median(getattr(m, attr) for m in self.sweep[batch_size]))


# --- running children ------------------------------------------------------------------------------


COMPILE = """
import compileall, sys
import backfill_core, backfill_plugins
for package in (backfill_core, backfill_plugins):
    if not compileall.compile_dir(package.__path__[0], quiet=1):
        sys.exit(f"could not compile {package.__path__[0]}")
"""


def compile_bytecode(script: Path) -> str:
    """Compile the bytecode of the backfill that ``script`` (a console script) runs, as
    installing a package does; what to print about it.

    An editable install under PYTHONDONTWRITEBYTECODE never writes it, and every run would
    compile backfill's modules again: time a user's runs do not spend.
    """
    subprocess.run([str(script.parent / "python"), "-c", COMPILE], check=True)
    return f"bytecode of backfill_core and backfill_plugins compiled for {script}, as on install"


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SCRUBBED}


LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(sys.argv[1], "w") as f:
    cpu = usage.ru_utime + usage.ru_stime
    f.write(f"{os.waitstatus_to_exitcode(status)} {seconds!r} {usage.ru_maxrss} {cpu!r}")
"""
"""Spawns the measured command from a small process, so the command's ru_maxrss is its own (on
Linux a child's ru_maxrss starts from the RSS of the process that spawned it, and this harness is
bigger than the smallest children), and times it from spawn to exit. Its CPU time includes the
children it waited for (the worker)."""


BACKFILL_MAIN = """
import atexit, resource, sys
path = sys.argv[1]
def report():
    with open(path, "w") as f:
        f.write(" ".join(str(resource.getrusage(who).ru_maxrss)
                         for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
atexit.register(report)
sys.argv = ["backfill", *sys.argv[2:]]
from backfill_core.app.cli import main
sys.exit(main())
"""
"""What the ``backfill`` console script runs, plus a record of the peak RSS of the process itself
and of its reaped children (the extraction worker): a process's ru_maxrss as its parent sees it
is the largest of the two, not their sum."""


def measure(cmd: Sequence[str], ok: Sequence[int] = (0,), split_peaks: bool = False) -> Measurement:
    """Run ``cmd`` in a child; its wall time from spawn to exit and its own peak RSS.

    ``split_peaks``: ``cmd`` is a backfill command run through BACKFILL_MAIN, whose first argument
    is a file for its peaks; the peak reported is then its main process's plus its worker's.
    """
    with tempfile.TemporaryDirectory() as tmp:
        result, out, err, peaks = (Path(tmp) / name for name in ("result", "stdout", "stderr", "peaks"))
        if split_peaks:
            cmd = [sys.executable, "-c", BACKFILL_MAIN, str(peaks), *cmd[1:]]
        with out.open("wb") as o, err.open("wb") as e:
            subprocess.run(
                [sys.executable, "-S", "-c", LAUNCHER, str(result), *cmd],
                stdout=o,
                stderr=e,
                env=child_env(),
                check=True,
            )
        code, seconds, maxrss_kib, cpu = result.read_text().split()
        stdout = out.read_text(errors="replace")
        stderr = err.read_text(errors="replace")
        main_kib, worker_kib = map(int, peaks.read_text().split()) if split_peaks else (int(maxrss_kib), 0)
    if int(code) not in ok:
        raise BenchmarkError(
            f"{shlex.join(cmd)} exited with {code}\n--- stderr (tail):\n{stderr[-3000:]}"
            f"\n--- stdout (tail):\n{stdout[-2000:]}"
        )
    peak_mb, worker_mb = (main_kib + worker_kib) * 1024 / 1e6, worker_kib * 1024 / 1e6
    return Measurement(float(seconds), peak_mb, stdout, worker_mb, float(cpu))


def backfill_cmd(db: Path | str, *extra: str) -> list[str]:
    return [str(BACKFILL), "run", *JOB, "-d", str(db), "--quiet", "--json", *extra]


def baseline_cmd(mode: str, db: Path) -> list[str]:
    return Copies.baseline_cmd(sys.executable, mode, db)


# --- databases -------------------------------------------------------------------------------------


def generator_version() -> str:
    return hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:10]


def database(workdir: Path, tests: int) -> Path:
    """The cached synthetic database of ``tests`` tests, built if missing."""
    path = workdir / f"synthetic-{tests}-{generator_version()}.db"
    if path.exists():
        print(f"  {tests:>7} tests: cached {path}")
        return path
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    started = time.perf_counter()
    counts = synthetic.build(tmp, tests=tests)
    tmp.rename(path)
    print(
        f"  {tests:>7} tests: built {path} in {time.perf_counter() - started:.1f} s "
        f"({counts.bugs} bugs, {counts.messy_tests} messy tests, {counts.messy_bugs} messy bugs)"
    )
    return path


def source_rows(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("tests", "bugs"))
    finally:
        conn.close()


D = TypeVar("D", bound=Path | str)


class Fresh(Protocol[D]):
    """Fresh copies of one size's database, each named by a ``D`` (a SQLite file's path, a
    PostgreSQL database's URL), and what the benchmark checks on them."""

    kind: str

    @property
    def pristine(self) -> object:
        """The template's snapshot digest."""
        ...

    def fresh(self, name: str) -> D: ...

    def drop(self, db: D) -> None: ...

    def digest(self, db: D) -> object: ...

    def first_difference(self, a: D, b: D) -> str | None: ...

    def baseline_cmd(self, python: str, mode: str, db: D) -> list[str]: ...


class Copies:
    """Fresh copies of a template database, deleted once measured (kept if a check fails)."""

    kind = "SQLite"

    def __init__(self, workdir: Path, template: Path) -> None:
        self.dir = workdir / "copies"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.template = template
        self._pristine: object = None

    @property
    def pristine(self) -> object:
        if self._pristine is None:
            self._pristine = baselines.snapshot_digest(self.template)
        return self._pristine

    @staticmethod
    def digest(db: Path) -> object:
        return baselines.snapshot_digest(db)

    @staticmethod
    def first_difference(a: Path, b: Path) -> str | None:
        return baselines.first_difference(a, b)

    @staticmethod
    def baseline_cmd(python: str, mode: str, db: Path) -> list[str]:
        return [python, str(BASELINES), mode, str(db)]

    def fresh(self, name: str) -> Path:
        path = self.dir / f"{self.template.stem}-{name}.db"
        for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
            p.unlink(missing_ok=True)
        shutil.copy(self.template, path)
        # On disk before it is measured: otherwise the first commit of whatever runs on the copy
        # also writes the copy out (several hundred MB at 50,000 tests), which no approach does
        # on a real database.
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    @staticmethod
    def drop(path: Path) -> None:
        for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
            p.unlink(missing_ok=True)


def check_same(reference: Path, ref_digest: object, other: Path, what: str) -> None:
    same = Copies.digest(other) == ref_digest
    require_same(Copies.kind, same, lambda: Copies.first_difference(reference, other), what)


def check_copy(copies: Fresh[D], reference: D, ref_digest: object, other: D, what: str) -> None:
    """``other`` holds the same snapshot as ``reference`` (whose digest is ``ref_digest``)."""
    same = copies.digest(other) == ref_digest
    require_same(copies.kind, same, lambda: copies.first_difference(reference, other), what)


def require_same(kind: str, same: bool, difference: Callable[[], str | None], what: str) -> None:
    if same:
        return
    diff = difference() or "(digests differ, yet no row differs?)"
    kept = "copies kept for inspection" if kind == "SQLite" else "databases dropped on exit"
    raise BenchmarkError(f"{kind} tables differ: {what}\n  first difference: {diff}\n  {kept}")


# --- the benchmark ---------------------------------------------------------------------------------


def run_size(size: Size, copies: Fresh[D], repeat: int, log: bool = True) -> D:
    """Set-based, backfill, its second run and a dry run, ``repeat`` times; returns a copy that
    holds the set-based result, the reference for every other approach at this size."""
    pristine = copies.pristine
    reference: D | None = None
    ref_digest: object = None
    py = sys.executable
    for i in range(repeat):
        sql_db = copies.fresh(f"set-based-{i}")
        add(size, SET_BASED, measure(copies.baseline_cmd(py, "set-based", sql_db)), log)
        if reference is None:
            reference, ref_digest = sql_db, copies.digest(sql_db)
            if ref_digest == pristine:
                raise BenchmarkError(f"set-based SQL changed nothing in {sql_db}")
        else:
            check_copy(copies, reference, ref_digest, sql_db, f"set-based SQL run {i + 1} vs run 1")
            copies.drop(sql_db)

        bf_db = copies.fresh(f"backfill-{i}")
        m = add(size, BACKFILL_RUN, measure(backfill_cmd(bf_db), split_peaks=True), log)
        check_report(m, dry_run=False)
        check_copy(copies, reference, ref_digest, bf_db, f"backfill (run {i + 1}) vs set-based SQL")
        m = add(size, SECOND_RUN, measure(backfill_cmd(bf_db), split_peaks=True), log)
        check_report(m, dry_run=False)
        check_copy(
            copies, reference, ref_digest, bf_db, f"backfill second run (run {i + 1}) vs set-based SQL"
        )
        copies.drop(bf_db)

        dry_db = copies.fresh(f"dry-run-{i}")
        m = add(size, DRY_RUN, measure(backfill_cmd(dry_db, "--dry-run"), split_peaks=True), log)
        check_report(m, dry_run=True)
        if copies.digest(dry_db) != pristine:
            raise BenchmarkError(f"backfill --dry-run changed the tables of {dry_db}")
        copies.drop(dry_db)
    assert reference is not None
    return reference


def run_naive(size: Size, copies: Fresh[D], reference: D) -> None:
    db = copies.fresh("naive-orm")
    add(size, NAIVE, measure(copies.baseline_cmd(sys.executable, "naive-orm", db)))
    check_copy(copies, reference, copies.digest(reference), db, "naive ORM vs set-based SQL")
    copies.drop(db)


def run_sweep(size: Size, copies: Fresh[D], reference: D, repeat: int) -> None:
    """backfill's first run at each of ``BATCH_SIZES``, ``repeat`` times, the order rotated each
    time so that no batch size always runs first; each must leave the reference's tables."""
    ref_digest = copies.digest(reference)
    for i in range(repeat):
        turn = i % len(BATCH_SIZES)
        for batch_size in (*BATCH_SIZES[turn:], *BATCH_SIZES[:turn]):
            db = copies.fresh(f"batch-{batch_size}")
            m = measure(backfill_cmd(db, "--batch-size", str(batch_size)), split_peaks=True)
            check_report(m, dry_run=False)
            check_copy(
                copies, reference, ref_digest, db, f"backfill --batch-size {batch_size} vs set-based SQL"
            )
            copies.drop(db)
            size.sweep.setdefault(batch_size, []).append(m)
            print(
                f"  {size.database:<10} {size.tests:>7} tests  --batch-size {batch_size:<6} "
                f"{m.seconds:8.2f} s  {m.cpu:6.2f} CPU s  {m.peak_mb:7.1f} MB",
                flush=True,
            )


def check_report(m: Measurement, *, dry_run: bool) -> None:
    """backfill's own JSON summary must say it processed every row and did what was asked."""
    try:
        report = json.loads(m.stdout)
    except ValueError as e:
        raise BenchmarkError(f"backfill printed no JSON summary: {e}\n{m.stdout[-2000:]}") from None
    if report.get("dry_run") is not dry_run or [x["extractor"] for x in report["extractors"]] != list(JOB):
        raise BenchmarkError(f"unexpected backfill summary:\n{m.stdout[-2000:]}")


def add(size: Size, approach: str, m: Measurement, log: bool = True) -> Measurement:
    size.runs.setdefault(approach, []).append(m)
    if log:
        worker = f"  (worker {m.worker_mb:.1f} MB of it)" if m.worker_mb else ""
        print(
            f"  {size.database:<10} {size.tests:>7} tests  {approach:<20} {m.seconds:8.2f} s"
            f"  {m.cpu:6.2f} CPU s  {m.peak_mb:7.1f} MB{worker}",
            flush=True,
        )
    return m


# --- reporting -------------------------------------------------------------------------------------


def machine_facts() -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        rev = subprocess.run(
            ["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        rev = ""
    versions = ", ".join(
        f"{d} {metadata.version(d)}" for d in ("backfill", "sqlalchemy", "sqlmodel", "aiosqlite")
    )
    return [
        f"machine: nproc {nproc}, {cpu}, RAM {ram}, {platform.platform()}",
        f"python {platform.python_version()} ({sys.executable}), SQLite {sqlite3.sqlite_version}",
        f"{versions}; source tree {rev or 'unknown'}",
    ]


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_HEADER = (
    *("approach", "database", "tests", "source rows", "runs"),
    *("seconds", "rows/s", "CPU s", "cores", "peak MB"),
)


def table_rows(sizes: Sequence[Size]) -> list[tuple[str, ...]]:
    """One row per approach, size and database (cells as ``TABLE_HEADER`` names them)."""
    rows: list[tuple[str, ...]] = []
    for approach in ORDER:
        for s in sizes:
            if approach not in s.runs:
                continue
            secs = s.median(approach)
            rate = s.source_rows / secs if secs else None
            rows.append(
                (
                    approach,
                    s.database,
                    f"{s.tests:,}",
                    f"{s.source_rows:,}",
                    str(len(s.runs[approach])),
                    fmt(secs, ".2f"),
                    fmt(rate, ",.0f"),
                    fmt(s.median(approach, "cpu"), ".2f"),
                    fmt(s.median(approach, "cores"), ".2f"),
                    fmt(s.median(approach, "peak_mb"), ".1f"),
                )
            )
    return rows


def print_table(sizes: Sequence[Size]) -> None:
    """One line per approach, size and database, the databases next to each other."""
    rows = [TABLE_HEADER, *table_rows(sizes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
    for n, r in enumerate(rows):
        cells = [
            *(c.ljust(w) for c, w in zip(r[:2], widths[:2], strict=True)),
            *(c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True)),
        ]
        print("  " + "  ".join(cells))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def print_sweep(sizes: Sequence[Size]) -> None:
    """backfill's first run by batch size, the databases next to each other."""
    swept = [s for s in sizes if s.sweep]
    print(
        "  batch size" + "".join(f"  {s.database + ' s':>13}  {'rows/s':>9}  {'peak MB':>7}" for s in swept)
    )
    for b in BATCH_SIZES:
        cells = "".join(
            f"  {s.swept(b):13.2f}  {s.rate(b):9,.0f}  {s.swept(b, 'peak_mb'):7.1f}" for s in swept
        )
        print(f"  {b:>10}{cells}")


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """A Markdown table; ``align`` has an ``l`` or an ``r`` per column."""
    rule = ["---" if a == "l" else "---:" for a in align]
    return ["| " + " | ".join(r) + " |" for r in (header, rule, *rows)]


def print_markdown(outcomes: Sequence[Outcome], per_database: Sequence[tuple[str, list[Check]]]) -> None:
    """The performance page's tables: the medians per database, the ratios, the batch-size sweep."""
    keep = [0, 2, 3, *range(5, len(TABLE_HEADER))]  # the page names the database; runs = --repeat
    for o in outcomes:
        rows = [[r[i] for i in keep] for r in table_rows([o.small, o.large])]
        print(f"\n{o.small.database}:\n")
        print("\n".join(markdown([TABLE_HEADER[i] for i in keep], rows, "l" + "r" * (len(keep) - 1))))
    databases = [database for database, _ in per_database]
    by_label: dict[str, dict[str, Check]] = {}
    for database, found in per_database:
        for c in found:
            by_label.setdefault(c.label, {})[database] = c
    rows = []
    for label, by_database in by_label.items():
        cells = [_ratio_cell(by_database.get(database)) for database in databases]
        targets = [f"{d} {c.target}" for d, c in by_database.items() if c.ok is not None]
        rows.append([label, *cells, ", ".join(targets)])
    print("\nratios (paired in brackets):\n")
    print("\n".join(markdown(["ratio", *databases, "target"], rows, "l" + "r" * len(databases) + "l")))
    swept = [o.large for o in outcomes if o.large.sweep]
    if swept:
        rows = [
            [
                f"{b:,}",
                *(cell for s in swept for cell in (f"{s.rate(b):,.0f}", f"{s.swept(b, 'peak_mb'):.1f}")),
            ]
            for b in BATCH_SIZES
        ]
        header = ["--batch-size", *(f"{s.database} {what}" for s in swept for what in ("rows/s", "peak MB"))]
        print(f"\nfirst run at {swept[0].tests:,} tests by --batch-size (medians):\n")
        print("\n".join(markdown(header, rows, "r" * len(header))))


def _ratio_cell(c: Check | None) -> str:
    if c is None:
        return ""
    paired = f" ({c.paired:.2f})" if c.paired is not None else ""
    result = "" if c.ok is None else f" {verdict(c.ok)}"
    return f"{fmt(c.value, '.2f')}{paired}{result}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass
class Check:
    label: str
    value: float | None
    paired: float | None
    target: str
    ok: bool | None
    """None: no target for this database, or nothing measured."""


def checks(large: Size, small: Size, naive_sizes: Sequence[Size]) -> list[Check]:
    """The targets on one database: issue 5's on SQLite, issue 19's on PostgreSQL (the first run
    within 1.2x the SQL, the second run and the dry run within 1.0x, memory under 150 MB); the
    other figures are shown on PostgreSQL without a target. A ratio to the set-based SQL is shown
    twice: as the ratio of the medians, and as the median of each repeat's ratio (its runs were
    back to back, so that one is the least affected by the machine's drift); it passes only if
    both do."""
    sqlite = large.database == "SQLite"
    lines: list[Check] = []

    def check(
        label: str,
        value: float | None,
        target: str,
        passes: Callable[[float], bool] | None,
        paired: float | None = None,
    ) -> None:
        if passes is None:
            lines.append(Check(label, value, paired, "none", None))
            return
        ok = None if value is None else passes(value) and (paired is None or passes(paired))
        lines.append(Check(label, value, paired, target, ok))

    sql = large.median(SET_BASED)
    r = ratio(large.median(BACKFILL_RUN), sql)
    paired = paired_ratio(large, BACKFILL_RUN)
    if sqlite:
        aim = "" if r is None else f" (aim 1.2: {'met' if r <= 1.2 else 'not met'})"
        check(f"backfill / set-based SQL @ {large.tests}", r, f"<= 1.5{aim}", lambda v: v <= 1.5, paired)
    else:
        check(f"backfill / set-based SQL @ {large.tests}", r, "<= 1.2", lambda v: v <= 1.2, paired)
    for s in naive_sizes:
        r = ratio(s.median(NAIVE), s.median(BACKFILL_RUN))
        label = f"naive ORM / backfill @ {s.tests}"
        if not sqlite:
            check(label, r, "", None)
        elif s is large or large not in naive_sizes:
            check(label, r, ">= 20", lambda v: v >= 20)
        else:  # the issue sets this target at the large size; start-up weighs more at the small one
            lines.append(Check(label, r, None, f"none (>= 20 is @ {large.tests})", None))
    peaks = [m.peak_mb for s in (small, large) for m in s.runs.get(BACKFILL_RUN, [])]
    check("backfill peak memory, MB (max of all runs)", max(peaks, default=None), "< 150", lambda v: v < 150)
    r = ratio(large.median(BACKFILL_RUN, "peak_mb"), small.median(BACKFILL_RUN, "peak_mb"))
    label = f"backfill peak memory @ {large.tests} / @ {small.tests}"
    check(label, r, "within 10% (0.90 .. 1.10)", (lambda v: abs(v - 1) <= 0.10) if sqlite else None)
    per_row_large = ratio(large.median(BACKFILL_RUN), large.source_rows)
    per_row_small = ratio(small.median(BACKFILL_RUN), small.source_rows)
    r = ratio(per_row_large, per_row_small)
    label = f"backfill time per row @ {large.tests} / @ {small.tests}"
    check(label, r, "<= 1.2", (lambda v: v <= 1.2) if sqlite else None)
    r = ratio(large.median(SECOND_RUN), sql)
    label = f"2nd run (nothing to write) / set-based @ {large.tests}"
    check(label, r, "<= 1.0", lambda v: v <= 1.0, paired_ratio(large, SECOND_RUN))
    r = ratio(large.median(DRY_RUN), sql)
    label = f"dry run / set-based @ {large.tests}"
    check(label, r, "<= 1.0", lambda v: v <= 1.0, paired_ratio(large, DRY_RUN))
    return lines


def print_ratios(per_database: Sequence[tuple[str, list[Check]]]) -> None:
    """Each check's line on every database, next to each other."""
    by_label: dict[str, list[tuple[str, Check]]] = {}
    for database, found in per_database:
        for c in found:
            by_label.setdefault(c.label, []).append((database, c))
    width = max(len(label) for label in by_label)
    dbw = max(len(database) for database, _ in per_database)
    twidth = max(len(c.target) for lines in by_label.values() for _, c in lines)
    print(f"  {'check'.ljust(width)}  {'database'.ljust(dbw)}  {'value':>7}  {'paired':>7}   target")
    for label, lines in by_label.items():
        for n, (database, c) in enumerate(lines):
            result = "-" if c.ok is None else verdict(c.ok)
            print(
                f"  {(label if n == 0 else '').ljust(width)}  {database.ljust(dbw)}  {fmt(c.value, '.2f'):>7}"
                f"  {fmt(c.paired, '.2f'):>7}   {c.target.ljust(twidth)}  {result}"
            )


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def paired_ratio(size: Size, approach: str) -> float | None:
    """The median over repeats of ``approach``'s time over the set-based SQL's in that repeat."""
    pairs = zip(size.runs.get(approach, []), size.runs.get(SET_BASED, []), strict=False)
    found = [m.seconds / sql.seconds for m, sql in pairs if sql.seconds]
    return statistics.median(found) if found else None


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tests", type=int, default=50_000, help="tests in the large database")
    p.add_argument(
        "--small",
        type=int,
        default=None,
        help="tests in the small database (linearity); default 10000, or a fifth of --tests below 50000",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each approach per size (medians)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/backfill-bench"), help="database cache")
    p.add_argument(
        "--naive-budget",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="run the naive ORM script at the large size too if it is expected to take at most this "
        "(extrapolated from the small size); 0 = small size only",
    )
    p.add_argument(
        "--postgres",
        default=os.environ.get("BACKFILL_TEST_POSTGRES_URL"),
        metavar="URL",
        help="a PostgreSQL server to make the template and copies on (default $BACKFILL_TEST_POSTGRES_URL)",
    )
    p.add_argument("--sqlite-only", action="store_true", help="leave PostgreSQL out")
    p.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help=f"also run backfill at --batch-size {', '.join(map(str, BATCH_SIZES))} on the large size, and "
        "write the performance page's images to DIR (needs the bench extra: matplotlib)",
    )
    p.add_argument("--markdown", action="store_true", help="also print the results as Markdown tables")
    args = p.parse_args(argv)
    if args.small is None:
        args.small = min(10_000, args.tests // 5)
    if not 0 < args.small < args.tests:
        p.error("need 0 < --small < --tests")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


@dataclass
class Outcome:
    """One database's sizes, where the naive script ran, and the reference copy of each size."""

    small: Size
    large: Size
    naive_sizes: list[Size]
    naive_note: str


def run_database(
    small: Size, large: Size, copies_of: Callable[[Size], Fresh[D]], args: argparse.Namespace
) -> tuple[Outcome, dict[int, D]]:
    """Every approach at both sizes on one database; the naive script at the small size, and at
    the large one too if it fits ``--naive-budget``."""
    copies = {}
    references = {}
    for s in (small, large):
        copies[s.tests] = copies_of(s)
        print(
            f"\n{s.database}, {s.tests} tests ({s.source_rows} source rows), {args.repeat} time(s) each:",
            flush=True,
        )
        references[s.tests] = run_size(s, copies[s.tests], args.repeat)
    growth = (large.source_rows / small.source_rows) ** NAIVE_GROWTH
    print(f"\n{small.database}, naive ORM, once:")
    run_naive(small, copies[small.tests], references[small.tests])
    expected = (small.median(NAIVE) or 0) * growth
    naive_sizes = [small]
    note = (
        f"{small.database}: naive ORM ran once at {small.tests} tests; at {large.tests} it would take "
        f"about {expected:.0f} s (extrapolated as rows^{NAIVE_GROWTH}), "
    )
    if expected <= args.naive_budget:
        note += f"within --naive-budget {args.naive_budget:g} s, so it ran once there too"
        run_naive(large, copies[large.tests], references[large.tests])
        naive_sizes.append(large)
    else:
        note += f"over --naive-budget {args.naive_budget:g} s, so it ran at {small.tests} only"
    if args.plot:
        print(f"\n{large.database}, backfill by --batch-size, {args.repeat} time(s) each:")
        run_sweep(large, copies[large.tests], references[large.tests], args.repeat)
    return Outcome(small, large, naive_sizes, note), references


def run_postgres(
    server_url: str, lite: Outcome, lite_refs: dict[int, Path], args: argparse.Namespace
) -> Outcome:
    """Every approach on PostgreSQL, on copies of a template database per size; each size's result
    must be the one SQLite's approaches left."""
    small, large = (
        Size(s.tests, s.path, s.source_rows, database="PostgreSQL") for s in (lite.small, lite.large)
    )
    with pg_copies.server(server_url) as server:
        print(f"\nPostgreSQL {server.version()} ({server_url}): a template database per size, copied per run")

        def template(size: Size) -> pg_copies.Copies:
            started = time.perf_counter()
            made = server.template(size.path, size.tests)
            print(f"  template {made.template} made in {time.perf_counter() - started:.1f} s")
            return made

        outcome, references = run_database(small, large, template, args)
        for tests, url in references.items():
            if pg_baselines.snapshot_digest(url) != Copies.digest(lite_refs[tests]):
                diff = pg_baselines.first_difference(url, str(lite_refs[tests]), read_b=baselines._rows)
                raise BenchmarkError(
                    f"PostgreSQL and SQLite results differ at {tests} tests\n  first difference: {diff}"
                )
    return outcome


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    for line in machine_facts():
        print(line)
    if not BACKFILL.is_file():
        print(f"error: no backfill console script next to {sys.executable}", file=sys.stderr)
        return 2
    server_url = None if args.sqlite_only else args.postgres
    print(
        "\nEach approach runs in its own child process on a fresh copy of the database. 'seconds' is the\n"
        "child's wall time from spawn to exit (interpreter start-up and imports included); 'peak MB' is\n"
        "its own ru_maxrss (MB = 10^6 bytes); for backfill, the sum of its main process's and its\n"
        "extraction worker's (an upper bound: the forked worker shares pages with its parent).\n"
        "'CPU s' is its user + system time, the worker's included; 'cores' is CPU s / seconds, how many\n"
        "cores it kept busy (less moved by this machine's speed than the seconds are).\n"
        "backfill is\n"
        f"  {BACKFILL} run {' '.join(JOB)} -d COPY --quiet --json\n"
        "with its validation (the coverage validator) included; the set-based baseline is the two SQL\n"
        "statements plus the flag defaults and validates nothing, as issue 5 specifies.\n"
        "Source rows = tests + bugs.\n"
        "On PostgreSQL a copy is CREATE DATABASE ... TEMPLATE and a CHECKPOINT; the server's own CPU\n"
        "time and memory are not in 'CPU s', 'cores' or 'peak MB', which are the client's.\n"
    )
    print(f"{compile_bytecode(BACKFILL)}\n")
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"databases (cache: {workdir}):")
    small = Size(args.small, database(workdir, args.small))
    large = Size(args.tests, database(workdir, args.tests))
    for s in (small, large):
        s.source_rows = source_rows(s.path)

    try:
        startup = [measure([str(BACKFILL), "--version"]) for _ in range(args.repeat)]
        lite, references = run_database(small, large, lambda s: Copies(workdir, s.path), args)
        outcomes = [lite]
        if server_url:
            outcomes.append(run_postgres(server_url, lite, references, args))
        for ref in references.values():
            Copies.drop(ref)
    except BenchmarkError as e:
        print(f"\nBENCHMARK FAILED: {e}", file=sys.stderr)
        return 1

    databases = " and ".join(o.small.database for o in outcomes)
    print(
        "\nall approaches left identical test_features and bugs(id, test_feature_id) at every size, "
        f"on {databases}"
    )
    if not server_url:
        print("(PostgreSQL left out: pass --postgres URL or set BACKFILL_TEST_POSTGRES_URL)")
    print("\n".join(o.naive_note for o in outcomes))
    print("\nmedians:")
    print_table([s for size in zip(*((o.small, o.large) for o in outcomes), strict=True) for s in size])
    print(
        f"  (backfill's fixed start-up cost, `backfill --version`: "
        f"{statistics.median(m.seconds for m in startup):.2f} s, "
        f"{statistics.median(m.peak_mb for m in startup):.1f} MB)"
    )
    per_database = [(o.large.database, checks(o.large, o.small, o.naive_sizes)) for o in outcomes]
    print("\nratios (issue 5 targets on SQLite, issue 19's on PostgreSQL):")
    print_ratios(per_database)
    if args.plot:
        print(f"\nbackfill's first run at {large.tests} tests by --batch-size (medians):")
        print_sweep([o.large for o in outcomes])
    if args.markdown:
        print_markdown(outcomes, per_database)
    if args.plot:
        for path in write_plots(args.plot, outcomes):
            print(f"wrote {path}")
    return 0


def write_plots(directory: Path, outcomes: Sequence[Outcome]) -> list[Path]:
    """The performance page's images from this run's medians."""
    import plot  # matplotlib (the bench extra) only when plotting

    seconds = {
        o.small.database: {
            approach: {s.tests: m for s in (o.small, o.large) if (m := s.median(approach)) is not None}
            for approach in ORDER
        }
        for o in outcomes
    }
    rates = {o.large.database: {b: o.large.rate(b) for b in BATCH_SIZES} for o in outcomes}
    return plot.write(directory, seconds, rates, outcomes[0].large.tests)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
