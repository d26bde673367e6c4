"""Tests of the example plugin, written the way a plugin author would: plain unit tests of
``extract``, the testing kit's property checks, and the pytest fixtures backfill provides
(``register_plugin``, ``backfill_database``, ``backfill_cli``: no import needed)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from backfill_core import RecordError
from backfill_core.plugins import PluginInfo
from backfill_core.testing import (
    CliResult,
    check_dry_run_agrees,
    check_idempotent,
    extractor_properties,
    payloads_like,
    rows,
    snapshot,
    well_formed_rows,
)
from hypothesis import strategies as st

from backfill_example import DDL, SEVERITIES, BugSeverityExtractor, plugin

X = BugSeverityExtractor()

# The application owns ``bugs``; in tests it only needs the columns the extractor reads.
BUGS = "CREATE TABLE bugs (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL DEFAULT 1, raw_data TEXT);"
SCHEMA = [BUGS, DDL]

# One real bugs.raw_data document; payloads_like makes more of the same shape.
SAMPLE = {
    "id": 17,
    "title": "Checkout login cart payment search upload.",
    "severity": "high",
    "status": "accepted",
    "test_feature": {"id": 4, "title": "Login checkout search."},
    "device": {"name": "Pixel 8", "os_version": "14.0"},
    "steps": ["Open the app.", "Log in.", "Add to cart."],
    "expected_result": "The cart shows the item.",
    "actual_result": "The cart is empty.",
}
bug_json = payloads_like(
    SAMPLE,
    overrides={
        "severity": st.sampled_from(SEVERITIES) | st.none() | st.text(max_size=10) | st.integers(),
        "test_feature": st.none() | st.fixed_dictionaries({"id": st.integers(1, 50)}),
    },
)
ROWS = well_formed_rows(X, {"raw_data": bug_json}) | rows(X)


# -- extract on its own -------------------------------------------------------------------------------


@pytest.mark.parametrize("severity", SEVERITIES)
def test_known_severity_is_one_upsert(severity: str) -> None:
    [change] = X.extract({"id": 7, "raw_data": f'{{"severity": "{severity}", "title": "x"}}'})
    assert change.table == "bug_severities"
    assert change.key == {"bug_id": 7}
    assert change.values == {"severity": severity}


@pytest.mark.parametrize("raw", [None, "{}", '{"severity": null}', '{"title": "no severity"}'])
def test_no_severity_writes_nothing(raw: str | None) -> None:
    assert X.extract({"id": 7, "raw_data": raw}) == []


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ('{"severity": "blocker"}', "unknown-value"),
        ('{"severity": "HIGH"}', "unknown-value"),
        ('{"severity": 3}', "invalid-type"),
        ('["high"]', "invalid-shape"),
        ('{"severity": "hi', "invalid-json"),
    ],
)
def test_anything_else_is_a_record_error(raw: str, kind: str) -> None:
    with pytest.raises(RecordError) as e:
        X.extract({"id": 7, "raw_data": raw})
    assert e.value.kind == kind


# -- the property checks -----------------------------------------------------------------------------

# total, deterministic, declared, idempotent and dry run agrees, on generated rows.
test_bug_severity_properties = extractor_properties(X, schema=SCHEMA, rows=ROWS, max_examples=150)


def test_a_batch_applied_twice_is_applied_once(tmp_path: Path) -> None:
    batch = [
        {"id": 1, "raw_data": '{"severity": "low"}'},
        {"id": 2, "raw_data": '{"severity": "critical"}'},
        {"id": 3, "raw_data": '{"severity": "blocker"}'},
    ]
    check_idempotent(X, batch, tmp_path / "twice.db", schema=SCHEMA)
    assert snapshot(tmp_path / "twice.db", ["bug_severities"]) == {
        "bug_severities": [(1, "low"), (2, "critical")]
    }
    check_dry_run_agrees(X, batch, tmp_path / "dry.db", schema=SCHEMA)


# -- the plugin through the command line (in-process) ---------------------------------------------


def test_plugin_registers_its_extractor_validator_and_command(
    register_plugin: Callable[..., PluginInfo],
) -> None:
    info = register_plugin(plugin)
    assert info.extractors == ["bug_severity", "bug_steps"]
    assert info.validators == ["severity_coverage", "steps_coverage"]
    assert info.commands


def test_severity_ddl_then_run(
    register_plugin: Callable[..., PluginInfo],
    backfill_database: Callable[..., Path],
    backfill_cli: Callable[..., CliResult],
) -> None:
    register_plugin(plugin)
    db = backfill_database(
        BUGS,
        rows={
            "bugs": [
                {"id": 1, "raw_data": {"severity": "low", "title": "a"}},
                {"id": 2, "raw_data": {"severity": "critical"}},
                {"id": 3, "raw_data": '{"severity": "hi'},  # truncated: a record error
                {"id": 4, "raw_data": None},
                {"id": 5, "raw_data": {"title": "no severity"}},
            ]
        },
    )
    missing = backfill_cli(["run", "bug_severity", "-d", db, "-q"])
    assert missing.exit_code == 3, missing.stderr
    assert "bug_severities" in missing.stderr

    ddl = backfill_cli(["severity-ddl"])
    assert ddl.exit_code == 0, ddl.stderr
    with sqlite3.connect(db) as conn:
        conn.executescript(ddl.stdout)

    result = backfill_cli(["run", "bug_severity", "-d", db, "-q", "--json", "--max-error-rate", "0.5"])
    assert result.exit_code == 0, result.stderr
    report = result.json()
    [stats] = report["extractors"]
    assert (stats["processed"], stats["inserted"], stats["errors"]) == (5, 2, 1)
    assert stats["errors_by_tier"] == {"record": {"invalid-json": 1}}
    [metric] = report["validation"]
    assert (metric["metric"], metric["numerator"], metric["denominator"]) == ("bugs_with_severity", 2, 2)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM bug_severities ORDER BY bug_id").fetchall() == [
            (1, "low"),
            (2, "critical"),
        ]
