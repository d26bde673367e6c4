"""Parsing and writing JSON text the way extractors need it: strict, and deterministic."""

from __future__ import annotations

import json
import math
from typing import Any

from backfill_core.errors import RecordError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(text: Any, what: str) -> Any:
    """Parse JSON ``text`` (str, bytes, or an already-decoded value); None stays None.

    Malformed text raises RecordError(kind="invalid-json") naming ``what``.
    """
    if text is None or isinstance(text, dict | list):
        return text
    if isinstance(text, bytes | bytearray | memoryview):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise RecordError(f"{what} is {type(text).__name__}, not JSON text", kind="invalid-json")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise RecordError(f"{what} is not valid JSON: {e}", kind="invalid-json") from None


def dump_json(value: Any) -> str:
    """Compact JSON text, as SQLite's ``json()`` writes it (no spaces, UTF-8 kept)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
