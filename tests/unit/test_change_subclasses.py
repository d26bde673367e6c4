"""A plugin may return subclasses of Upsert and Update: they are the changes they extend
(docs/plugins.md: an extractor returns Upsert and Update objects). Kills mutants of
changes.fields that turned its isinstance checks into identity checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from backfill_core.changes import Ref, Update, Upsert, fields
from backfill_core.errors import RecordError


@dataclass(frozen=True, slots=True)
class FeatureUpsert(Upsert):
    pass


@dataclass(frozen=True, slots=True)
class BugUpdate(Update):
    pass


def test_a_subclass_of_upsert_is_an_upsert() -> None:
    args = ("test_features", {"id": 1}, {"title": "t"}, {"enable_default": False})
    assert fields(FeatureUpsert(*args), "x") == fields(Upsert(*args), "x")


def test_a_subclass_of_update_is_an_update() -> None:
    ref = Ref("test_features", "id", 7, {"customer_id": 2})
    args = ("bugs", {"id": 1}, {"test_feature_id": 7}, (ref,))
    made = fields(BugUpdate(*args), "x")
    assert made == fields(Update(*args), "x")
    assert made[3] is None  # no defaults: an Update
    assert made[4] == (("test_features", "id", 7, {"customer_id": 2}),)


def test_anything_else_is_a_plugin_bug() -> None:
    with pytest.raises(RecordError) as info:
        fields({"table": "bugs"}, "x")
    assert info.value.kind == "plugin-bug"
