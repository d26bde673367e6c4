"""checked: a change may only touch what its extractor declared."""

from __future__ import annotations

import pytest

from backfill_core import RecordError
from backfill_core.changes import Ref, Update, Upsert
from support.changes import check_change

WRITES = {
    "test_features": frozenset({"id", "customer_id", "title", "enable_default"}),
    "bugs": frozenset({"id", "test_feature_id"}),
}
NAME = "my_extractor"


def plugin_bug(change: object) -> RecordError:
    with pytest.raises(RecordError) as info:
        check_change(change, WRITES, NAME)
    assert info.value.kind == "plugin-bug"
    assert repr(NAME) in info.value.message
    assert str(info.value) == info.value.message
    return info.value


def test_declared_changes_are_returned_unchanged() -> None:
    upsert = Upsert("test_features", {"id": 1}, {"title": "t", "customer_id": 2})
    update = Update("bugs", {"id": 3}, {"test_feature_id": 1}, requires=(Ref("elsewhere", "id", 1),))
    assert check_change(upsert, WRITES, NAME) is upsert
    assert check_change(update, WRITES, NAME) is update


def test_upsert_with_declared_defaults_is_accepted() -> None:
    upsert = Upsert("test_features", {"id": 1}, {"enable_default": None}, defaults={"enable_default": False})
    assert check_change(upsert, WRITES, NAME) is upsert


def test_undeclared_table() -> None:
    error = plugin_bug(Upsert("secrets", {"id": 1}, {"x": 1}))
    assert "'secrets'" in error.message


@pytest.mark.parametrize(
    "change",
    [
        Upsert("test_features", {"id": 1}, {"title": "t", "password": "x"}),
        Update("bugs", {"id": 1}, {"password": "x"}),
        Update("bugs", {"uuid": 1}, {"test_feature_id": 2}),  # undeclared key column
    ],
)
def test_undeclared_column(change: Upsert | Update) -> None:
    error = plugin_bug(change)
    assert "undeclared" in error.message
    assert "password" in error.message or "uuid" in error.message


def test_undeclared_defaults_column() -> None:
    # A defaults column is written on insert, so it must be declared like any value column.
    error = plugin_bug(Upsert("test_features", {"id": 1}, {"title": "t"}, defaults={"is_admin": True}))
    assert "is_admin" in error.message


@pytest.mark.parametrize("change", [None, "UPDATE bugs SET x = 1", {"table": "bugs"}, ("bugs",), 3])
def test_non_change_object(change: object) -> None:
    error = plugin_bug(change)
    assert type(change).__name__ in error.message


def test_empty_key() -> None:
    error = plugin_bug(Upsert("test_features", {}, {"title": "t"}))
    assert "no key" in error.message
    plugin_bug(Update("bugs", {}, {"test_feature_id": 1}))
