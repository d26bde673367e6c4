"""plan_batch, applied batch after batch, gives what applying the changes one by one gives."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings, strategies as st

from backfill_core.changes import Update, Upsert, fields
from backfill_core.engine.planner import Plan, extracted, plan_batch

TARGET: tuple[str, tuple[str, ...]] = ("t", ("id",))
DEFAULTS = {"flag": False}
State = dict[int, dict[str, Any]]
NULLS = {"id": None, "a": None, "b": None, "flag": None}
"""A table row before anything is written: every column NULL."""

keys = st.integers(min_value=1, max_value=4)
values = st.fixed_dictionaries(
    {},
    optional={
        "a": st.none() | st.integers(min_value=0, max_value=2),
        "b": st.sampled_from(["x", "y"]),
        "flag": st.none() | st.booleans(),
    },
)
upserts = st.builds(lambda k, v: Upsert("t", {"id": k}, v, defaults=DEFAULTS), keys, values)
updates = st.builds(
    lambda k, v: Update("t", {"id": k}, {c: x for c, x in v.items() if c != "flag"}), keys, values
)
items = st.lists(st.lists(upserts | updates, min_size=1, max_size=3), max_size=12)
initial_states = st.dictionaries(
    keys, st.fixed_dictionaries({"a": st.integers(0, 2), "b": st.just("x"), "flag": st.booleans()})
).map(lambda d: {k: {"id": k, **v} for k, v in d.items()})


def one_by_one(initial: State, batch: list[list[Upsert | Update]]) -> tuple[State, list[int]]:
    """The reference: each source row applied alone, all or nothing."""
    state = copy.deepcopy(initial)
    failed = []
    for i, changes in enumerate(batch):
        if any(isinstance(c, Update) and c.key["id"] not in state for c in changes):
            failed.append(i)
            continue
        for c in changes:
            defaults = getattr(c, "defaults", {})
            new = {col: v for col, v in c.values.items() if not (v is None and col in defaults)}
            k = c.key["id"]
            if k in state:
                state[k].update(new)
            else:
                state[k] = {**NULLS, **defaults, "id": k, **new}
    return state, failed


def apply(state: State, plan: Plan) -> None:
    """Write a plan into ``state`` the way the engine writes it into a table."""
    writes = plan.writes.get(TARGET)
    if writes is None:
        return
    for row in writes.inserts:
        assert row["id"] not in state
        state[row["id"]] = {**NULLS, **row}
    for (key,), new in writes.updates:
        row = state[key]
        assert "id" not in new
        assert any(row.get(c) != v for c, v in new.items()), "an update that changes nothing"
        row.update(new)


@settings(max_examples=300, deadline=None)
@given(initial_states, items, st.integers(min_value=1, max_value=13))
def test_batches_of_any_size_match_one_by_one(
    initial: State, batch: list[list[Upsert | Update]], size: int
) -> None:
    state = copy.deepcopy(initial)
    failed: list[int] = []
    for start in range(0, len(batch), size):
        chunk = [
            extracted(start + i, [fields(c, "test") for c in changes])
            for i, changes in enumerate(batch[start : start + size])
        ]
        current: dict[Any, dict[tuple[Any, ...], dict[str, Any]]] = {
            TARGET: {(k,): dict(row) for k, row in state.items()}
        }
        plan = plan_batch(chunk, current, {})
        assert {f.kind for f in plan.errors} <= {"missing"}
        failed += [f.key for f in plan.errors]
        touched = plan.merged.get(TARGET, {})
        before = copy.deepcopy(state)
        apply(state, plan)
        assert plan.inserted == len(set(state) - set(before))
        assert plan.inserted + plan.updated == len(touched)  # unchanged rows are as in the database
        for (k,), row in touched.items():
            assert row is not None
            assert state[k] == {**NULLS, **row}
    expected, expected_failed = one_by_one(initial, batch)
    assert state == expected
    assert failed == expected_failed
