"""The application's write latencies with and without a backfill running beside it (issue 18).

    python benchmarks/busy_application.py [--tests 20000] [--rate 100] [--repeat 1]
        [--postgres SERVER_URL] [--workdir DIR] [-- BACKFILL_RUN_OPTIONS...]

On a synthetic cache in WAL mode (as the application keeps it), and on PostgreSQL too when
``--postgres`` names a server on which it may create and drop scratch databases, each repeat:

1. starts the process playing the application (tests/support/application.py) on a fresh copy,
   starts ``backfill run test_features bug_attribution`` once it has written 20 times, and stops
   it once the backfill has ended: the writes made while the backfill ran are "beside";
2. runs the application alone on another fresh copy for as many writes: "alone".

It prints, for each database, the median, p99 and maximum write latency of both, and beside over
alone as ratios; and exits 1 if any application write failed or the backfill did not exit 0.
Options after ``--`` are passed to ``backfill run`` (``-- --batch-size 100``, ``-- --no-worker``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from run import BACKFILL, JOB, child_env, machine_facts

from backfill_plugins.testmanagement import synthetic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.application import Application, Latency, Write

WARM_UP = 20
"""Application writes before the backfill starts."""


@dataclass
class Pair:
    beside: Latency
    alone: Latency
    backfill_seconds: float
    slowest: Write
    """The slowest write beside the backfill."""


class Failed(Exception):
    """An application write failed or the backfill did not succeed: the figures mean nothing."""


@contextmanager
def fresh(kind: str, template: Path, workdir: Path, name: str) -> Iterator[str]:
    """A new copy of ``template`` (a SQLite file or a scratch PostgreSQL database); its URL."""
    if kind == "sqlite":
        path = workdir / f"{name}.db"
        for leftover in workdir.glob(f"{name}.db*"):
            leftover.unlink()
        shutil.copy(template, path)
        yield str(path)
    else:
        from support.postgres import scratch_database

        with scratch_database(template) as url:
            yield url


def _failures(writes: Sequence[Write], where: str) -> None:
    failed = [w for w in writes if w.error is not None]
    if failed:
        raise Failed(
            f"{len(failed)} of {len(writes)} application writes failed {where}; first: {failed[0].error}"
        )


def beside(url: str, workdir: Path, rate: float, extra: Sequence[str]) -> tuple[list[Write], float]:
    """The application's writes while a backfill ran, and the backfill's seconds."""
    app = Application(url, workdir / f"beside-{time.monotonic_ns()}.jsonl", rate=rate)
    try:
        app.wait_writes(WARM_UP)
        began = time.monotonic()
        proc = subprocess.run(
            [str(BACKFILL), "run", *JOB, "-d", url, "--quiet", "--no-validate", *extra],
            env=child_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        ended = time.monotonic()
        writes = app.stop()
    finally:
        app.kill()
    if proc.returncode != 0:
        raise Failed(f"backfill exited with {proc.returncode}: {proc.stderr.strip()}")
    _failures(writes, "beside the backfill")
    return [w for w in writes if began <= w.at <= ended], ended - began


def alone(url: str, workdir: Path, rate: float, count: int) -> list[Write]:
    app = Application(url, workdir / f"alone-{time.monotonic_ns()}.jsonl", rate=rate)
    try:
        app.wait_writes(count)
        writes = app.stop()
    finally:
        app.kill()
    _failures(writes, "alone")
    return writes[:count]  # a write may have begun before it was told to stop


def measure_pair(kind: str, template: Path, workdir: Path, rate: float, extra: Sequence[str]) -> Pair:
    with fresh(kind, template, workdir, "beside") as url:
        during, seconds = beside(url, workdir, rate, extra)
    if not during:
        raise Failed("the application wrote nothing while the backfill ran: use a larger --tests")
    with fresh(kind, template, workdir, "alone") as url:
        quiet = alone(url, workdir, rate, max(len(during), WARM_UP))
    return Pair(Latency.of(during), Latency.of(quiet), seconds, max(during, key=lambda w: w.ms))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


def print_pairs(kind: str, pairs: Sequence[Pair]) -> None:
    print(f"\n{kind}: application write latency (ms), with and without a backfill beside it")
    print(f"{'':<14}{'writes':>8}{'median':>10}{'p99':>10}{'max':>10}")
    for i, p in enumerate(pairs, 1):
        print(f"repeat {i}: backfill ran {p.backfill_seconds:.1f} s")
        for name, lat in (("beside", p.beside), ("alone", p.alone)):
            print(f"  {name:<12}{lat.writes:>8}{lat.median:>10.1f}{lat.p99:>10.1f}{lat.max:>10.1f}")
        b, a = p.beside, p.alone
        print(
            f"  slowest beside: {p.slowest.ms:.1f} ms, of which {p.slowest.begin_ms:.1f} ms waiting to begin"
        )
        print(
            f"  {'beside/alone':<12}{'':>8}{_ratio(b.median, a.median):>10}"
            f"{_ratio(b.p99, a.p99):>10}{_ratio(b.max, a.max):>10}"
        )


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--tests", type=int, default=20_000, help="tests in the synthetic cache (about 4 bugs each)"
    )
    parser.add_argument("--rate", type=float, default=100, help="application writes per second (default 100)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--postgres", metavar="SERVER_URL", help="also on this PostgreSQL server")
    parser.add_argument("--workdir", type=Path, help="where the databases go (default: a temporary folder)")
    return parser.parse_args(argv), extra


def main(argv: Sequence[str]) -> int:
    args, extra = parse_args(argv)
    if args.postgres:
        os.environ["BACKFILL_TEST_POSTGRES_URL"] = args.postgres  # support.postgres's server
    for fact in machine_facts():
        print(fact)
    with tempfile.TemporaryDirectory(prefix="busy-app-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        template = workdir / f"busy-template-{args.tests}.db"
        template.unlink(missing_ok=True)
        counts = synthetic.build(template, args.tests, wal=True)
        print(
            f"synthetic cache: {counts.tests} tests, {counts.bugs} bugs, WAL; "
            f"application at {args.rate:g} writes/s"
        )
        if extra:
            print(f"backfill run options: {' '.join(extra)}")
        kinds = ["sqlite", *(["postgresql"] if args.postgres else [])]
        try:
            for kind in kinds:
                pairs = [measure_pair(kind, template, workdir, args.rate, extra) for _ in range(args.repeat)]
                print_pairs(kind, pairs)
        except Failed as e:
            print(f"FAILED: {e}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
