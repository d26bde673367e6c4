"""Control from another process through the ledger: ``backfill pause``, ``resume`` and ``throttle``
acting on a live ``backfill run``, on a SQLite file and on a scratch PostgreSQL database.

The run stops itself after its first batch (``BACKFILL_STOP_AT=test_features:committed:1``); the
control is set while it is stopped. The run reads the controls at most once per CONTROL_EVERY
seconds, so each test lets that much time pass since the stop before it sends SIGCONT: the next
batch then reads them, however fast or slow the machine. That the paused run commits nothing is
shown over heartbeats the waiting run writes itself, not over a sleep.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill_core.engine.throttle import CONTROL_EVERY
from support.backends import GOOD, KINDS, Backend, MakeBackend, backends
from support.cli import parse_json_output, run_cli
from support.processes import Spawned, wait_for

ROWS = 60
BATCH = 10
STOP_AFTER_FIRST = {"BACKFILL_STOP_AT": "test_features:committed:1"}


@pytest.fixture(params=KINDS)
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    with backends(request.param, tmp_path) as make:
        yield make


@pytest.fixture
def spawned(tmp_path: Path) -> Iterator[list[Spawned]]:
    procs: list[Spawned] = []
    yield procs
    for proc in procs:
        proc.stop()


def start(spawned: list[Spawned], tmp_path: Path, db: Backend, *args: str, stop: bool = True) -> Spawned:
    cmd = ["run", "test_features", "-d", db.url, "--batch-size", BATCH, "--no-validate", "-q", *args]
    proc = Spawned(cmd, tmp_path / "run", env=STOP_AFTER_FIRST if stop else None)
    spawned.append(proc)
    return proc


def stopped_after_first_batch(proc: Spawned) -> float:
    """Wait for the stop point; when it was seen (time.monotonic())."""
    proc.wait_stopped()
    return time.monotonic()


def carry_on(proc: Spawned, stopped_at: float) -> None:
    """SIGCONT once CONTROL_EVERY has passed since the stop: its next batch reads the controls."""
    time.sleep(max(0.0, stopped_at + CONTROL_EVERY - time.monotonic()))
    proc.resume()


def run_row(db: Backend) -> tuple[Any, ...]:
    """(processed, heartbeat_at as text, message) of run 1."""
    ((processed, heartbeat, message),) = db.rows(
        "SELECT processed, heartbeat_at, message FROM backfill_runs WHERE id = 1"
    )
    return processed, str(heartbeat), message


def status_of(db: Backend) -> dict[str, Any]:
    proc = run_cli(["status", "-d", db.url, "--json"])
    assert proc.returncode == 0, proc.stderr
    (run,) = parse_json_output(proc)
    return dict(run)


def cli_ok(*args: object) -> str:
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def acknowledged_pause(db: Backend, proc: Spawned) -> int:
    """Wait until the run says in the ledger that it is paused; the rows it had processed."""
    assert wait_for(lambda: (run_row(db)[2] or "").startswith("paused"), proc), "the run ended unpaused"
    processed, _, message = run_row(db)
    assert message == "paused by `backfill pause 1`; `backfill resume 1` lifts it"
    return int(processed)


def test_a_paused_run_commits_nothing_until_resumed_then_finishes(
    make_db: MakeBackend, spawned: list[Spawned], tmp_path: Path
) -> None:
    db = make_db([GOOD] * ROWS)
    proc = start(spawned, tmp_path, db)
    stopped_at = stopped_after_first_batch(proc)

    said = cli_ok("pause", "1", "-d", db.url)
    assert said.startswith("paused run 1 of test_features (running, pid ")
    assert said.rstrip().endswith("it finishes the batch in flight, then waits until `backfill resume 1`")
    assert status_of(db)["status"] == "paused"
    carry_on(proc, stopped_at)

    processed = acknowledged_pause(db, proc)
    heartbeats = {run_row(db)[1]}

    def beats() -> int:
        heartbeats.add(run_row(db)[1])
        return len(heartbeats)

    # Two more heartbeats from the waiting run: it has read its controls again, and committed nothing.
    assert wait_for(lambda: beats() >= 3, proc)
    assert run_row(db)[0] == processed == BATCH
    assert len(db.feature_tests()) == processed
    assert status_of(db)["status"] == "paused"

    said = cli_ok("resume", "1", "-d", db.url)
    assert said.startswith("resumed run 1 of test_features (running, pid ")
    done = proc.wait()

    assert done.returncode == 0, done.stderr
    assert "test_features: paused (`backfill pause 1` holds run 1)" in done.stderr
    assert "test_features: resumed" in done.stderr
    assert db.runs() == [(1, "test_features", "succeeded", ROWS, 0)]
    assert db.feature_tests() == list(range(1, ROWS + 1))
    assert run_row(db)[2] is None
    assert status_of(db)["status"] == "succeeded"


def test_sigint_while_paused_exits_130_and_the_run_resumes_once_the_pause_is_lifted(
    make_db: MakeBackend, spawned: list[Spawned], tmp_path: Path
) -> None:
    db = make_db([GOOD] * ROWS)
    proc = start(spawned, tmp_path, db)
    stopped_at = stopped_after_first_batch(proc)
    cli_ok("pause", "1", "-d", db.url)
    carry_on(proc, stopped_at)
    processed = acknowledged_pause(db, proc)

    proc.signal(signal.SIGINT)
    done = proc.wait()

    assert done.returncode == 130, done.stderr
    assert "interrupted; committed batches are kept" in done.stderr
    assert db.runs() == [(1, "test_features", "interrupted", processed, 0)]
    said = cli_ok("resume", "1", "-d", db.url)
    assert said.rstrip().endswith("it is interrupted: run the same `backfill run` command to resume it")
    again = run_cli(["run", "test_features", "-d", db.url, "--batch-size", BATCH, "--no-validate", "-q"])
    assert again.returncode == 0, again.stderr
    assert "resuming run 1 of test_features" in again.stderr
    assert db.runs() == [(1, "test_features", "succeeded", ROWS, 0)]
    assert db.feature_tests() == list(range(1, ROWS + 1))


def test_a_pause_on_an_extractor_holds_its_next_run_from_the_start(
    make_db: MakeBackend, spawned: list[Spawned], tmp_path: Path
) -> None:
    db = make_db([GOOD] * ROWS)
    said = cli_ok("pause", "test_features", "-d", db.url)
    assert said.startswith("paused test_features: its running run finishes the batch in flight")

    proc = start(spawned, tmp_path, db, stop=False)
    assert wait_for(lambda: "backfill_runs" in db.tables(), proc)
    assert wait_for(
        lambda: bool(db.rows("SELECT message FROM backfill_runs WHERE message LIKE 'paused%'")), proc
    )

    assert run_row(db)[0] == 0 and db.feature_tests() == []
    assert status_of(db)["status"] == "paused"
    assert cli_ok("resume", "test_features", "-d", db.url).startswith("resumed test_features")
    done = proc.wait()
    assert done.returncode == 0, done.stderr
    assert "paused (`backfill pause test_features` holds every run of test_features)" in done.stderr
    assert db.feature_tests() == list(range(1, ROWS + 1))


def test_throttle_from_another_process_changes_a_running_runs_rate(
    make_db: MakeBackend, spawned: list[Spawned], tmp_path: Path
) -> None:
    db = make_db([GOOD] * ROWS)
    proc = start(spawned, tmp_path, db, "--max-rows-per-second", "2")  # 5 s a batch, 30 s for the run
    stopped_at = stopped_after_first_batch(proc)

    said = cli_ok("throttle", "1", "--max-rows-per-second", "40", "-d", db.url)
    assert said.startswith("throttled run 1 of test_features (running, pid ")
    assert "--max-rows-per-second its command line's -> 40 rows/s" in said
    assert status_of(db)["controls"][0]["max_rows_per_second"] == 40
    carry_on(proc, stopped_at)
    done = proc.wait()

    assert done.returncode == 0, done.stderr
    assert "test_features: waiting: at most 2 rows/s (--max-rows-per-second)" in done.stderr
    assert "test_features: waiting: at most 40 rows/s (set by `backfill throttle 1`)" in done.stderr
    assert db.feature_tests() == list(range(1, ROWS + 1))
    shown = cli_ok("status", "-d", db.url).splitlines()
    assert "run 1: --max-rows-per-second 40 rows/s set by `backfill throttle 1`" in shown
    cleared = cli_ok("throttle", "1", "--clear", "-d", db.url)
    assert "--max-rows-per-second 40 rows/s -> its command line's" in cleared
    assert status_of(db)["controls"] == []


@pytest.mark.parametrize("command", [["pause"], ["throttle", "--max-rows-per-second", "5"]])
def test_a_finished_run_is_left_alone(make_db: MakeBackend, command: list[str]) -> None:
    db = make_db([GOOD] * 3)
    cli_ok("run", "test_features", "-d", db.url, "--no-validate", "-q")

    said = cli_ok(command[0], "1", *command[1:], "-d", db.url)

    assert said.startswith("run 1 of test_features (succeeded) has finished; nothing changed")
    assert f"`backfill {command[0]} test_features` acts on the running and next runs" in said
    assert db.scalar("SELECT count(*) FROM backfill_controls") == 0


@pytest.mark.parametrize(
    "args",
    [
        ["pause", "99"],
        ["resume", "99"],
        ["throttle", "99", "--max-rows-per-second", "5"],
        ["pause", "no_such_extractor"],
    ],
    ids=["pause", "resume", "throttle", "unknown-name"],
)
@pytest.mark.parametrize("ledger", [False, True], ids=["no-ledger", "ledger"])
def test_an_unknown_run_is_a_usage_error(make_db: MakeBackend, args: list[str], ledger: bool) -> None:
    db = make_db([GOOD] * 3)
    if ledger:
        cli_ok("run", "test_features", "-d", db.url, "--no-validate", "-q")

    proc = run_cli([*args, "-d", db.url])

    assert proc.returncode == 2, proc.stdout + proc.stderr
    if args[1] == "99":
        assert "no run 99 is recorded in" in proc.stderr
    else:
        assert "'no_such_extractor' is neither a run recorded in" in proc.stderr
    assert "backfill_controls" not in db.tables() or db.scalar("SELECT count(*) FROM backfill_controls") == 0
