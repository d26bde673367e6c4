"""The pure steps between an extractor's changes and the plan: the declared-columns check at its
edge (a change may touch *every* declared column), planning leaving the plugin's own mappings
alone, and the references of every row being looked up whatever rows come before it. Each test
kills mutants of changes.py or planner.py that the other fast tests let live.
"""

from __future__ import annotations

from typing import Any

from backfill_core.changes import Ref, Update, Upsert, checked, fields
from backfill_core.engine.planner import extracted, op, refs_needed

WRITES = {"dst": frozenset({"id", "n"})}


def test_a_change_may_touch_exactly_the_declared_columns() -> None:
    """Key, values and defaults each naming every declared column: allowed (a subset, not a
    proper one, is what the declaration asks)."""
    every = {"id": 1, "n": 2}
    for change in (
        Upsert("dst", {"id": 1}, every),
        Upsert("dst", {"id": 1}, {"n": 2}, defaults=every),
        Update("dst", every, {"n": 3}),
    ):
        f = fields(change, "x")
        assert checked(f, WRITES, "x") is f


def test_planning_a_change_does_not_modify_the_plugins_values() -> None:
    """A defaulted column set to None is left out of what is written, in a copy: the mapping the
    extractor returned keeps it."""
    values: dict[str, Any] = {"n": None, "m": 1}
    change = Upsert("dst", {"id": 1}, values, defaults={"n": 0})

    planned = op(fields(change, "x"))

    assert planned[2] == {"m": 1}
    assert values == {"n": None, "m": 1}


def test_the_references_of_a_row_after_one_without_any_are_looked_up() -> None:
    plain = extracted(1, [fields(Upsert("dst", {"id": 1}, {"n": 1}), "x")])
    referring = extracted(
        2, [fields(Update("dst", {"id": 2}, {"n": 2}, requires=(Ref("src", "id", 7),)), "x")]
    )

    assert refs_needed([plain, referring]) == {("src", ("id",)): (set(), {7})}
