"""Parsing and writing JSON text the way extractors need it: strict, fast and deterministic."""

from __future__ import annotations

import json
from typing import Any

import orjson

from backfill_core.errors import RecordError


def parse_json(text: Any, what: str) -> Any:
    """Parse JSON ``text`` (str or bytes, or an already-decoded dict or list); None stays None.

    Malformed text, NaN, numbers that overflow a double and lone surrogates raise
    RecordError(kind="invalid-json") naming ``what``.
    """
    if type(text) is str:  # the common case first: this runs once per source row
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise RecordError(f"{what} is not valid JSON: {e}", kind="invalid-json") from None
    if text is None or isinstance(text, dict | list):
        return text
    if not isinstance(text, str | bytes | bytearray | memoryview):
        raise RecordError(f"{what} is {type(text).__name__}, not JSON text", kind="invalid-json")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise RecordError(f"{what} is not valid JSON: {e}", kind="invalid-json") from None


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dump_json(value: Any) -> str:
    """Compact JSON text, as SQLite's ``json()`` writes it (no spaces, UTF-8 kept).

    NaN and infinities raise ValueError, as they have no JSON form.
    """
    if type(value) is list and all(type(v) is str for v in value):
        # The common case (a list of labels) through orjson, which writes strings the same way
        # and refuses lone surrogates; orjson would write NaN as null, so other values take the
        # standard encoder.
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            pass
    return _ENCODER.encode(value)
