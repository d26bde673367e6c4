"""parse_json and dump_json: strict parsing, compact deterministic writing."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from backfill_core import RecordError, dump_json, parse_json


def invalid(text: Any, what: str = "tests.data") -> RecordError:
    with pytest.raises(RecordError) as info:
        parse_json(text, what)
    assert info.value.kind == "invalid-json"
    assert what in info.value.message
    return info.value


def test_none_passes_through() -> None:
    assert parse_json(None, "x") is None


def test_decoded_dict_and_list_pass_through_as_the_same_objects() -> None:
    d: dict[str, Any] = {"features": [1]}
    lst: list[Any] = [1, {"a": None}]
    assert parse_json(d, "x") is d
    assert parse_json(lst, "x") is lst


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": [1, 2.5, "x", null, true]}', {"a": [1, 2.5, "x", None, True]}),
        ("[]", []),
        ("null", None),
        ("17", 17),
        ('"text"', "text"),
        (' \n {"ü": "日本"} ', {"ü": "日本"}),
    ],
)
def test_text_is_parsed(text: str, expected: Any) -> None:
    assert parse_json(text, "x") == expected


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_bytes_like_are_decoded_as_utf8(wrap: Any) -> None:
    raw = '{"title": "café"}'.encode()
    assert parse_json(wrap(raw), "x") == {"title": "café"}


@pytest.mark.parametrize(
    "text", ["NaN", "Infinity", "-Infinity", "[1, NaN]", '{"a": Infinity}', '{"a": [-Infinity]}']
)
def test_nan_and_infinity_are_rejected(text: str) -> None:
    invalid(text)
    invalid(text.encode())


@pytest.mark.parametrize(
    "text",
    ["", "   ", "{", '{"a": 1', "[1, 2,]", "{'a': 1}", "nul", '{"a": 1} trailing', "\ufeff{}", "[" * 3],
)
def test_malformed_text_is_invalid_json_naming_what(text: str) -> None:
    error = invalid(text, what="bugs.raw_data")
    assert "not valid JSON" in error.message


def test_malformed_bytes_are_invalid_json() -> None:
    invalid(b'{"a": \xff}')


def test_deeply_nested_text_is_invalid_json_not_recursion_error() -> None:
    invalid("[" * 200_000 + "]" * 200_000)


@pytest.mark.parametrize("value", [0, 17, 2.5, True, False, object(), ("a",), {1, 2}])
def test_values_of_other_types_are_invalid_json(value: Any) -> None:
    error = invalid(value, what="tests.data")
    assert type(value).__name__ in error.message


def test_dump_json_is_compact() -> None:
    assert dump_json({"a": [1, 2, {"b": None}], "c": True}) == '{"a":[1,2,{"b":null}],"c":true}'
    assert dump_json([]) == "[]"
    assert dump_json(["x y", "a, b: c"]) == '["x y","a, b: c"]'


def test_dump_json_keeps_non_ascii() -> None:
    text = dump_json(["café", "日本語", "emoji 🎉"])
    assert text == '["café","日本語","emoji 🎉"]'
    assert "\\u" not in text


def test_dump_json_is_deterministic_and_keeps_key_order() -> None:
    value = {"z": 1, "a": [3, 2, 1], "m": {"y": "é", "b": None}}
    first = dump_json(value)
    assert first == dump_json(value) == dump_json(parse_json(first, "x"))
    assert first == '{"z":1,"a":[3,2,1],"m":{"y":"é","b":null}}'


def test_dump_json_rejects_non_finite_floats() -> None:
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            dump_json([bad])


def test_dump_json_matches_sqlite_json() -> None:
    value = {"title": 'Login, "quoted" \\ back/slash', "stories": ["é", "\n\t"], "n": [0, -5, 1.5]}
    text = dump_json(value)
    with sqlite3.connect(":memory:") as conn:
        (normalized,) = conn.execute("SELECT json(?)", (text,)).fetchone()
    assert normalized == text


def test_integers_beyond_64_bits_become_floats() -> None:
    # Like SQLite's json_extract: the value survives approximately, never as a wrong integer.
    assert parse_json("18446744073709551616", "x") == 18446744073709551616.0
    assert isinstance(parse_json("18446744073709551616", "x"), float)
    assert parse_json("18446744073709551615", "x") == 18446744073709551615


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (float("nan"), "nan at $"),
        ([1.5, float("inf")], "inf at $[1]"),
        ({"device": {"scores": [0.5, -float("inf")]}}, "-inf at $.device.scores[1]"),
        (("a", {"n": float("nan")}), "nan at $[1].n"),
    ],
)
def test_dump_json_refuses_non_finite_floats_as_a_record_error_naming_where(value: Any, where: str) -> None:
    # A record error (an extract writing a computed NaN records bad data, not a plugin bug), and
    # still a ValueError for code written when dump_json raised that.
    with pytest.raises(RecordError) as info:
        dump_json(value)
    assert info.value.kind == "invalid-value"
    assert where in info.value.message
    assert "no NaN or infinity" in info.value.message
    assert isinstance(info.value, ValueError)


def test_orjson_would_write_non_finite_floats_as_null() -> None:
    # Why dump_json does not hand floats to orjson: the value would be lost without a word.
    import orjson

    assert orjson.dumps([float("inf"), float("nan")]) == b"[null,null]"


def test_dump_json_keeps_other_errors() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference") as info:
        dump_json(loop)
    assert not isinstance(info.value, RecordError)
    with pytest.raises(TypeError):
        dump_json({"when": object()})
