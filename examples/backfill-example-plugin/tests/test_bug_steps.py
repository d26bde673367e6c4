"""Tests of ``bug_steps``, the example of a ``Children`` change: plain unit tests of ``extract``,
the testing kit's property checks (with rows already in ``bug_steps``, so that the checks see
rows updated and deleted as well as inserted), and the command line in-process."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from backfill_core import Children, RecordError, Ref
from backfill_core.plugins import PluginInfo
from backfill_core.testing import (
    CliResult,
    check_dry_run_agrees,
    check_idempotent,
    create_database,
    extractor_properties,
    payloads_like,
    rows,
    run_once,
    snapshot,
    well_formed_rows,
)
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from backfill_example import DDL, BugStepsExtractor, plugin

X = BugStepsExtractor()

# The application owns ``bugs``; in tests it only needs the columns the extractor reads.
BUGS = "CREATE TABLE bugs (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL DEFAULT 1, raw_data TEXT);"
SCHEMA = [BUGS, DDL]


def steps_of(raw: str | None) -> list[Children]:
    return X.extract({"id": 7, "raw_data": raw})


# -- extract on its own -------------------------------------------------------------------------------


def test_each_step_is_a_row_numbered_from_one() -> None:
    [change] = steps_of('{"title": "x", "steps": ["Open the app.", "Log in.", "Log in."]}')
    assert change == Children(
        "bug_steps",
        parent={"bug_id": 7},
        key=("step_no",),
        rows=[
            {"step_no": 1, "step": "Open the app."},
            {"step_no": 2, "step": "Log in."},
            {"step_no": 3, "step": "Log in."},
        ],
        requires=(Ref("bugs", "id", 7),),
    )


def test_an_empty_list_owns_no_rows() -> None:
    """``steps: []`` says the bug has no steps: a Children change with no rows deletes its rows."""
    [change] = steps_of('{"steps": []}')
    assert (change.parent, list(change.rows)) == ({"bug_id": 7}, [])


@pytest.mark.parametrize("raw", [None, "null", "{}", '{"steps": null}', '{"title": "no steps"}'])
def test_no_steps_named_writes_nothing(raw: str | None) -> None:
    """The JSON says nothing about the steps: the bug's rows, if any, are left as they are."""
    assert steps_of(raw) == []


@pytest.mark.parametrize(
    ("raw", "kind", "message"),
    [
        ('{"steps": "Open the app. Log in."}', "invalid-shape", "raw_data.steps is str, not a list"),
        ('{"steps": {"1": "Open the app."}}', "invalid-shape", "raw_data.steps is dict, not a list"),
        ('{"steps": ["Open the app.", 2]}', "invalid-type", "raw_data.steps[1] is int, not text"),
        ('{"steps": [null]}', "invalid-type", "raw_data.steps[0] is null, not text"),
        ('{"steps": [["Log in."]]}', "invalid-type", "raw_data.steps[0] is list, not text"),
        ('{"steps": ["a", "b\\u0000"]}', "invalid-value", "raw_data.steps[1] holds a NUL character"),
        ('["Open the app."]', "invalid-shape", "bugs.raw_data is list, not an object"),
        ('{"steps": ["Open', "invalid-json", "bugs.raw_data is not valid JSON"),
    ],
)
def test_anything_else_is_a_record_error(raw: str, kind: str, message: str) -> None:
    with pytest.raises(RecordError) as e:
        steps_of(raw)
    assert e.value.kind == kind
    assert str(e.value).startswith(message)


# -- the property checks -----------------------------------------------------------------------------

# One real bugs.raw_data document, cut down; payloads_like makes more of the same shape.
SAMPLE = {
    "id": 17,
    "title": "Checkout login cart payment search upload.",
    "severity": "high",
    "steps": ["Open the app.", "Log in.", "Add to cart."],
}


def mostly(usual: SearchStrategy[Any], *rare: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """``usual`` three times in four, else one of ``rare`` (``a | b`` would draw each as often);
    ``usual`` is also where hypothesis starts, and what it shrinks towards."""
    return st.integers(0, 3).flatmap(lambda n: st.one_of(*rare) if n == 3 else usual)


step = st.text(max_size=12)
steps = mostly(
    st.lists(step, max_size=5),  # what the application stores; [] included
    st.none(),
    st.lists(step | st.integers() | st.none(), min_size=1, max_size=3),  # an item not text, often
    st.text(max_size=10),
    st.integers(),
)
documents = mostly(
    payloads_like(SAMPLE, overrides={"steps": steps}),
    payloads_like({k: v for k, v in SAMPLE.items() if k != "steps"}),
)
# Bug ids 1..12, all of which have rows before the run (SEED): the first run of each batch
# updates and deletes some of them, not only inserts.
ROWS = mostly(well_formed_rows(X, {"raw_data": documents}, key=st.integers(1, 12)), rows(X))
SEED = {
    "bug_steps": [
        {"bug_id": bug, "step_no": n, "step": "" if n == 2 else f"step {n} of bug {bug}"}
        for bug in range(1, 13)
        for n in range(1, bug % 4 + 2)
    ]
}

# total, deterministic, declared, idempotent and dry run agrees, on generated rows.
test_bug_steps_properties = extractor_properties(
    X, schema=SCHEMA, seed=SEED, rows=ROWS, max_examples=150, min_changed=0.3
)


BATCH = [
    {"id": 1, "raw_data": json.dumps({"steps": ["Open the app."]})},  # shrinks from 3 steps
    {"id": 2, "raw_data": json.dumps({"steps": []})},  # loses its 2 steps
    {"id": 3, "raw_data": json.dumps({"title": "no steps key"})},  # left alone
    {"id": 4, "raw_data": json.dumps({"steps": ["Open the app.", "Tap Pay."]})},  # new
    {"id": 5, "raw_data": json.dumps({"steps": "Tap Pay."})},  # invalid-shape: left alone
    {"id": 6, "raw_data": json.dumps({"steps": ["Open", "Pay", "Wait"]})},  # the middle one changed
]
BEFORE = {
    1: ["Open the app.", "Log in.", "Add to cart."],
    2: ["Open the app.", "Log in."],
    3: ["Open the app."],
    5: ["Open the app."],
    6: ["Open", "Log in", "Wait"],
    9: ["A bug not in the batch."],
}
BEFORE_ROWS = {
    "bug_steps": [
        {"bug_id": bug, "step_no": n, "step": text}
        for bug, texts in BEFORE.items()
        for n, text in enumerate(texts, 1)
    ]
}


def test_a_batch_leaves_exactly_what_the_json_says(tmp_path: Path) -> None:
    path = create_database(tmp_path / "steps.db", SCHEMA, {"bugs": BATCH, **BEFORE_ROWS})
    dry = run_once(X, path, dry_run=True)
    real = run_once(X, path)
    counts = ("inserted", "updated", "deleted", "unchanged")
    # bug 1: one unchanged, two deleted; bug 2: two deleted; bug 4: two inserted; bug 6: one
    # updated, two unchanged.
    assert [getattr(real, c) for c in counts] == [2, 1, 4, 3]
    assert [getattr(dry, c) for c in counts] == [2, 1, 4, 3]
    assert dict(real.errors) == {("record", "invalid-shape"): 1}
    assert snapshot(path, ["bug_steps"]) == {
        "bug_steps": [
            (1, 1, "Open the app."),
            (3, 1, "Open the app."),
            (4, 1, "Open the app."),
            (4, 2, "Tap Pay."),
            (5, 1, "Open the app."),
            (6, 1, "Open"),
            (6, 2, "Pay"),
            (6, 3, "Wait"),
            (9, 1, "A bug not in the batch."),
        ]
    }
    again = run_once(X, path)
    assert [getattr(again, c) for c in counts] == [0, 0, 0, 6]


def test_the_batch_applied_twice_is_applied_once(tmp_path: Path) -> None:
    check_idempotent(X, BATCH, tmp_path / "twice.db", schema=SCHEMA, seed=BEFORE_ROWS)
    check_dry_run_agrees(X, BATCH, tmp_path / "dry.db", schema=SCHEMA, seed=BEFORE_ROWS)


# -- the plugin through the command line (in-process) ---------------------------------------------


def test_example_ddl_then_run_then_shrink(
    register_plugin: Callable[..., PluginInfo],
    backfill_database: Callable[..., Path],
    backfill_cli: Callable[..., CliResult],
) -> None:
    register_plugin(plugin)
    bugs: list[dict[str, Any]] = [
        {"id": 1, "raw_data": {"steps": ["Open the app.", "Log in.", "Pay."]}},
        {"id": 2, "raw_data": {"steps": ["Open the app."]}},
        {"id": 3, "raw_data": {"steps": []}},
        {"id": 4, "raw_data": {"title": "no steps"}},
    ]
    db = backfill_database(BUGS, rows={"bugs": bugs})
    ddl = backfill_cli(["example-ddl"])
    assert ddl.exit_code == 0, ddl.stderr
    assert ddl.stdout == backfill_cli(["severity-ddl"]).stdout == DDL
    with sqlite3.connect(db) as conn:
        conn.executescript(ddl.stdout)

    first = backfill_cli(["run", "bug_steps", "-d", db, "-q", "--json"])
    assert first.exit_code == 0, first.stderr
    [stats] = first.json()["extractors"]
    assert (stats["inserted"], stats["updated"], stats["deleted"]) == (4, 0, 0)
    metrics = {m["metric"]: (m["numerator"], m["denominator"]) for m in first.json()["validation"]}
    assert metrics == {"bugs_with_steps": (2, 2), "empty_steps_cleared": (1, 1)}

    with sqlite3.connect(db) as conn:
        conn.execute("""UPDATE bugs SET raw_data = '{"steps": ["Open the app."]}' WHERE id = 1""")
        conn.execute("""UPDATE bugs SET raw_data = '{"steps": []}' WHERE id = 2""")
    second = backfill_cli(["run", "bug_steps", "-d", db, "-q"])
    assert second.exit_code == 0, second.stderr
    header, row = second.stdout.splitlines()[1:3]
    assert header.split() == [
        "extractor", "processed", "inserted", "updated", "deleted", "unchanged", "errors", "seconds"
    ]  # fmt: skip
    assert row.split()[:7] == ["bug_steps", "4", "0", "0", "3", "1", "0"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM bug_steps").fetchall() == [(1, 1, "Open the app.")]
        assert conn.execute("SELECT deleted FROM backfill_runs ORDER BY id").fetchall() == [(0,), (3,)]
