"""What ``backfill status`` adds under its table for a run: a distributed run's parts by status,
a running run's time to go at its rate so far (``app/control.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from backfill_core.app.control import lines, shown


def _summary(**fields: Any) -> dict[str, Any]:
    base = {"id": 4, "extractor": "test_features", "status": "running", "processed": 250, "total": 1000}
    return {**base, "rows_per_second": 50.0, **fields}


def test_a_running_run_says_how_long_it_has_to_go() -> None:
    run = shown(_summary(), [])
    assert run["eta_seconds"] == pytest.approx(15.0)
    assert run["parts"] is None
    assert lines(run) == ["run 4: about 15s to go at 50 rows/s"]


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(59.4, "59s"), (61, "1m 01s"), (3599, "59m 59s"), (3600, "1h 00m"), (7322, "2h 02m")],
)
def test_the_time_to_go_is_read_at_a_glance(seconds: float, said: str) -> None:
    run = shown(_summary(processed=0, total=round(seconds * 10), rows_per_second=10.0), [])
    assert lines(run) == [f"run 4: about {said} to go at 10 rows/s"]


def test_a_distributed_run_lists_its_parts_by_status_leaving_out_none() -> None:
    parts = {"queued": 12, "running": 3, "done": 17, "failed": 0}
    run = shown(_summary(), [], parts)
    assert run["parts"] == parts
    assert lines(run) == ["run 4: parts 12 queued, 3 running, 17 done; about 15s to go at 50 rows/s"]


@pytest.mark.parametrize(
    "fields",
    [{"status": "succeeded"}, {"status": "failed"}, {"total": None}, {"rows_per_second": 0.0}],
    ids=["succeeded", "failed", "no total", "no rate yet"],
)
def test_no_time_to_go_unless_running_with_a_total_and_a_rate(fields: dict[str, Any]) -> None:
    run = shown(_summary(**fields), [])
    assert run["eta_seconds"] is None
    assert lines(run) == []
