"""Hypothesis strategies for extractor tests: JSON values and text, source rows, payloads.

Rows hold what a database driver returns for a SQLite column: ``None``, 64-bit integers,
floats, text and bytes. JSON columns hold JSON *text*, as they do in the database.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from backfill_core.errors import RecordError
from backfill_core.extractor import Extractor
from backfill_core.jsonvalue import dump_json

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

__all__ = [
    "json_text",
    "json_values",
    "keys",
    "payloads_like",
    "rows",
    "sql_values",
    "well_formed_rows",
]


def json_scalars(*, allow_nonfinite: bool = False) -> SearchStrategy[Any]:
    """null, booleans, integers (some beyond 64 bits), finite floats and unicode text; with
    ``allow_nonfinite``, also NaN and infinities."""
    return (
        st.none()
        | st.booleans()
        | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
        | st.integers(min_value=INT64_MAX + 1, max_value=2**100)
        | st.integers(min_value=-(2**100), max_value=INT64_MIN - 1)
        | st.floats(allow_nan=allow_nonfinite, allow_infinity=allow_nonfinite)
        | st.text(max_size=30)
    )


def json_values(*, max_leaves: int = 20, allow_nonfinite: bool = False) -> SearchStrategy[Any]:
    """Any value JSON can hold: scalars and nested lists and objects.

    No NaN or infinity unless ``allow_nonfinite``: such values have no JSON text
    (:func:`~backfill_core.dump_json` refuses them with a RecordError of kind ``invalid-value``),
    so ask for them only to test code that builds JSON from values that did not come from JSON.
    """
    return st.recursive(
        json_scalars(allow_nonfinite=allow_nonfinite),
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
        ),
        max_leaves=max_leaves,
    )


# Text that is not valid JSON, or is valid JSON a strict parser must still refuse.
MALFORMED = (
    "",
    " ",
    "{",
    "[1,",
    "nul",
    "NaN",
    "Infinity",
    "-Infinity",
    "{'single': 'quotes'}",
    '{"a": 1,}',
    "[1e400]",
    '{"n": -1e999}',
    '"\\ud800"',
    "01",
    "\x00",
)


@st.composite
def _truncated(draw: st.DrawFn) -> str:
    text = draw(json_values().map(dump_json).filter(lambda t: len(t) > 1))
    return text[: draw(st.integers(min_value=1, max_value=len(text) - 1))]


def json_text(*, malformed: bool = True) -> SearchStrategy[str]:
    """JSON text of arbitrary values, compact or indented; with ``malformed``, also text that is
    not JSON (truncated documents, NaN, numbers beyond a double, lone surrogate escapes, ...)."""
    good = json_values().map(dump_json) | json_values().map(lambda v: json.dumps(v, indent=2))
    if not malformed:
        return good
    return good | _truncated() | st.sampled_from(MALFORMED) | st.text(max_size=30)


def sql_values() -> SearchStrategy[Any]:
    """A value a SQLite driver can return for any column: None, int64, float, text or bytes."""
    return (
        st.none()
        | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
        | st.floats(allow_nan=False)
        | st.text(max_size=30)
        | json_text()
        | st.binary(max_size=30)
    )


def keys() -> SearchStrategy[int]:
    """Source keys: positive 64-bit integers, mostly small so batches share and collide."""
    return st.integers(min_value=1, max_value=1000) | st.integers(min_value=1, max_value=INT64_MAX)


def _row(
    extractor: Extractor,
    key: SearchStrategy[Any],
    columns: Mapping[str, SearchStrategy[Any]],
    other: Any,
    extra: Mapping[str, SearchStrategy[Any]] | None,
) -> SearchStrategy[dict[str, Any]]:
    read = list(extractor.read_columns)
    unknown = set(columns) - set(read)
    if unknown:
        raise ValueError(
            f"{extractor!r} does not read {sorted(unknown)}; it reads {read} "
            "(values for columns it does not read go in extra=)"
        )
    read_too = set(extra or {}) & set(read)
    if read_too:
        raise ValueError(f"{extractor!r} reads {sorted(read_too)}: give them in columns=, not extra=")
    fields = {name: (key if name == extractor.key else columns.get(name, other)) for name in read}
    fields.update(extra or {})
    return st.fixed_dictionaries(fields)


def rows(
    extractor: Extractor,
    *,
    columns: Mapping[str, SearchStrategy[Any]] | None = None,
    key: SearchStrategy[Any] | None = None,
    extra: Mapping[str, SearchStrategy[Any]] | None = None,
) -> SearchStrategy[dict[str, Any]]:
    """Arbitrary rows of ``extractor.read_columns``: a positive integer key, and in every other
    column any value a driver may return (see :func:`sql_values`), JSON text included.

    ``columns`` replaces the strategy of some read columns; ``key`` the key's. ``extra`` adds
    columns of the source table that the extractor does not read, for a test schema that needs
    them (NOT NULL without a default, a CHECK the kit's filler values fail): the database checks
    insert them, and the row checks give ``extract`` only the columns it reads, as the engine
    does.
    """
    return _row(extractor, keys() if key is None else key, columns or {}, sql_values(), extra)


def _json_text_of(column: str) -> Callable[[Any], str]:
    def dump(payload: Any) -> str:
        try:
            return dump_json(payload)
        except RecordError as e:
            raise ValueError(
                f"well_formed_rows: the payload drawn for {column!r} has no JSON text ({e.message}); "
                "draw finite floats: st.floats(allow_nan=False, allow_infinity=False)"
            ) from None

    return dump


def well_formed_rows(
    extractor: Extractor,
    payloads: Mapping[str, SearchStrategy[Any]],
    *,
    columns: Mapping[str, SearchStrategy[Any]] | None = None,
    key: SearchStrategy[Any] | None = None,
    others: SearchStrategy[Any] | None = None,
    extra: Mapping[str, SearchStrategy[Any]] | None = None,
) -> SearchStrategy[dict[str, Any]]:
    """Rows of ``extractor.read_columns`` meant to reach the code that writes.

    - ``payloads``: ``{column: strategy}`` for the JSON columns; each holds the compact JSON text
      (:func:`~backfill_core.dump_json`) of a value drawn from its strategy, e.g. from
      :func:`payloads_like`. A value with NaN or an infinity has no JSON text: a ValueError.
    - ``columns``: ``{column: strategy}`` for other read columns, used as drawn (not JSON).
    - ``key``: the key column's values (default: integers 1..10000).
    - ``others``: every read column named in neither (default: integers 1..5; most columns
      beside a JSON document are ids, and small ones make rows share customers and references).
    - ``extra``: columns of the source table the extractor does not read, as for :func:`rows`.

    A column in both ``payloads`` and ``columns`` is a ValueError, as is a column the extractor
    does not read in either.
    """
    fields: dict[str, SearchStrategy[Any]] = {c: s.map(_json_text_of(c)) for c, s in payloads.items()}
    overlap = set(fields) & set(columns or {})
    if overlap:
        raise ValueError(f"columns {sorted(overlap)} are given both as payloads and as columns")
    fields.update(columns or {})
    return _row(
        extractor,
        st.integers(min_value=1, max_value=10_000) if key is None else key,
        fields,
        others if others is not None else st.integers(min_value=1, max_value=5),
        extra,
    )


def payloads_like(
    sample: Mapping[str, Any],
    *,
    overrides: Mapping[str, SearchStrategy[Any]] | None = None,
    max_list: int = 4,
) -> SearchStrategy[dict[str, Any]]:
    """Dicts shaped like ``sample``: the same keys, each value of the same JSON type as the
    sample's, nested objects alike, lists of elements like the sample list's elements.

    Numbers keep their sign; text is any unicode. ``overrides`` maps a path to the strategy to
    use there instead: ``"severity"``, ``"device.name"``, ``"features[].id"`` (``[]`` is any
    element of a list), or a whole ``"features"``. A path that matches nothing is an error.
    """
    overrides = dict(overrides or {})
    used: set[str] = set()

    def like(value: Any, path: str) -> SearchStrategy[Any]:
        if path in overrides:
            used.add(path)
            return overrides[path]
        if value is None:
            return st.none()
        if isinstance(value, bool):
            return st.booleans()
        if isinstance(value, int):
            return st.integers(min_value=0 if value >= 0 else INT64_MIN, max_value=INT64_MAX)
        if isinstance(value, float):
            return st.floats(min_value=0.0 if value >= 0 else None, allow_nan=False, allow_infinity=False)
        if isinstance(value, str):
            return st.text(max_size=max(30, 2 * len(value)))
        if isinstance(value, Mapping):
            return st.fixed_dictionaries({k: like(v, f"{path}.{k}" if path else k) for k, v in value.items()})
        if isinstance(value, list | tuple):
            element = f"{path}[]"
            if element in overrides:
                used.add(element)
                elements = overrides[element]
            elif value:
                elements = st.one_of([like(v, element) for v in value])
            else:
                elements = json_scalars()
            return st.lists(elements, max_size=max(max_list, len(value)))
        raise TypeError(f"{path or 'the sample'} is {type(value).__name__}, not a JSON value")

    strategy = like(dict(sample), "")
    unused = set(overrides) - used
    if unused:
        raise ValueError(f"overrides {sorted(unused)} match no path of the sample")
    return strategy
