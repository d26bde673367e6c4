"""Composite keys against a single-column key (issue 16), on SQLite and on PostgreSQL.

    python benchmarks/composite_keys.py [--orders 20000] [--repeat 3] [--postgres URL] [--workdir DIR]

A source table ``orders(id, payload)`` holds about three items per order as JSON. Two extractors
write the same item rows: ``items_single`` to ``order_items_single``, keyed by ``item_id`` alone,
and ``items_composite`` to ``order_items``, keyed by ``(order_id, line_no)`` (its primary key).
Each is run in this process through ``run_backfill`` with the default options, into an emptied
table (first run: every row inserted) and then again over the same data (re-run: every row read
back and found unchanged). Each repeat times the four runs back to back, the two extractors'
turns alternating between repeats; the figure that matters is the ratio composite / single of
each repeat (its runs were next to each other, so the machine's drift moves it least), and the
median of those ratios is printed for the first run and the re-run on each database.

The PostgreSQL half runs in a scratch database created on the server named by ``--postgres``
(default ``$BACKFILL_TEST_POSTGRES_URL``) and dropped afterwards; without a server it is skipped.
The two tables must hold the same items after every run, and a re-run must write nothing:
otherwise the script exits 1 (its figures would compare different work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from targets import PostgresTarget, SqliteTarget, Target

from backfill_core import (
    Extractor,
    RecordError,
    RunOptions,
    RunReport,
    Upsert,
    hookimpl,
    make_registry,
    parse_json,
    resolve_url,
    run_backfill,
)
from backfill_core.engine.stats import ErrorLog

HERE = Path(__file__).resolve().parent
SINGLE = "items_single"
COMPOSITE = "items_composite"
FIRST = "first run"
RERUN = "re-run"
SCHEMA = (
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
    "CREATE TABLE order_items_single (item_id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, "
    "line_no INTEGER NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL)",
    "CREATE TABLE order_items (order_id INTEGER NOT NULL, line_no INTEGER NOT NULL, sku TEXT NOT NULL, "
    "qty INTEGER NOT NULL, PRIMARY KEY (order_id, line_no))",
)
TABLE = {SINGLE: "order_items_single", COMPOSITE: "order_items"}
ITEMS = "SELECT order_id, line_no, sku, qty FROM {} ORDER BY order_id, line_no"


class BenchmarkError(Exception):
    """The two tables disagree, or a run did not do what it should: the figures cannot be trusted."""


def _items(row: Any) -> list[dict[str, Any]]:
    items = parse_json(row["payload"], "orders.payload")
    if not isinstance(items, list):
        raise RecordError("orders.payload is not a list", kind="invalid-shape")
    return items


class ItemsSingle(Extractor):
    """One row per item, keyed by the item's own id."""

    name = SINGLE
    source = "orders"
    columns = ("id", "payload")
    writes = {"order_items_single": ("item_id", "order_id", "line_no", "sku", "qty")}

    def extract(self, row: Any) -> list[Upsert]:
        return [
            Upsert(
                "order_items_single",
                {"item_id": item["id"]},
                {"order_id": row["id"], "line_no": item["line"], "sku": item["sku"], "qty": item["qty"]},
            )
            for item in _items(row)
        ]


class ItemsComposite(Extractor):
    """The same rows, keyed by (order_id, line_no)."""

    name = COMPOSITE
    source = "orders"
    columns = ("id", "payload")
    writes = {"order_items": ("order_id", "line_no", "sku", "qty")}

    def extract(self, row: Any) -> list[Upsert]:
        return [
            Upsert(
                "order_items",
                {"order_id": row["id"], "line_no": item["line"]},
                {"sku": item["sku"], "qty": item["qty"]},
            )
            for item in _items(row)
        ]


class Plugin:
    @hookimpl
    def register_extractors(self, register: Callable[[Extractor], None]) -> None:
        register(ItemsSingle())
        register(ItemsComposite())


def orders(n: int, seed: int = 16) -> tuple[list[tuple[int, str]], int]:
    """``n`` orders of 1 to 5 items (3 on average), and the number of items."""
    rng = random.Random(seed)
    rows, items = [], 0
    for order_id in range(1, n + 1):
        lines = [
            {
                "id": items + line,
                "line": line,
                "sku": f"SKU-{rng.randrange(10_000):05d}",
                "qty": rng.randint(1, 9),
            }
            for line in range(1, rng.randint(1, 5) + 1)
        ]
        items += len(lines)
        rows.append((order_id, json.dumps(lines)))
    return rows, items


# --- the two databases -----------------------------------------------------------------------------


@contextmanager
def scratch_postgres(server: str) -> Iterator[str]:
    """The URL of a new database on ``server``, dropped on exit."""
    name = f"backfill_bench_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


# --- measuring -------------------------------------------------------------------------------------


@dataclass
class Timing:
    seconds: float
    cpu: float
    """CPU seconds of this process and of the extraction worker (SQLite), not of a server."""


@dataclass
class Results:
    kind: str
    runs: dict[tuple[str, str], list[Timing]] = field(default_factory=dict)

    def add(self, extractor: str, run: str, timing: Timing) -> None:
        self.runs.setdefault((extractor, run), []).append(timing)

    def median(self, extractor: str, run: str, attr: str = "seconds") -> float:
        return statistics.median(float(getattr(t, attr)) for t in self.runs[(extractor, run)])

    def paired(self, run: str, attr: str = "seconds") -> float:
        """The median over repeats of composite / single in that repeat."""
        pairs = zip(self.runs[(COMPOSITE, run)], self.runs[(SINGLE, run)], strict=True)
        return statistics.median(float(getattr(c, attr) / getattr(s, attr)) for c, s in pairs)


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the extraction worker)."""
    return sum(
        u.ru_utime + u.ru_stime
        for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def timed_run(target: Target, extractor: str, *, items: int, first: bool) -> Timing:
    options = RunOptions()
    report = RunReport(database=target.url, dry_run=False, errors=ErrorLog(keep=10))
    registry = make_registry(Plugin())
    started, cpu = time.perf_counter(), cpu_seconds()
    asyncio.run(run_backfill(registry, [extractor], resolve_url(target.url), options, report, validate=False))
    timing = Timing(time.perf_counter() - started, cpu_seconds() - cpu)
    (stats,) = report.extractors
    done = (stats.inserted, stats.updated, stats.unchanged, sum(stats.errors.values()))
    expected = (items, 0, 0, 0) if first else (0, 0, items, 0)
    if done != expected:
        raise BenchmarkError(
            f"{target.kind} {extractor} {'first run' if first else 're-run'}: inserted, updated, "
            f"unchanged, errors = {done}, expected {expected}"
        )
    return timing


def measure(target: Target, repeat: int, items: int, log: bool = True) -> Results:
    results = Results(target.kind)
    for i in range(repeat):
        order = (SINGLE, COMPOSITE) if i % 2 == 0 else (COMPOSITE, SINGLE)
        for extractor in order:
            target.empty(TABLE[extractor])
        for first in (True, False):
            for extractor in order:
                timing = timed_run(target, extractor, items=items, first=first)
                run = FIRST if first else RERUN
                results.add(extractor, run, timing)
                if log:
                    print(
                        f"  {target.kind:<10} {extractor:<16} {run:<9} {timing.seconds:7.2f} s"
                        f"  {timing.cpu:6.2f} CPU s",
                        flush=True,
                    )
            single, composite = (target.sql(ITEMS.format(TABLE[x])) for x in (SINGLE, COMPOSITE))
            if len(single) != items or single != composite:
                raise BenchmarkError(f"{target.kind}: the two tables do not hold the same {items} items")
    return results


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
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rev = subprocess.run(
        ["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    versions = ", ".join(f"{d} {metadata.version(d)}" for d in ("backfill", "sqlalchemy", "asyncpg"))
    return [
        f"machine: nproc {nproc}, {cpu}, {platform.platform()}",
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; {versions}; "
        f"source tree {rev or 'unknown'}",
    ]


def server_version(target: Target) -> str:
    return str(target.sql("SHOW server_version")[0][0]) if isinstance(target, PostgresTarget) else ""


def print_results(all_results: Sequence[Results], repeat: int) -> None:
    print(
        f"\nmedians of {repeat} repeat(s); ratio = median of each repeat's composite / single (the"
        "\nfigure the target applies to); CPU = this process's and the worker's, not the server's:"
    )
    print(
        f"  {'database':<10}  {'run':<9}  {'single s':>8}  {'composite s':>11}  {'ratio':>6}  "
        f"{'CPU ratio':>9}  target <= 1.3"
    )
    for r in all_results:
        for run in (FIRST, RERUN):
            ratio = r.paired(run)
            print(
                f"  {r.kind:<10}  {run:<9}  {r.median(SINGLE, run):8.2f}  {r.median(COMPOSITE, run):11.2f}"
                f"  {ratio:6.2f}  {r.paired(run, 'cpu'):9.2f}  {'PASS' if ratio <= 1.3 else 'FAIL'}"
            )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=20_000, help="source rows (about 3 items each)")
    p.add_argument("--repeat", type=int, default=3, help="timed rounds per database (medians)")
    p.add_argument(
        "--postgres",
        default=os.environ.get("BACKFILL_TEST_POSTGRES_URL"),
        metavar="URL",
        help="a PostgreSQL server to make a scratch database on (default $BACKFILL_TEST_POSTGRES_URL)",
    )
    p.add_argument("--sqlite-only", action="store_true", help="leave PostgreSQL out")
    p.add_argument(
        "--workdir", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)"
    )
    args = p.parse_args(argv)
    if args.orders < 1 or args.repeat < 1:
        p.error("--orders and --repeat must be at least 1")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    for line in machine_facts():
        print(line)
    rows, items = orders(args.orders)
    print(
        f"\n{args.orders} orders, {items} items; each run in this process, default options, no validation\n"
    )
    all_results = []
    try:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            lite = SqliteTarget(Path(tmp) / "orders.db", SCHEMA, "orders", rows)
            all_results.append(measure(lite, args.repeat, items))
        if args.postgres and not args.sqlite_only:
            with scratch_postgres(args.postgres) as url:
                pg = PostgresTarget(url, SCHEMA, "orders", rows)
                print(f"  (PostgreSQL {server_version(pg)})")
                all_results.append(measure(pg, args.repeat, items))
        else:
            print("  (PostgreSQL left out: pass --postgres URL or set BACKFILL_TEST_POSTGRES_URL)")
    except BenchmarkError as e:
        print(f"\nBENCHMARK FAILED: {e}", file=sys.stderr)
        return 1
    print_results(all_results, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
