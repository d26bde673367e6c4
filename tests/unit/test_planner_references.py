"""plan_batch on references to rows that the same batch also writes, and on the message for an
Update of a missing row with a composite key. Each test kills mutants of planner.py that the
rest of the fast tests let live.
"""

from __future__ import annotations

from typing import Any

from backfill_core.changes import Change, Ref, Update, Upsert, fields
from backfill_core.engine.planner import Extracted, extracted, plan_batch

Target = tuple[str, tuple[str, ...]]
Current = dict[Target, dict[tuple[Any, ...], dict[str, Any]]]

FEATURES: Target = ("test_features", ("id",))
BUGS: Target = ("bugs", ("id",))
BUG_ROWS: Current = {BUGS: {(b,): {"id": b, "test_feature_id": None} for b in range(1, 4)}}


def item(key: Any, *changes: Change) -> Extracted:
    return extracted(key, [fields(c, "test") for c in changes])


def attribution(bug: int, fid: int, customer: int) -> Update:
    return Update(
        "bugs",
        {"id": bug},
        {"test_feature_id": fid},
        requires=(Ref("test_features", "id", fid, match={"customer_id": customer}),),
    )


def retitle(fid: int) -> Upsert:
    """An Upsert of feature ``fid`` that sets only its title (and defaults a flag)."""
    return Upsert("test_features", {"id": fid}, {"title": "new"}, defaults={"enable_default": False})


def test_a_reference_sees_the_stored_row_under_the_batchs_own_upsert_of_it() -> None:
    """Feature 7 exists with customer 4; the batch retitles it and, later, attributes a bug to
    it for customer 4. The reference is checked against the stored row with the new title on
    top, so customer 4 still matches (the flag's default does not replace what is stored)."""
    stored = {"id": 7, "customer_id": 4, "title": "old", "enable_default": True}
    batch = [item("t1", retitle(7)), item(2, attribution(2, 7, customer=4))]

    p = plan_batch(batch, {**BUG_ROWS, FEATURES: {(7,): stored}}, {FEATURES: {7: stored}})

    assert p.errors == []
    assert p.writes[BUGS].updates == [((2,), {"test_feature_id": 7})]


def test_a_reference_sees_the_referenced_row_when_the_target_read_missed_it() -> None:
    """The same, with the stored row known only from the reference lookup."""
    stored = {"id": 7, "customer_id": 4}
    batch = [item("t1", retitle(7)), item(2, attribution(2, 7, customer=4))]

    p = plan_batch(batch, BUG_ROWS, {FEATURES: {7: stored}})

    assert p.errors == []


def test_a_reference_to_a_row_the_batch_only_creates_uses_its_defaults() -> None:
    """No stored row: the reference sees the new row, whose unset customer does not match."""
    batch = [item("t1", retitle(7)), item(2, attribution(2, 7, customer=4))]

    p = plan_batch(batch, BUG_ROWS, {FEATURES: {}})

    assert [(f.key, f.kind, f.message) for f in p.errors] == [
        (2, "integrity", "test_features.id=7 has customer_id=None, expected 4")
    ]


def test_an_update_of_a_missing_row_names_every_key_column() -> None:
    change = Update("tags", {"order_id": 1, "name": "x"}, {"n": 1})

    p = plan_batch([item(5, change)], {}, {})

    assert [(f.key, f.kind, f.message) for f in p.errors] == [
        (5, "missing", "tags row name='x', order_id=1 does not exist, so it cannot be updated")
    ]


def test_a_row_whose_independent_changes_fail_has_one_failure_naming_each() -> None:
    """docs/plugins.md: the failure is recorded once per row, naming every change that failed;
    the row's other changes are still written."""
    batch = [
        item(
            5,
            Update("bugs", {"id": 8}, {"test_feature_id": 1}, independent=True),
            Update("bugs", {"id": 1}, {"test_feature_id": 1}, independent=True),
            Update("bugs", {"id": 9}, {"test_feature_id": 1}, independent=True),
        )
    ]

    p = plan_batch(batch, BUG_ROWS, {})

    assert [(f.key, f.kind, f.message) for f in p.errors] == [
        (
            5,
            "missing",
            "bugs row id=8 does not exist, so it cannot be updated; "
            "bugs row id=9 does not exist, so it cannot be updated",
        )
    ]
    assert p.writes[BUGS].updates == [((1,), {"test_feature_id": 1})]
