"""The testing kit's strategies generate what they promise."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import find, given, settings, strategies as st

from backfill_core import dump_json
from backfill_core.testing import json_text, json_values, payloads_like, rows, sql_values, well_formed_rows
from backfill_plugins.testmanagement import BugAttributionExtractor

BA = BugAttributionExtractor()
SEARCH = settings(max_examples=5000, database=None)
SAMPLE = {
    "id": 4,
    "score": -1.5,
    "ok": True,
    "note": None,
    "tags": ["a", "b"],
    "empty": [],
    "device": {"name": "Pixel 8", "versions": [{"os": "14.0", "build": 3}]},
}


def same_shape(value: Any, sample: Any) -> bool:
    if sample is None or isinstance(sample, bool | str):
        return value is None if sample is None else type(value) is type(sample)
    if isinstance(sample, int):
        return (type(value) is int and (value >= 0) == (sample >= 0)) or (sample < 0 and value >= 0)
    if isinstance(sample, float):
        return type(value) is float
    if isinstance(sample, dict):
        return set(value) == set(sample) and all(same_shape(value[k], sample[k]) for k in sample)
    assert isinstance(sample, list)
    if not sample:
        return isinstance(value, list)
    return isinstance(value, list) and all(any(same_shape(v, s) for s in sample) for v in value)


@given(json_values())
def test_json_values_are_json(value: Any) -> None:
    text = dump_json(value)  # no NaN or infinity: dump_json would raise
    assert json.loads(text) == value


@given(json_text(malformed=False))
def test_well_formed_json_text_parses(text: str) -> None:
    json.loads(text)


def test_json_text_includes_malformed_text_and_big_numbers() -> None:
    def malformed(text: str) -> bool:
        try:
            json.loads(text)
        except ValueError:
            return True
        return False

    find(json_text(), malformed, settings=SEARCH)
    find(json_values(), lambda v: isinstance(v, int) and abs(v) >= 2**63, settings=SEARCH)
    find(
        json_values(),
        lambda v: isinstance(v, dict) and any(isinstance(x, list) for x in v.values()),
        settings=SEARCH,
    )
    find(json_values(), lambda v: isinstance(v, str) and any(ord(c) > 127 for c in v), settings=SEARCH)


@given(rows(BA))
def test_rows_have_the_read_columns_and_driver_values(row: dict[str, Any]) -> None:
    assert set(row) == set(BA.read_columns)
    assert isinstance(row["id"], int) and 1 <= row["id"] < 2**63
    for value in row.values():
        assert value is None or type(value) in (int, float, str, bytes)
        assert not isinstance(value, int) or -(2**63) <= value < 2**63


@given(sql_values())
def test_sql_values_fit_sqlite(value: Any) -> None:
    import sqlite3

    assert sqlite3.connect(":memory:").execute("SELECT ?", (value,)).fetchone() is not None


@given(well_formed_rows(BA, {"raw_data": payloads_like(SAMPLE)}, columns={"customer_id": st.just(7)}))
def test_well_formed_rows_hold_payload_json(row: dict[str, Any]) -> None:
    assert set(row) == set(BA.read_columns)
    assert row["customer_id"] == 7
    assert same_shape(json.loads(row["raw_data"]), SAMPLE)


def test_rows_reject_columns_the_extractor_does_not_read() -> None:
    with pytest.raises(ValueError, match="does not read"):
        rows(BA, columns={"nope": st.none()})


@given(payloads_like(SAMPLE))
def test_payloads_have_the_shape_of_the_sample(payload: dict[str, Any]) -> None:
    assert same_shape(payload, SAMPLE)


@given(
    payloads_like(SAMPLE, overrides={"device.name": st.just("X"), "tags[]": st.just("t"), "ok": st.none()})
)
def test_payload_overrides_replace_one_path(payload: dict[str, Any]) -> None:
    assert payload["device"]["name"] == "X"
    assert set(payload["tags"]) <= {"t"}
    assert payload["ok"] is None


def test_payload_overrides_must_match_a_path() -> None:
    with pytest.raises(ValueError, match=r"device\.nmae"):
        payloads_like(SAMPLE, overrides={"device.nmae": st.none()})
    with pytest.raises(TypeError, match="not a JSON value"):
        payloads_like({"when": object()})


def test_payloads_vary() -> None:
    find(
        payloads_like(SAMPLE),
        lambda p: p["device"]["versions"] and p["tags"] and p["id"] > 0,
        settings=SEARCH,
    )
