"""Properties of parse_json / dump_json over arbitrary JSON values."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from hypothesis import given, settings, strategies as st

from backfill_core import RecordError, dump_json, parse_json

scalars = (
    st.none()
    | st.booleans()
    # parse_json reads integers beyond 64 bits as floats, as SQLite's JSON functions do; see
    # test_jsonvalue.py::test_integers_beyond_64_bits_become_floats
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_dump_then_parse_round_trips(value: Any) -> None:
    text = dump_json(value)
    assert parse_json(text, "x") == value
    assert parse_json(text.encode(), "x") == value
    assert dump_json(parse_json(text, "x")) == text


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_dump_has_no_whitespace_between_tokens(value: Any) -> None:
    text = dump_json(value)
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_dump_is_what_sqlite_json_writes(value: Any) -> None:
    text = dump_json(value)
    with sqlite3.connect(":memory:") as conn:
        (normalized,) = conn.execute("SELECT json(?)", (text,)).fetchone()
    assert normalized == text


@settings(max_examples=300, deadline=None)
@given(st.text() | st.binary())
def test_arbitrary_text_parses_or_raises_invalid_json(text: str | bytes) -> None:
    try:
        parse_json(text, "the.field")
    except RecordError as e:
        assert e.kind == "invalid-json"
        assert "the.field" in e.message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(codec="utf-8"))))
def test_lists_of_text_are_written_as_the_standard_encoder_writes_them(value: list[str]) -> None:
    # dump_json takes a faster path for lists of strings; it must not change a byte.
    assert dump_json(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.sampled_from([float("nan"), float("inf"), -float("inf")]),
        lambda children: (
            st.lists(children, min_size=1, max_size=3)
            | st.dictionaries(st.text(max_size=5), children, min_size=1, max_size=3)
        ),
        max_leaves=10,
    ),
    json_values,
)
def test_a_non_finite_float_anywhere_is_a_record_error(bad: Any, good: Any) -> None:
    # Every leaf of ``bad`` is NaN or an infinity; wrapped beside valid values, dump_json still
    # refuses the whole document, with kind invalid-value, rather than writing null or NaN.
    for value in (bad, [good, bad], {"ok": good, "bad": bad}):
        try:
            dump_json(value)
        except RecordError as e:
            assert e.kind == "invalid-value"
            assert "no NaN or infinity" in e.message
        else:
            raise AssertionError(f"dump_json wrote {value!r}")
