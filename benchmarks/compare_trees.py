"""This tree's backfill against another checkout's, paired, on the built-in job (SQLite).

    python benchmarks/compare_trees.py OTHER_TREE [--tests 20000] [--repeat 3] [--workdir DIR]

OTHER_TREE is a checkout with its own virtualenv (``OTHER_TREE/.venv``, as the README's commands
make), or that virtualenv itself. Each repeat runs the set-based SQL, then the first run, second
run and dry run of both trees on fresh copies of the same database, the trees in alternating
order, and checks that every run leaves the set-based SQL's tables. It prints, for each tree, the
median over repeats of each run's time over the set-based SQL's time in the same repeat, and this
tree's over the other's: whether a change made backfill slower, measured in one invocation.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import baselines
from run import (
    BACKFILL,
    JOB,
    BenchmarkError,
    Copies,
    baseline_cmd,
    check_same,
    compile_bytecode,
    database,
    machine_facts,
    measure,
)

RUNS = ("first run", "second run", "dry run")


def backfill_runs(script: Path, copies: Copies, name: str, reference: Path) -> dict[str, float]:
    """The first, second and dry run of ``script`` on fresh copies: seconds of each."""
    ref_digest = baselines.snapshot_digest(reference)
    pristine = baselines.snapshot_digest(copies.template)
    out: dict[str, float] = {}

    def cmd(db: Path, *extra: str) -> list[str]:
        return [str(script), "run", *JOB, "-d", str(db), "--quiet", "--json", *extra]

    db = copies.fresh(name)
    out["first run"] = measure(cmd(db)).seconds
    check_same(reference, ref_digest, db, f"{script} first run vs set-based SQL")
    out["second run"] = measure(cmd(db)).seconds
    check_same(reference, ref_digest, db, f"{script} second run vs set-based SQL")
    copies.drop(db)
    db = copies.fresh(f"{name}-dry")
    out["dry run"] = measure(cmd(db, "--dry-run")).seconds
    if baselines.snapshot_digest(db) != pristine:
        raise BenchmarkError(f"{script} --dry-run changed the tables of {db}")
    copies.drop(db)
    return out


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("other", type=Path, help="the other checkout (with its .venv), or a virtualenv")
    p.add_argument("--tests", type=int, default=20_000, help="tests in the database")
    p.add_argument("--repeat", type=int, default=3, help="repeats (medians)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/backfill-bench"), help="database cache")
    args = p.parse_args(argv)
    found = [
        s for s in (args.other / ".venv" / "bin" / "backfill", args.other / "bin" / "backfill") if s.is_file()
    ]
    if not found:
        p.error(f"no backfill console script in {args.other}/.venv/bin or {args.other}/bin")
    other = found[0].absolute()
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    for line in machine_facts():
        print(line)
    trees = {"this tree": BACKFILL, "other tree": other}
    print("\n".join(f"{label}: {script}" for label, script in trees.items()))
    for script in trees.values():
        print(compile_bytecode(script))
    args.workdir.mkdir(parents=True, exist_ok=True)
    template = database(args.workdir, args.tests)
    copies = Copies(args.workdir, template)
    ratios: dict[str, dict[str, list[float]]] = {t: {r: [] for r in RUNS} for t in trees}
    try:
        for i in range(args.repeat):
            reference = copies.fresh(f"set-based-{i}")
            sql = measure(baseline_cmd("set-based", reference)).seconds
            order = list(trees) if i % 2 == 0 else list(reversed(trees))
            for label in order:
                seconds = backfill_runs(trees[label], copies, f"{label.split()[0]}-{i}", reference)
                for run, s in seconds.items():
                    ratios[label][run].append(s / sql)
                shown = "  ".join(f"{run} {s:.2f} s" for run, s in seconds.items())
                print(f"  repeat {i + 1}: {label:<10}  set-based {sql:.2f} s  {shown}", flush=True)
            copies.drop(reference)
    except BenchmarkError as e:
        print(f"\nBENCHMARK FAILED: {e}", file=sys.stderr)
        return 1
    print(f"\nmedian of each repeat's ratio to the set-based SQL, {args.tests} tests, {args.repeat} repeats:")
    print(f"  {'':<11}" + "".join(f"{run:>12}" for run in RUNS))
    for label in trees:
        print(f"  {label:<11}" + "".join(f"{statistics.median(ratios[label][r]):>12.2f}" for r in RUNS))
    this_over_other = [
        statistics.median(a / b for a, b in zip(ratios["this tree"][r], ratios["other tree"][r], strict=True))
        for r in RUNS
    ]
    print(f"  {'this/other':<11}" + "".join(f"{v:>12.2f}" for v in this_over_other))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
