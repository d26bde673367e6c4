"""Parsing and writing JSON text the way extractors need it: strict, fast and deterministic."""

from __future__ import annotations

import json
import math
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


class NonFiniteNumber(RecordError, ValueError):
    """``dump_json`` was given NaN or an infinity, which JSON cannot hold (kind ``invalid-value``).

    A RecordError, so that ``extract`` passing such a value on records the row as bad data; also a
    ValueError, as ``dump_json`` raised before.
    """


def _non_finite(value: Any, path: str, seen: set[int]) -> str | None:
    """The path of the first NaN or infinity in ``value`` (``$``, ``$.key``, ``$[2]``), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} at {path}"
    if isinstance(value, dict | list | tuple):
        if id(value) in seen:  # a cycle: the encoder reports it on its own
            return None
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            found = _non_finite(v, f"{path}.{k}" if isinstance(value, dict) else f"{path}[{k}]", seen)
            if found:
                return found
    return None


def dump_json(value: Any) -> str:
    """Compact JSON text, as SQLite's ``json()`` writes it (no spaces, UTF-8 kept).

    NaN and infinities have no JSON form: they raise :class:`NonFiniteNumber`, a RecordError of
    kind ``invalid-value`` naming the value and where it is (orjson would write them as
    ``null``, silently; the standard encoder writes ``NaN``, which no strict parser accepts).
    """
    if type(value) is list and all(type(v) is str for v in value):
        # The common case (a list of labels) through orjson, which writes strings the same way
        # and refuses lone surrogates; orjson would write NaN as null, so other values take the
        # standard encoder.
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            pass
    try:
        return _ENCODER.encode(value)
    except ValueError:
        where = _non_finite(value, "$", set())
        if where is None:
            raise  # not a number: a circular reference, say
        raise NonFiniteNumber(
            f"cannot write {where} as JSON: JSON has no NaN or infinity", kind="invalid-value"
        ) from None
