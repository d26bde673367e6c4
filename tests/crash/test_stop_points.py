"""BACKFILL_STOP_AT holds a run exactly where the crash tests aim, on SQLite and PostgreSQL alike;
killed there, the same command takes the run over and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING, Any

import pytest

from backfill_core.engine.stoppoints import StopPoint, stop_points, stops_at_exit
from backfill_core.errors import UsageError
from support.backends import Backend

if TYPE_CHECKING:
    from support.consistency import Reference
    from support.crash import Crash

BATCH = 10
N = 4
COMMITTED_BEFORE = {"started": 0, "written": (N - 1) * BATCH, "committed": N * BATCH}
"""Source rows the ledger shows as processed while the run is stopped at each point in batch N."""


def _features(crash: Crash, db: Backend) -> list[tuple[Any, ...]]:
    return crash.query(db, "SELECT id, test_id FROM test_features ORDER BY id")


@pytest.mark.parametrize("point", list(COMMITTED_BEFORE))
def test_a_run_stops_where_asked_and_a_kill_there_is_resumed(
    point: str, small: Backend, crash: Crash, small_reference: Reference
) -> None:
    cmd = ["run", "test_features", "-d", small.url, "-q", "--batch-size", str(BATCH), "--no-validate"]
    proc = crash.spawn(cmd, env={"BACKFILL_STOP_AT": f"test_features:{point}:{N}"})
    proc.wait_stopped()
    status = crash.run_cli(["status", "-d", small.url, "--json"])
    assert status.returncode == 0, status.stderr
    (run,) = json.loads(status.stdout)
    assert (run["status"], run["processed"]) == ("running", COMMITTED_BEFORE[point]), run

    proc.signal(signal.SIGKILL)
    assert proc.wait().returncode == -signal.SIGKILL
    again = crash.run_cli(cmd)
    assert again.returncode == 0, again.stderr
    assert f"taking over run {run['id']} of test_features" in again.stderr, again.stderr
    assert _features(crash, small) == [(r[0], r[2]) for r in small_reference.features]


def test_stop_point_spec() -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKFILL_STOP_AT", "test_features:written:3")
        assert stop_points("test_features") == [StopPoint("written", 3)]
        assert stop_points("bug_attribution") == []
        assert not stops_at_exit()
        mp.setenv("BACKFILL_STOP_AT", "test_features:started")
        assert stop_points("test_features") == [StopPoint("started", 1)]
        mp.setenv("BACKFILL_STOP_AT", "test_features:written:2, bug_attribution:committed,test_features:exit")
        assert stop_points("test_features") == [StopPoint("written", 2)]
        assert stop_points("bug_attribution") == [StopPoint("committed", 1)]
        assert stops_at_exit()
        mp.setenv("BACKFILL_STOP_AT", "*:exit")
        assert stop_points("test_features") == []
        assert stops_at_exit()
        for bad in (
            "test_features",
            "test_features:halfway",
            "test_features:written:0",
            "x:committed:y",
            "test_features:written:2,",
            "test_features:exit,test_features:halfway",
        ):
            mp.setenv("BACKFILL_STOP_AT", bad)
            with pytest.raises(UsageError, match="BACKFILL_STOP_AT"):
                stop_points("test_features")
            assert not stops_at_exit()
        mp.delenv("BACKFILL_STOP_AT")
        assert stop_points("test_features") == []
        assert not stops_at_exit()
