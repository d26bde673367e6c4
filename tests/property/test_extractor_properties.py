"""Properties of the built-in extractors over arbitrary source rows."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings, strategies as st

from backfill_core import RecordError, Skip, Update, Upsert
from backfill_core.changes import Change
from backfill_plugins.testmanagement.extractors import (
    FLAGS,
    BugAttributionExtractor,
    TestFeatureExtractor,
    stories_text,
)
from support.changes import check_change

TF = TestFeatureExtractor()
BA = BugAttributionExtractor()
SETTINGS = settings(max_examples=200, deadline=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

# Number literals as they may appear in JSON text written by anything, not only by Python,
# including exponents beyond the range of a double.
number_text = st.from_regex(
    r"-?(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?", fullmatch=True
) | st.sampled_from(["1e308", "1e309", "-1E400", "2.5e+999", "1e-400"])

ids = (
    st.none()
    | st.integers(min_value=-5, max_value=2**63 - 1)
    | st.from_regex(r"\s?[0-9]{1,6}\s?", fullmatch=True)
    | json_values
)
flag_values = st.none() | st.booleans() | st.sampled_from([0, 1, 2, -1, 1.0, "true"]) | json_values
plausible_feature = st.fixed_dictionaries(
    {},
    optional={
        "id": ids,
        "feature_id": ids,
        "title": st.text(max_size=20) | json_values,
        "description": st.none() | st.text(max_size=20) | json_values,
        "howtofind": st.none() | st.text(max_size=20),
        "user_stories": st.none() | st.lists(json_values, max_size=3) | json_values,
        **{flag: flag_values for flag in FLAGS},
    },
)
plausible_test = st.fixed_dictionaries(
    {},
    optional={
        "features": st.none() | st.lists(plausible_feature | json_values, max_size=4) | json_values,
        "id": json_values,
        "customer_id": json_values,
    },
)


@st.composite
def features_with_number_text(draw: st.DrawFn) -> str:
    """Test JSON whose user stories and ids hold number literals Python would not write."""
    stories = ", ".join(draw(st.lists(number_text, max_size=3)))
    fid = draw(st.integers(min_value=1, max_value=10**6).map(str) | number_text)
    return f'{{"features": [{{"id": {fid}, "user_stories": [{stories}]}}]}}'


def as_text(value: Any) -> str:
    return json.dumps(value)


data_values = (
    json_values.map(as_text)
    | plausible_test.map(as_text)
    | plausible_test.map(lambda v: as_text(v).encode())
    | features_with_number_text()
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | json_values
    | plausible_test
)

plausible_bug = st.fixed_dictionaries(
    {},
    optional={
        "test_feature": st.none()
        | st.fixed_dictionaries({}, optional={"id": ids, "title": json_values})
        | json_values,
        "customer_id": json_values,
    },
)
raw_values = (
    json_values.map(as_text)
    | plausible_bug.map(as_text)
    | plausible_bug.map(lambda v: as_text(v).encode())
    | number_text.map(lambda n: f'{{"test_feature": {{"id": {n}}}}}')
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | json_values
    | plausible_bug
)

row_ids = st.integers(min_value=1, max_value=2**63 - 1)
customers = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def extract_or_record_error(
    extractor: TestFeatureExtractor | BugAttributionExtractor, row: dict[str, Any]
) -> list[Change | Skip] | None:
    """The changes, or None when the row is rejected with a RecordError; anything else fails."""
    try:
        changes: list[Change | Skip] = list(extractor.extract(row))
    except RecordError as e:
        assert isinstance(e.kind, str) and e.kind
        assert isinstance(e.message, str) and e.message
        return None
    return changes


@SETTINGS
@given(row_ids, customers, data_values)
@example(1, 1, '{"features": [{"id": 1, "user_stories": [1e400]}]}')  # parses to inf
@example(1, 1, json.dumps({"features": [{"id": "7" * 4301}]}))  # over int()'s digit limit
def test_test_features_only_raise_record_error_and_stay_in_their_lane(
    test_id: int, customer_id: int, data: Any
) -> None:
    row = {"id": test_id, "customer_id": customer_id, "data": data}
    changes = extract_or_record_error(TF, row)
    if changes is None:
        return
    assert changes == TF.extract(dict(row))  # deterministic
    for change in changes:
        if isinstance(change, Skip):
            assert change.kind in ("no-id", "no-feature-id"), change
            continue
        assert check_change(change, TF.written, TF.name) is change
        assert isinstance(change, Upsert)
        assert change.values["customer_id"] == customer_id
        assert change.values["test_id"] == test_id
        assert isinstance(change.key["id"], int) and not isinstance(change.key["id"], bool)
        assert json.loads(change.values["user_stories"]) is not None
        assert isinstance(change.values["title"], str)
        assert change.defaults == {}
        assert all(change.values[flag] in (True, False) for flag in FLAGS)
        (ref,) = change.requires
        assert (ref.table, ref.column, ref.value) == ("features", "id", change.values["feature_id"])
        assert change.independent


@SETTINGS
@given(row_ids, customers, raw_values)
@example(1, 1, json.dumps({"test_feature": {"id": "7" * 4301}}))  # over int()'s digit limit
def test_bug_attribution_only_raises_record_error_and_returns_one_update(
    bug_id: int, customer_id: int, raw: Any
) -> None:
    row = {"id": bug_id, "customer_id": customer_id, "raw_data": raw}
    changes = extract_or_record_error(BA, row)
    if changes is None:
        return
    assert changes == BA.extract(dict(row))  # deterministic
    (change,) = changes
    assert isinstance(change, Update)
    assert check_change(change, BA.written, BA.name) is change
    assert change.key == {"id": bug_id}
    assert set(change.values) == {"test_feature_id"}
    fid = change.values["test_feature_id"]
    if fid is None:
        assert change.requires == ()
    else:
        assert isinstance(fid, int) and not isinstance(fid, bool) and fid != 0
        (ref,) = change.requires
        assert (ref.table, ref.column, ref.value) == ("test_features", "id", fid)
        assert dict(ref.match) == {"customer_id": customer_id}


# -- well-formed test JSON ---------------------------------------------------------------------

good_ids = (
    st.none()
    | st.just(0)
    | st.just("")
    | st.integers(min_value=1, max_value=2**62)
    | st.integers(min_value=1, max_value=10**6).map(str)
)
good_feature = st.fixed_dictionaries(
    {"id": good_ids},
    optional={
        "feature_id": st.none() | st.integers(min_value=0, max_value=2**62),
        "title": st.none() | st.text(max_size=20),
        "description": st.none() | st.text(max_size=20),
        "howtofind": st.none() | st.text(max_size=20),
        "user_stories": st.none() | st.lists(st.text(max_size=20), max_size=3),
        **{flag: st.none() | st.booleans() | st.sampled_from([0, 1]) for flag in FLAGS},
    },
)


@SETTINGS
@given(row_ids, customers, st.lists(good_feature, max_size=6))
def test_one_upsert_per_feature_with_a_truthy_id_and_feature_id(
    test_id: int, customer_id: int, features: list[dict[str, Any]]
) -> None:
    data = json.dumps({"title": "t", "features": features})
    try:
        changes = TF.extract({"id": test_id, "customer_id": customer_id, "data": data})
    except RecordError as e:  # the one refusal of well-formed JSON: a null title
        assert any(f["id"] and f.get("feature_id") and f.get("title", "") is None for f in features), e
        return
    kept = [f for f in features if f["id"] and f.get("feature_id")]
    upserts = [c for c in changes if isinstance(c, Upsert)]
    assert len(upserts) == len(kept)
    assert len(changes) - len(upserts) == len(features) - len(kept)  # the rest are skips
    for change, feature in zip(upserts, kept, strict=True):
        assert change.key == {"id": int(feature["id"])}
        assert change.values["title"] == feature.get("title", "")
        assert change.values["user_stories"] == json.dumps(feature.get("user_stories") or [])
        for flag in FLAGS:
            assert change.values[flag] is bool(feature.get(flag))


@SETTINGS
@given(st.none() | st.lists(st.text()) | st.lists(st.text() | st.integers() | st.none(), max_size=4))
def test_user_stories_text_is_json_dumps(stories: Any) -> None:
    assert stories_text(stories) == json.dumps(stories or [])
