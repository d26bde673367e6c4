"""Example-based tests of the built-in test-management extractors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backfill_core import RecordError, Ref, Skip, Update, Upsert
from backfill_plugins.testmanagement.extractors import (
    FLAGS,
    BugAttributionExtractor,
    TestFeatureExtractor,
)
from support.changes import check_change

TF = TestFeatureExtractor()
BA = BugAttributionExtractor()


def source_row(data: Any, *, test_id: int = 7, customer_id: int | None = 3) -> dict[str, Any]:
    text = data if data is None or isinstance(data, str | bytes) else json.dumps(data)
    return {"id": test_id, "customer_id": customer_id, "data": text}


def bug_row(raw: Any, *, bug_id: int = 11, customer_id: int = 3) -> dict[str, Any]:
    text = raw if raw is None or isinstance(raw, str | bytes) else json.dumps(raw)
    return {"id": bug_id, "customer_id": customer_id, "raw_data": text}


def features(data: Any, **row: Any) -> list[Any]:
    changes = TF.extract(source_row(data, **row))
    for c in changes:
        if not isinstance(c, Skip):
            check_change(c, TF.written, TF.name)
    return changes


def record_error(extractor: TestFeatureExtractor | BugAttributionExtractor, row: dict[str, Any]) -> str:
    with pytest.raises(RecordError) as info:
        extractor.extract(row)
    return info.value.kind


FULL = {
    "id": 101,
    "feature_id": 55,
    "title": "Login",
    "description": "Log in with e-mail",
    "howtofind": "Top right",
    "user_stories": ["As a user I log in", "Ünïcode story"],
    "enable_default": True,
    "enable_content": False,
    "enable_visual": None,
}


# -- TestFeatureExtractor ---------------------------------------------------------------------


def test_declarations() -> None:
    assert TF.declaration_problems() == []
    assert TF.source_table == "tests"
    assert TF.read_columns == ("id", "customer_id", "data")
    assert set(TF.written) == {"test_features"}
    assert BA.declaration_problems() == []
    assert BA.written == {"bugs": frozenset({"id", "test_feature_id"})}
    assert BA.depends_on == ("test_features",)


def test_full_feature_becomes_one_upsert_that_requires_its_feature() -> None:
    (change,) = features({"title": "A test", "features": [FULL]})
    assert change == Upsert(
        table="test_features",
        key={"id": 101},
        values={
            "customer_id": 3,
            "test_id": 7,
            "feature_id": 55,
            "title": "Login",
            "description": "Log in with e-mail",
            "howtofind": "Top right",
            "user_stories": '["As a user I log in", "\\u00dcn\\u00efcode story"]',
            "enable_default": True,
            "enable_content": False,
            "enable_visual": False,
        },
        requires=(Ref("features", "id", 55),),
        independent=True,
    )


def test_several_features_keep_their_order() -> None:
    data = {
        "features": [
            {"id": 3, "feature_id": 1, "title": "c"},
            {"id": 1, "feature_id": 1},
            {"id": 2, "feature_id": 2},
        ]
    }
    assert [c.key["id"] for c in features(data)] == [3, 1, 2]


@pytest.mark.parametrize(
    "missing_id", [{"title": "no id", "feature_id": 5}, {"id": None}, {"id": 0}, {"id": ""}, {"id": False}]
)
def test_features_without_a_truthy_id_are_skipped(missing_id: dict[str, Any]) -> None:
    data = {"features": [missing_id, {"id": 9, "feature_id": 5, "title": "kept"}]}
    kept = features(data)
    assert [c.key for c in kept if isinstance(c, Upsert)] == [{"id": 9}]
    assert [c.kind for c in kept if isinstance(c, Skip)] == ["no-id"]


@pytest.mark.parametrize(
    "feature",
    [
        {"id": 4},
        {"id": 4, "feature_id": None},
        {"id": 4, "feature_id": 0},
        {"id": 4, "feature_id": ""},
        {"id": 4, "feature_id": False},
        {"id": "abc"},
    ],
)
def test_features_without_a_truthy_feature_id_are_skipped_alone(feature: dict[str, Any]) -> None:
    """As the application does: skipped (and counted), not a failure of its test."""
    changes = features({"features": [{"id": 1, "feature_id": 2}, feature, {"id": 3, "feature_id": 2}]})
    assert [type(c) for c in changes] == [Upsert, Skip, Upsert]
    assert changes[1].kind == "no-feature-id" and "data.features[1]" in changes[1].message


@pytest.mark.parametrize("data", [None, "null", {}, {"features": None}, {"features": []}, {"other": 1}])
def test_no_features_gives_no_changes(data: Any) -> None:
    assert features(data) == []


def test_minimal_feature_gets_empty_title_stories_and_false_flags() -> None:
    (change,) = features({"features": [{"id": 4, "feature_id": 8}]})
    assert change.values["title"] == ""
    assert change.values["user_stories"] == "[]"
    assert change.values["feature_id"] == 8
    assert change.values["description"] is None and change.values["howtofind"] is None
    assert change.defaults == {}
    for flag in FLAGS:
        assert change.values[flag] is False


def test_null_title_is_an_error_as_the_not_null_column_refuses_it() -> None:
    with pytest.raises(RecordError) as info:
        TF.extract(source_row({"features": [{"id": 4, "feature_id": 8, "title": None}]}))
    assert info.value.kind == "invalid-type" and "data.features[0].title is null" in info.value.message


@pytest.mark.parametrize("stories", [None, "missing", [], "", 0])
def test_user_stories_none_missing_or_empty_is_empty_list_text(stories: Any) -> None:
    feature: dict[str, Any] = {"id": 4, "feature_id": 8}
    if stories != "missing":
        feature["user_stories"] = stories
    (change,) = features({"features": [feature]})
    assert change.values["user_stories"] == "[]"


@pytest.mark.parametrize(
    "stories",
    [
        ["A", "B"],
        ["„Warenkorb“", "日本"],
        ["a b", {"given": "x", "then": ["y", 1, None, True]}],
        "one story",
        {"a": 1},
    ],
)
def test_user_stories_are_the_text_the_application_writes(stories: Any) -> None:
    """``json.dumps`` with its defaults: ", " separators and non-ASCII escaped, whatever the value."""
    (change,) = features({"features": [{"id": 4, "feature_id": 8, "user_stories": stories}]})
    assert change.values["user_stories"] == json.dumps(stories)
    assert json.loads(change.values["user_stories"]) == stories


def test_user_stories_of_a_test_stored_the_applications_way_come_back_unchanged() -> None:
    data = json.dumps({"features": [{"id": 4, "feature_id": 8, "user_stories": ["A", "„B“"]}]})
    assert '["A", "\\u201eB\\u201c"]' in data
    (change,) = features(data)
    assert change.values["user_stories"] == '["A", "\\u201eB\\u201c"]'


@pytest.mark.parametrize(
    ("raw", "expected"), [(True, True), (False, False), (1, True), (0, False), (None, False)]
)
def test_flags_are_the_value_or_false(raw: Any, expected: bool) -> None:
    (change,) = features({"features": [{"id": 4, "feature_id": 8, "enable_visual": raw}]})
    assert change.values["enable_visual"] is expected


def test_customer_and_test_come_from_the_row_not_the_json() -> None:
    data = {
        "id": 999,
        "customer_id": 888,
        "test_id": 777,
        "features": [{"id": 4, "feature_id": 8, "customer_id": 666, "test_id": 555}],
    }
    (change,) = features(data, test_id=12, customer_id=34)
    assert change.values["customer_id"] == 34
    assert change.values["test_id"] == 12


def test_digit_string_ids_are_accepted() -> None:
    (change,) = features({"features": [{"id": "42", "feature_id": " 17 "}]})
    assert change.key == {"id": 42}
    assert change.values["feature_id"] == 17


def test_bytes_data_is_parsed() -> None:
    (change,) = features(json.dumps({"features": [{"id": 5, "feature_id": 8, "title": "é"}]}).encode())
    assert change.values["title"] == "é"


def test_null_customer_is_an_error() -> None:
    assert (
        record_error(TF, source_row({"features": [{"id": 1, "feature_id": 8}]}, customer_id=None))
        == "invalid-type"
    )


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ('{"features": [', "invalid-json"),
        ("not json at all", "invalid-json"),
        ('{"features": [{"id": NaN}]}', "invalid-json"),
        ([1, 2], "invalid-shape"),
        ('"a string"', "invalid-shape"),
        ("42", "invalid-shape"),
        ({"features": "not a list"}, "invalid-shape"),
        ({"features": {"id": 1}}, "invalid-shape"),
        ({"features": [1]}, "invalid-shape"),
        ({"features": [{"id": 1, "feature_id": 8}, "x"]}, "invalid-shape"),
        ({"features": [{"id": "abc", "feature_id": 8}]}, "invalid-type"),
        ({"features": [{"id": "-3", "feature_id": 8}]}, "invalid-type"),
        ({"features": [{"id": "٣", "feature_id": 8}]}, "invalid-type"),  # a non-ASCII digit
        ({"features": [{"id": 1.5, "feature_id": 8}]}, "invalid-type"),
        ({"features": [{"id": True, "feature_id": 8}]}, "invalid-type"),
        ({"features": [{"id": [1], "feature_id": 8}]}, "invalid-type"),
        ({"features": [{"id": 1, "feature_id": "x"}]}, "invalid-type"),
        ({"features": [{"id": 1, "feature_id": True}]}, "invalid-type"),
        ({"features": [{"id": 1, "feature_id": 8, "title": 7}]}, "invalid-type"),
        ({"features": [{"id": 1, "feature_id": 8, "description": ["x"]}]}, "invalid-type"),
        ({"features": [{"id": 1, "feature_id": 8, "howtofind": {"a": 1}}]}, "invalid-type"),
        ({"features": [{"id": 1, "feature_id": 8, "enable_default": "yes"}]}, "invalid-type"),
        ({"features": [{"id": 1, "feature_id": 8, "enable_default": 2}]}, "invalid-type"),
        ({"features": [{"id": 1, "feature_id": 8, "enable_content": 1.0}]}, "invalid-type"),
    ],
)
def test_bad_test_data_raises_record_error(data: Any, kind: str) -> None:
    assert record_error(TF, source_row(data)) == kind


def test_one_bad_feature_fails_the_whole_test() -> None:
    data = {"features": [{"id": 1, "feature_id": 8, "title": "ok"}, {"id": 2, "feature_id": 8, "title": 3}]}
    with pytest.raises(RecordError) as info:
        TF.extract(source_row(data))
    assert "data.features[1].title" in info.value.message


def test_non_string_data_value_is_invalid_json() -> None:
    assert record_error(TF, {"id": 1, "customer_id": 1, "data": 12}) == "invalid-json"


def test_out_of_range_number_in_user_stories_is_a_record_error() -> None:
    # 1e400 is valid JSON syntax, but overflows a double: parse_json refuses the text.
    data = '{"features": [{"id": 1, "feature_id": 8, "user_stories": ["ok", 1e400]}]}'
    with pytest.raises(RecordError):
        TF.extract(source_row(data))


def test_id_with_too_many_digits_is_a_record_error() -> None:
    data = json.dumps({"features": [{"id": "9" * 5000, "feature_id": 8}]})
    assert record_error(TF, source_row(data)) == "invalid-type"


# -- BugAttributionExtractor -----------------------------------------------------------------


def attribution(raw: Any, **row: Any) -> Update:
    changes = BA.extract(bug_row(raw, **row))
    assert len(changes) == 1
    check_change(changes[0], BA.written, BA.name)
    return changes[0]


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "null",
        {},
        {"title": "x"},
        {"test_feature": None},
        {"test_feature": {}},
        {"test_feature": {"id": None}},
        {"test_feature": {"id": 0}},
    ],
)
def test_bug_without_test_feature_clears_the_attribution(raw: Any) -> None:
    assert attribution(raw) == Update("bugs", {"id": 11}, {"test_feature_id": None}, requires=())


def test_bug_with_test_feature_requires_it_for_the_same_customer() -> None:
    change = attribution({"test_feature": {"id": 42, "title": "Login"}, "customer_id": 99}, customer_id=5)
    assert change == Update(
        "bugs",
        {"id": 11},
        {"test_feature_id": 42},
        requires=(Ref("test_features", "id", 42, match={"customer_id": 5}),),
    )


def test_bug_digit_string_feature_id_is_accepted() -> None:
    change = attribution({"test_feature": {"id": "42"}})
    assert change.values == {"test_feature_id": 42}
    assert change.requires[0].value == 42


def test_bug_key_is_the_row_id() -> None:
    assert attribution({"id": 1234, "test_feature": {"id": 1}}, bug_id=56).key == {"id": 56}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ('{"test_feature": {"id": 1', "invalid-json"),
        ("Infinity", "invalid-json"),
        ([1], "invalid-shape"),
        ('"text"', "invalid-shape"),
        ({"test_feature": 42}, "invalid-shape"),
        ({"test_feature": [{"id": 1}]}, "invalid-shape"),
        ({"test_feature": {"id": "abc"}}, "invalid-type"),
        ({"test_feature": {"id": 4.0}}, "invalid-type"),
        ({"test_feature": {"id": True}}, "invalid-type"),
        ({"test_feature": {"id": {"nested": 1}}}, "invalid-type"),
    ],
)
def test_bad_bug_data_raises_record_error(raw: Any, kind: str) -> None:
    assert record_error(BA, bug_row(raw)) == kind


def test_bug_feature_id_with_too_many_digits_is_a_record_error() -> None:
    raw = json.dumps({"test_feature": {"id": "1" * 5000}})
    assert record_error(BA, bug_row(raw)) == "invalid-type"


def test_digit_string_with_a_control_character_is_a_record_error() -> None:
    # Python's \s matches \x1f, which int() refuses: found by the property test.
    row = {"id": 1, "customer_id": 1, "raw_data": '{"test_feature": {"id": "0\\u001f"}}'}
    with pytest.raises(RecordError) as info:
        BugAttributionExtractor().extract(row)
    assert info.value.kind == "invalid-type"
