"""Ctrl-C in the middle of a run: exit 130, committed batches kept, no half-written batch.

The run is a real subprocess on a 3000-test SQLite database, or a 200-test scratch PostgreSQL
database (the same behaviour in a fraction of the time), with ``--batch-size 20``. It stops itself
(``BACKFILL_STOP_AT``) once the phase under test has committed a few batches, gets SIGINT while
stopped, and is let go on: the signal lands mid-phase however fast the machine. Test and bug ids
are 1..N with no gaps and batches are read in id order, so after a clean interrupt the rows
written are exactly a full run's rows for the ids up to a multiple of the batch size.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from support.backends import KINDS, Backend, builtin_backend
from support.builtin_job import attributions, features_by_test, snapshot
from support.cli import BACKFILL, make_env, run_cli
from support.db import Where, query, sqlite_path
from support.processes import wait_until_stopped

BATCH = 20
COMMAND = ["run", "test_features", "bug_attribution", "--batch-size", str(BATCH), "--quiet"]
COMMAND += ["--max-error-rate", "0.5"]  # a batch this small may be 10% messy rows


def _up_to_batch_boundary(ids: set[int]) -> int:
    top = max(ids)
    return -(-top // BATCH) * BATCH


@pytest.fixture(params=KINDS)
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Backend, Where]]:
    """The database to interrupt, and the same database after one full run: the big template on
    SQLite; on PostgreSQL the small one, both scratch databases (a full run's rows as PostgreSQL
    stores them)."""
    kind = request.param
    if kind == "sqlite":
        with builtin_backend(kind, request.getfixturevalue("big_template_db"), tmp_path / "big.db") as db:
            yield db, request.getfixturevalue("big_full_run_db")
        return
    template = request.getfixturevalue("template_db")
    with ExitStack() as stack:
        db = stack.enter_context(builtin_backend(kind, template, tmp_path / "db"))
        full = stack.enter_context(builtin_backend(kind, template, tmp_path / "full"))
        done = run_cli(["run", "test_features", "bug_attribution", "-d", full.url, "--quiet"])
        assert done.returncode == 0, done.stderr
        yield db, full


@pytest.mark.parametrize("phase", ["test_features", "bug_attribution"])
def test_sigint_exits_130_and_keeps_only_whole_batches(databases: tuple[Backend, Where], phase: str) -> None:
    db, big_full_run_db = databases
    args = [str(BACKFILL), *COMMAND, "-d", db.url]
    env = make_env({"BACKFILL_STOP_AT": f"{phase}:committed:3"})
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_stopped(proc)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130, stdout + stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stdout
    assert "after the batch in flight" in stdout  # it finishes the batch, then stops
    file = sqlite_path(db)
    assert file is None or not Path(f"{file}-journal").exists(), "the rollback journal was left behind"

    full_features = features_by_test(big_full_run_db)
    full_bugs = attributions(big_full_run_db)
    features = features_by_test(db)
    bugs = attributions(db)
    assert features, "test_features had committed before the interrupt"

    # every test whose features appear has all of them, and the rows are a full run's rows
    assert {t: full_features[t] for t in features} == features
    full_rows = set(query(big_full_run_db, "SELECT * FROM test_features"))
    assert set(query(db, "SELECT * FROM test_features")) <= full_rows
    # whole batches only: everything up to a batch boundary, nothing after it
    cut = _up_to_batch_boundary(set(features))
    assert features == {t: ids for t, ids in full_features.items() if t <= cut}

    if phase == "bug_attribution":
        assert features == full_features, "bug_attribution runs after test_features is done"
        assert bugs, "bug_attribution had committed before the interrupt"
        cut = _up_to_batch_boundary(set(bugs))
        assert bugs == {b: f for b, f in full_bugs.items() if b <= cut}
    else:
        assert bugs == {} or features == full_features

    # "run the same command to continue" ends where a full run ends
    resumed = subprocess.run(args, env=make_env(), capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert snapshot(db) == snapshot(big_full_run_db)
