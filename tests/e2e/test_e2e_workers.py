"""``backfill run --workers N``, seen from outside: the same tables, errors, ledger totals and
summary as one process, on SQLite and PostgreSQL; extraction in N worker processes; a dry run
that says what a run would do. Killing a worker or the command: tests/crash/test_workers_kill.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.backends import BROKEN, GOOD, KINDS, Backend, backends, builtin_backend
from support.cli import RunCli, parse_json_output, plugin_env

JOB = ["run", "test_features", "bug_attribution"]
LEDGER = (
    "SELECT id, extractor, status, processed, total, inserted, updated, deleted, unchanged, "
    "record_errors, batch_errors, last_key FROM backfill_runs ORDER BY id"
)
COUNTS = ("extractor", "processed", "total", "inserted", "updated", "deleted", "unchanged", "errors_by_tier")


def _outcome(db: Backend, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "features": db.rows("SELECT * FROM test_features ORDER BY id"),
        "bugs": db.rows("SELECT id, test_feature_id FROM bugs ORDER BY id"),
        "errors": db.rows(
            "SELECT run_id, key, tier, kind, message FROM backfill_errors ORDER BY run_id, key"
        ),
        "ledger": db.rows(LEDGER),
        "ranges": db.rows("SELECT COUNT(*) FROM backfill_ranges"),
        "summary": [{k: x.get(k) for k in COUNTS} for x in summary["extractors"]],
        "validation": summary["validation"],
    }


@pytest.mark.parametrize("kind", KINDS)
def test_workers_leave_what_one_process_leaves(
    kind: str, template_db: Path, tmp_path: Path, cli: RunCli
) -> None:
    outcomes = {}
    for workers, batch in ((1, "37"), (2, "37"), (4, "37"), (3, "500")):
        with builtin_backend(kind, template_db, tmp_path / f"{workers}-{batch}.db") as db:
            args = [*JOB, "-d", db.url, "--json", "--batch-size", batch, "--workers", str(workers)]
            # Parts commit in another order than one process's batches: an error rate judged on
            # the first few batches would stop them at other points (see the error-rate test).
            args += ["--max-error-rate", "0.5"]
            first = cli(args)
            assert first.returncode == 0, first.stderr
            again = cli([*args, "--restart"])  # over the same data: every row unchanged
            assert again.returncode == 0, again.stderr
            outcomes[(workers, batch)] = (
                _outcome(db, parse_json_output(first)),
                [{k: x.get(k) for k in COUNTS} for x in parse_json_output(again)["extractors"]],
            )
    one = outcomes[(1, "37")]
    assert one[0]["features"] and one[0]["errors"] and one[0]["ranges"] == [(0,)]  # it compares something
    assert all(x["unchanged"] and not x["inserted"] for x in one[1]), one[1]
    for key, outcome in outcomes.items():
        assert outcome == one, f"--workers {key[0]} --batch-size {key[1]} differs from one process"


@pytest.mark.parametrize("kind", KINDS)
def test_a_dry_run_with_workers_says_what_one_process_says(
    kind: str, template_db: Path, tmp_path: Path, cli: RunCli
) -> None:
    summaries = []
    with builtin_backend(kind, template_db, tmp_path / "cache.db") as db:
        for workers in ("1", "3"):
            proc = cli(
                [*JOB, "-d", db.url, "--json", "--dry-run", "--batch-size", "53", "--workers", workers]
            )
            assert proc.returncode == 0, proc.stderr
            summaries.append([{k: x.get(k) for k in COUNTS} for x in parse_json_output(proc)["extractors"]])
        assert db.rows("SELECT COUNT(*) FROM test_features") == [(0,)]
        assert "backfill_runs" not in db.tables()
    assert summaries[0][0]["inserted"] > 0
    assert summaries[1] == summaries[0]


@pytest.mark.parametrize("kind", KINDS)
def test_extraction_runs_in_as_many_workers_as_asked_for(
    kind: str, template_db: Path, tmp_path: Path, cli: RunCli, probe_site: Path
) -> None:
    with builtin_backend(kind, template_db, tmp_path / "cache.db") as db:
        db.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, pid INTEGER, note TEXT)")
        proc = cli(
            ["run", "probe_pid", "-d", db.url, "-q", "--batch-size", "20", "--workers", "3"],
            plugin_env(probe_site),
        )
        assert proc.returncode == 0, proc.stderr
        pids = [pid for (pid,) in db.rows("SELECT DISTINCT pid FROM probe")]
        tests = db.rows("SELECT COUNT(*) FROM tests")
        assert db.rows("SELECT COUNT(*) FROM probe") == tests
    assert len(pids) == 3, pids


@pytest.mark.parametrize("kind", KINDS)
def test_the_error_rate_stops_workers_as_it_stops_one_process(kind: str, tmp_path: Path, cli: RunCli) -> None:
    tests = [BROKEN if i % 5 == 0 else GOOD for i in range(1, 201)]  # 20% of the rows fail
    outcomes = []
    with backends(kind, tmp_path) as make:
        for workers in ("1", "2"):
            db = make(tests)
            args = [
                "run",
                "test_features",
                "-d",
                db.url,
                "--json",
                "--batch-size",
                "10",
                "--workers",
                workers,
                "--no-validate",  # a fifth of the tests have no feature
            ]
            stopped = cli([*args, "--max-error-rate", "0.1"])
            assert stopped.returncode == 1, stopped.stderr
            (stats,) = parse_json_output(stopped)["extractors"]
            assert "error rate 20.0% is over --max-error-rate 10.0%" in stats["stopped"], stats
            # judged once a page's worth of rows per worker is in: a part's last pages hold 5 rows
            assert 10 * int(workers) <= stats["processed"] <= 10 * int(workers) + 5, stats
            resumed = cli([*args, "--max-error-rate", "0.5"])
            assert resumed.returncode == 0, resumed.stderr
            assert "resuming run 1 of test_features" in resumed.stderr
            outcomes.append((db.feature_tests(), db.runs()))
    assert outcomes[0][0] == [i for i in range(1, 201) if i % 5]
    assert outcomes[1] == outcomes[0]


def test_workers_and_no_worker_contradict_each_other(cli: RunCli, fresh_db: Path) -> None:
    proc = cli([*JOB, "-d", fresh_db, "--workers", "2", "--no-worker"])
    assert proc.returncode == 2
    assert "--no-worker extracts in this process; it cannot be combined with --workers 2" in proc.stderr
