"""plan_batch: the pure decision of what a batch inserts, updates, leaves alone or rejects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from backfill_core.changes import Change, Children, Ref, Update, Upsert, fields
from backfill_core.engine.planner import Extracted, Plan, extracted, plan_batch

FEATURES = ("test_features", ("id",))
BUGS = ("bugs", ("id",))
FLAGS = {"enable_default": False, "enable_visual": False}

Current = dict[tuple[str, tuple[str, ...]], dict[tuple[Any, ...], dict[str, Any]]]
Referenced = dict[tuple[str, tuple[str, ...]], dict[Any, dict[str, Any]]]


def has_writes(plan: Plan) -> bool:
    return any(w.inserts or w.updates or w.deletes for w in plan.writes.values())


def item(key: Any, *changes: Change) -> Extracted:
    return extracted(key, [fields(c, "test") for c in changes])


def feature(fid: int, **values: Any) -> Upsert:
    return Upsert("test_features", {"id": fid}, values, defaults=FLAGS)


def plan(
    batch: Sequence[Extracted],
    current: Current | None = None,
    referenced: Referenced | None = None,
    sample_size: int = 0,
) -> Plan:
    return plan_batch(batch, current or {}, referenced or {}, sample_size=sample_size)


def rows(p: Plan, target: tuple[str, tuple[str, ...]]) -> tuple[list[dict[str, Any]], list[Any]]:
    w = p.writes[target]
    return w.inserts, [(dict(zip(w.key_cols, key, strict=True)), values) for key, values in w.updates]


# -- insert / update / unchanged ---------------------------------------------------------------


def test_new_row_is_inserted() -> None:
    p = plan([item(1, feature(10, title="a", enable_default=True, enable_visual=False))])
    assert (p.inserted, p.updated, p.unchanged) == (1, 0, 0)
    inserts, updates = rows(p, FEATURES)
    assert inserts == [{"id": 10, "title": "a", "enable_default": True, "enable_visual": False}]
    assert updates == []
    assert p.errors == []
    assert has_writes(p)


def test_existing_row_with_different_value_is_updated() -> None:
    current: Current = {FEATURES: {(10,): {"id": 10, "title": "old", "enable_default": True}}}
    p = plan([item(1, feature(10, title="new", enable_default=True))], current)
    assert (p.inserted, p.updated, p.unchanged) == (0, 1, 0)
    inserts, updates = rows(p, FEATURES)
    assert inserts == []
    assert updates == [({"id": 10}, {"title": "new", "enable_default": True})]
    assert p.merged[FEATURES][(10,)] == {"id": 10, "title": "new", "enable_default": True}


def test_existing_row_with_equal_values_is_unchanged() -> None:
    current: Current = {FEATURES: {(10,): {"id": 10, "title": "same", "enable_default": True}}}
    p = plan([item(1, feature(10, title="same", enable_default=True))], current)
    assert (p.inserted, p.updated, p.unchanged) == (0, 0, 1)
    assert rows(p, FEATURES) == ([], [])
    assert not has_writes(p)


def test_value_none_outside_defaults_overwrites_existing_value() -> None:
    current: Current = {FEATURES: {(10,): {"id": 10, "title": "old"}}}
    p = plan([item(1, feature(10, title=None))], current)
    assert rows(p, FEATURES)[1] == [({"id": 10}, {"title": None})]


# -- defaults ----------------------------------------------------------------------------------


def test_defaults_column_none_takes_default_on_insert() -> None:
    p = plan([item(1, feature(10, title="t", enable_default=None, enable_visual=True))])
    assert rows(p, FEATURES)[0] == [{"id": 10, "title": "t", "enable_default": False, "enable_visual": True}]


def test_defaults_column_none_keeps_existing_value_on_update() -> None:
    current: Current = {
        FEATURES: {(10,): {"id": 10, "title": "old", "enable_default": True, "enable_visual": True}}
    }
    p = plan([item(1, feature(10, title="new", enable_default=None, enable_visual=None))], current)
    assert rows(p, FEATURES)[1] == [({"id": 10}, {"title": "new"})]
    merged = p.merged[FEATURES][(10,)]
    assert merged is not None
    assert merged["enable_default"] is True


def test_defaults_column_none_alone_leaves_existing_row_unchanged() -> None:
    current: Current = {FEATURES: {(10,): {"id": 10, "title": "t", "enable_default": True}}}
    p = plan([item(1, feature(10, title="t", enable_default=None))], current)
    assert (p.inserted, p.updated, p.unchanged) == (0, 0, 1)


def test_defaults_column_with_value_overrides_existing() -> None:
    current: Current = {FEATURES: {(10,): {"id": 10, "enable_default": True}}}
    p = plan([item(1, feature(10, enable_default=False))], current)
    assert rows(p, FEATURES)[1] == [({"id": 10}, {"enable_default": False})]


# -- merging within a batch ----------------------------------------------------------------------


def test_two_changes_to_one_key_merge_last_wins() -> None:
    p = plan(
        [
            item(1, feature(10, title="first", description="d1")),
            item(2, feature(10, title="second")),
        ]
    )
    assert p.inserted == 1
    inserts, _ = rows(p, FEATURES)
    assert inserts == [
        {
            "id": 10,
            "title": "second",
            "description": "d1",
            "enable_default": False,
            "enable_visual": False,
        }
    ]


def test_later_none_in_defaults_column_keeps_earlier_value_in_batch() -> None:
    p = plan(
        [
            item(1, feature(10, enable_default=True, enable_visual=True)),
            item(2, feature(10, enable_default=None, enable_visual=False)),
        ]
    )
    assert rows(p, FEATURES)[0] == [{"id": 10, "enable_default": True, "enable_visual": False}]


def test_later_change_updates_existing_row_once() -> None:
    current: Current = {FEATURES: {(10,): {"id": 10, "title": "old"}}}
    p = plan([item(1, feature(10, title="mid")), item(2, feature(10, title="last"))], current)
    assert (p.inserted, p.updated, p.unchanged) == (0, 1, 0)
    assert rows(p, FEATURES)[1] == [({"id": 10}, {"title": "last"})]


def test_changes_that_cancel_out_are_unchanged() -> None:
    current: Current = {FEATURES: {(10,): {"id": 10, "title": "old"}}}
    p = plan([item(1, feature(10, title="mid")), item(2, feature(10, title="old"))], current)
    assert (p.inserted, p.updated, p.unchanged) == (0, 0, 1)
    assert not has_writes(p)


# -- Update of a missing row --------------------------------------------------------------------


def test_update_of_missing_row_fails_and_source_row_contributes_nothing() -> None:
    batch = [
        item(
            "src-1",
            feature(10, title="would be inserted"),
            Update("bugs", {"id": 99}, {"test_feature_id": 10}),
            feature(11, title="also dropped"),
        ),
        item("src-2", feature(12, title="kept")),
    ]
    p = plan(batch)
    assert len(p.errors) == 1
    failure = p.errors[0]
    assert failure.key == "src-1"
    assert failure.kind == "missing"
    assert "bugs" in failure.message and "id=99" in failure.message
    inserts, _ = rows(p, FEATURES)
    assert [r["id"] for r in inserts] == [12]
    assert p.inserted == 1
    assert BUGS not in p.writes
    assert (10,) not in p.merged[FEATURES] and (11,) not in p.merged[FEATURES]


def test_update_of_existing_row() -> None:
    current: Current = {BUGS: {(5,): {"id": 5, "test_feature_id": None}}}
    p = plan([item(5, Update("bugs", {"id": 5}, {"test_feature_id": 3}))], current)
    assert p.errors == []
    assert rows(p, BUGS)[1] == [({"id": 5}, {"test_feature_id": 3})]


def test_update_of_row_upserted_earlier_in_the_batch_is_not_missing() -> None:
    batch = [
        item(1, Upsert("bugs", {"id": 5}, {"customer_id": 1})),
        item(2, Update("bugs", {"id": 5}, {"test_feature_id": 3})),
    ]
    p = plan(batch)
    assert p.errors == []
    assert rows(p, BUGS)[0] == [{"id": 5, "customer_id": 1, "test_feature_id": 3}]


def test_failed_source_row_does_not_make_later_update_succeed() -> None:
    batch = [
        item(1, Upsert("bugs", {"id": 5}, {"customer_id": 1}), Update("bugs", {"id": 6}, {})),
        item(2, Update("bugs", {"id": 5}, {"test_feature_id": 3})),
    ]
    p = plan(batch)
    assert [(f.key, f.kind) for f in p.errors] == [(1, "missing"), (2, "missing")]
    assert not has_writes(p)


# -- references --------------------------------------------------------------------------------


def attribution(bug: int, fid: int, customer: int) -> Update:
    return Update(
        "bugs",
        {"id": bug},
        {"test_feature_id": fid},
        requires=(Ref("test_features", "id", fid, match={"customer_id": customer}),),
    )


BUG_ROWS: Current = {BUGS: {(b,): {"id": b, "test_feature_id": None} for b in range(1, 10)}}


def test_ref_to_missing_row_is_an_integrity_failure() -> None:
    p = plan([item(1, attribution(1, 777, customer=4))], BUG_ROWS, {FEATURES: {}})
    assert len(p.errors) == 1
    f = p.errors[0]
    assert (f.key, f.kind) == (1, "integrity")
    assert "test_features" in f.message and "id" in f.message and "777" in f.message
    assert not has_writes(p)


def test_ref_with_mismatching_match_column_is_an_integrity_failure() -> None:
    referenced: Referenced = {FEATURES: {7: {"id": 7, "customer_id": 2}}}
    p = plan([item(1, attribution(1, 7, customer=4))], BUG_ROWS, referenced)
    assert len(p.errors) == 1
    f = p.errors[0]
    assert f.kind == "integrity"
    assert "test_features" in f.message and "customer_id" in f.message
    assert "7" in f.message and "2" in f.message and "4" in f.message
    assert not has_writes(p)


def test_ref_failure_drops_every_change_of_that_source_row() -> None:
    batch = [item(1, feature(10, title="x"), attribution(1, 777, customer=4))]
    p = plan(batch, BUG_ROWS)
    assert [f.kind for f in p.errors] == ["integrity"]
    assert p.inserted == 0
    assert not has_writes(p)


def _needs_feature(fid: int, feature_id: int, independent: bool = True) -> Upsert:
    return Upsert(
        "test_features",
        {"id": fid},
        {"feature_id": feature_id},
        requires=(Ref("features", "id", feature_id),),
        independent=independent,
    )


KNOWN: Referenced = {("features", ("id",)): {5: {"id": 5}}}


def test_failed_independent_change_is_dropped_alone_and_recorded() -> None:
    batch = [item(1, _needs_feature(10, 5), _needs_feature(11, 999), _needs_feature(12, 5))]
    p = plan(batch, {}, KNOWN)
    assert [(f.key, f.kind) for f in p.errors] == [(1, "integrity")]
    assert "features.id=999 does not exist" in p.errors[0].message
    assert [r["id"] for r in rows(p, FEATURES)[0]] == [10, 12]
    assert p.inserted == 2


def test_every_failed_independent_change_is_named_in_the_rows_one_failure() -> None:
    p = plan([item(1, _needs_feature(10, 998), _needs_feature(11, 999))], {}, KNOWN)
    (f,) = p.errors
    assert "998" in f.message and "999" in f.message
    assert not has_writes(p)


def test_a_failed_change_that_is_not_independent_still_drops_the_whole_row() -> None:
    batch = [item(1, _needs_feature(10, 5), _needs_feature(11, 999, independent=False))]
    p = plan(batch, {}, KNOWN)
    assert [f.kind for f in p.errors] == ["integrity"]
    assert not has_writes(p)


def test_independent_update_of_a_missing_row_is_dropped_alone() -> None:
    batch = [
        item(
            1, feature(10, title="x"), Update("bugs", {"id": 404}, {"test_feature_id": 10}, independent=True)
        )
    ]
    p = plan(batch, BUG_ROWS)
    assert [f.kind for f in p.errors] == ["missing"]
    assert [r["id"] for r in rows(p, FEATURES)[0]] == [10]


def test_satisfied_ref_lets_the_change_through() -> None:
    referenced: Referenced = {FEATURES: {7: {"id": 7, "customer_id": 4}}}
    p = plan([item(1, attribution(1, 7, customer=4))], BUG_ROWS, referenced)
    assert p.errors == []
    assert rows(p, BUGS)[1] == [({"id": 1}, {"test_feature_id": 7})]


def test_ref_satisfied_by_upsert_earlier_in_the_same_batch() -> None:
    batch = [
        item("t1", feature(7, customer_id=4, test_id=1)),
        item(2, attribution(2, 7, customer=4)),
    ]
    p = plan(batch, BUG_ROWS, {FEATURES: {}})
    assert p.errors == []
    assert rows(p, BUGS)[1] == [({"id": 2}, {"test_feature_id": 7})]


def test_ref_checks_match_against_upsert_earlier_in_the_batch() -> None:
    referenced: Referenced = {FEATURES: {7: {"id": 7, "customer_id": 4}}}
    batch = [
        item("t1", feature(7, customer_id=5)),  # the feature moves to customer 5
        item(2, attribution(2, 7, customer=4)),
        item(3, attribution(3, 7, customer=5)),
    ]
    p = plan(batch, BUG_ROWS, referenced)
    assert [(f.key, f.kind) for f in p.errors] == [(2, "integrity")]
    assert rows(p, BUGS)[1] == [({"id": 3}, {"test_feature_id": 7})]


def test_ref_is_not_satisfied_by_upsert_of_a_failed_source_row() -> None:
    batch = [
        item("t1", feature(7, customer_id=4), Update("bugs", {"id": 404}, {})),
        item(2, attribution(2, 7, customer=4)),
    ]
    p = plan(batch, BUG_ROWS, {FEATURES: {}})
    assert [(f.key, f.kind) for f in p.errors] == [("t1", "missing"), (2, "integrity")]
    assert not has_writes(p)


# -- keys and samples ---------------------------------------------------------------------------


def test_updates_never_include_key_columns() -> None:
    target = ("links", ("a", "b"))
    current: Current = {target: {(1, 2): {"a": 1, "b": 2, "v": "old"}}}
    change = Upsert("links", {"b": 2, "a": 1}, {"a": 1, "b": 2, "v": "new"})
    p = plan([item(1, change)], current)
    _, updates = rows(p, target)
    assert updates == [({"a": 1, "b": 2}, {"v": "new"})]
    for _key, values in updates:
        assert not set(values) & {"a", "b"}


def test_composite_key_is_addressed_by_sorted_columns() -> None:
    target = ("links", ("a", "b"))
    current: Current = {target: {(1, 2): {"a": 1, "b": 2, "v": "x"}}}
    p = plan([item(1, Upsert("links", {"b": 2, "a": 1}, {"v": "x"}))], current)
    assert p.unchanged == 1


def test_samples_are_limited_by_sample_size() -> None:
    current: Current = {FEATURES: {(1,): {"id": 1, "title": "old"}}}
    batch = [item(i, feature(i, title=f"t{i}")) for i in range(1, 6)]
    assert plan(batch, current).samples == []
    p = plan(batch, current, sample_size=2)
    assert len(p.samples) == 2
    assert p.samples[0] == {
        "table": "test_features",
        "action": "update",
        "key": {"id": 1},
        "changes": {"title": ["old", "t1"]},
    }
    assert p.samples[1]["action"] == "insert"
    assert p.samples[1]["row"]["id"] == 2
    assert len(plan(batch, current, sample_size=100).samples) == 5


def test_unchanged_rows_are_not_sampled() -> None:
    current: Current = {FEATURES: {(1,): {"id": 1, "title": "same"}}}
    p = plan([item(1, feature(1, title="same"))], current, sample_size=5)
    assert p.samples == []


def _apply(state: dict[Any, dict[str, Any]], p: Plan, target: tuple[str, tuple[str, ...]]) -> None:
    w = p.writes.get(target)
    if w is None:
        return
    for row in w.inserts:
        state[row["id"]] = dict(row)
    for (key,), values in w.updates:
        state[key].update(values)


def test_merged_matches_the_rows_after_the_writes() -> None:
    current: Current = {FEATURES: {(1,): {"id": 1, "title": "old", "enable_default": True}}}
    batch = [item(1, feature(1, title="new", enable_default=None)), item(2, feature(2, title="b"))]
    p = plan(batch, current)
    state: dict[Any, dict[str, Any]] = {1: dict(current[FEATURES][(1,)])}
    _apply(state, p, FEATURES)
    merged: Mapping[tuple[Any, ...], dict[str, Any] | None] = p.merged[FEATURES]
    assert {k[0]: v for k, v in merged.items()} == state


# -- Children: the rows under a parent ----------------------------------------------------------

ITEMS = ("order_items", ("line_no", "order_id"))
"""order_items keyed (order_id, line_no): the key columns sorted, as targets name them."""
ORDER_7 = ((ITEMS, ("order_id",)), (7,))


def lines(order: int, *rows: tuple[int, str]) -> Children:
    return Children(
        "order_items", {"order_id": order}, ("line_no",), [{"line_no": n, "sku": s} for n, s in rows]
    )


def under_order_7(*line_nos: int) -> dict[Any, dict[Any, list[tuple[Any, ...]]]]:
    """The ``children`` plan_batch is given: the keys of the rows now under order 7."""
    (parents, parent) = ORDER_7
    return {parents: {parent: [(n, 7) for n in line_nos]}}


def test_a_later_children_change_for_the_same_parent_names_its_set() -> None:
    """Two source rows of one batch own order 7's lines: the later one's set is the one written,
    and the line only the earlier one named is deleted like any other line left out."""
    current: Current = {ITEMS: {(n, 7): {"order_id": 7, "line_no": n, "sku": "old"} for n in (3, 4)}}
    batch = [item(1, lines(7, (1, "a"), (2, "b"), (3, "c"))), item(2, lines(7, (1, "A"), (2, "b")))]
    p = plan_batch(batch, current, {}, under_order_7(3, 4), sample_size=3)
    w = p.writes[ITEMS]
    assert w.inserts == [{"line_no": 1, "order_id": 7, "sku": "A"}, {"line_no": 2, "order_id": 7, "sku": "b"}]
    assert (w.updates, sorted(w.deletes)) == ([], [(3, 7), (4, 7)])
    assert (p.inserted, p.updated, p.deleted, p.unchanged) == (2, 0, 2, 0)
    assert p.merged[ITEMS] == {
        (1, 7): {"line_no": 1, "order_id": 7, "sku": "A"},
        (2, 7): {"line_no": 2, "order_id": 7, "sku": "b"},
        (3, 7): None,
        (4, 7): None,
    }
    assert [x["action"] for x in p.samples] == ["insert", "insert", "delete"]  # no more than asked
    assert p.samples[2] == {"table": "order_items", "action": "delete", "key": {"line_no": 3, "order_id": 7}}


def test_the_deletes_of_every_owned_table_are_counted() -> None:
    notes = Children("order_notes", {"order_id": 7}, ("note_no",), [])
    batch = [item(1, lines(7), notes)]
    children = {
        **under_order_7(1, 2),
        (("order_notes", ("note_no", "order_id")), ("order_id",)): {(7,): [(1, 7)]},
    }
    p = plan_batch(batch, {}, {}, children)
    assert sorted(p.writes[ITEMS].deletes) == [(1, 7), (2, 7)]
    assert p.writes[("order_notes", ("note_no", "order_id"))].deletes == [(1, 7)]
    assert (p.inserted, p.deleted) == (0, 3)


def test_a_children_row_merges_over_an_earlier_upsert_of_the_same_row() -> None:
    earlier = Upsert("order_items", {"order_id": 7, "line_no": 1}, {"qty": 5})
    p = plan_batch([item(1, earlier), item(2, lines(7, (1, "a")))], {}, {}, under_order_7())
    assert p.writes[ITEMS].inserts == [{"line_no": 1, "order_id": 7, "qty": 5, "sku": "a"}]
    assert (p.inserted, p.deleted) == (1, 0)
