"""The changes an extractor returns: plain, immutable descriptions of writes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill_core.errors import RecordError


@dataclass(frozen=True, slots=True)
class Ref:
    """A row that must exist in ``table`` with ``column == value`` and the ``match`` values.

    The engine checks every reference of a batch in bulk before writing; a change whose
    reference fails is dropped and counted as a record error of kind ``"integrity"``.
    """

    table: str
    column: str
    value: Any
    match: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert the row keyed by ``key``, or update the existing one.

    A column listed in ``defaults`` whose value is ``None`` keeps the existing value on
    update and takes the default on insert. An ``independent`` change that cannot be made (a
    failed reference) is dropped alone, and recorded as its row's record error; otherwise it
    takes every change of its row with it.
    """

    table: str
    key: Mapping[str, Any]
    values: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[Ref, ...] = ()
    independent: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    """Update the existing row keyed by ``key``; a missing row is a record error.

    ``independent`` as for :class:`Upsert`.
    """

    table: str
    key: Mapping[str, Any]
    values: Mapping[str, Any]
    requires: tuple[Ref, ...] = ()
    independent: bool = False


@dataclass(frozen=True, slots=True)
class Children:
    """The rows of ``table`` under the ``parent`` key are exactly ``rows``.

    Each row names the ``key`` columns that tell it apart from its siblings, and the values to
    set; the parent's columns and ``key`` together are a unique key of ``table``. The engine
    inserts the rows that are missing, updates those that differ and deletes the rows under
    ``parent`` that ``rows`` leaves out, in the batch's transaction. ``requires`` and
    ``independent`` as for :class:`Upsert`; a failed reference leaves the parent's rows as they are.
    """

    table: str
    parent: Mapping[str, Any]
    key: Sequence[str]
    rows: Sequence[Mapping[str, Any]]
    requires: tuple[Ref, ...] = ()
    independent: bool = False


@dataclass(frozen=True, slots=True)
class Skip:
    """Something in the row that is deliberately not written, such as a list item without an id.

    Not an error: counted by ``kind`` in the run's summary.
    """

    kind: str
    message: str = ""


Change = Upsert | Update | Children
"""A change ``extract`` yields for a source row (with any number of others, and Skips)."""
_NO_DEFAULTS: Mapping[str, Any] = {}
RefFields = tuple[str, str, Any, Mapping[str, Any]]
ChildRows = tuple[tuple[str, ...], tuple[Mapping[str, Any], ...]]
"""A Children change's key columns and rows."""
Fields = tuple[
    str,
    Mapping[str, Any],
    Mapping[str, Any],
    Mapping[str, Any] | None,
    tuple[RefFields, ...],
    bool,
    ChildRows | None,
]
"""A change as plain values, cheap to build and to send between processes: (table, key, values,
defaults or None for an Update, requires as (table, column, value, match) tuples, independent,
and for a Children change its key columns and rows, with its parent as the key)."""


class Skipped(Exception):
    """Raised by :func:`fields` for a :class:`Skip`: rows without one never pay for telling them apart."""


def fields(change: object, extractor: str) -> Fields:
    """``change`` as plain values; RecordError if it is not an Upsert, Update or Children,
    Skipped if it is a Skip."""
    cls = type(change)
    defaults: Mapping[str, Any] | None
    if cls is Upsert or (cls is not Update and isinstance(change, Upsert)):
        defaults = change.defaults  # type: ignore[attr-defined]
    elif cls is Update or isinstance(change, Update):
        defaults = None
    elif isinstance(change, Children):
        return _children_fields(change)
    elif isinstance(change, Skip):
        raise Skipped
    else:
        raise RecordError(
            f"extractor {extractor!r} returned {cls.__name__}, not Upsert, Update, Children or Skip",
            kind="plugin-bug",
        )
    requires = change.requires  # type: ignore[attr-defined]
    refs = tuple([(r.table, r.column, r.value, r.match) for r in requires]) if requires else ()
    return change.table, change.key, change.values, defaults, refs, change.independent, None  # type: ignore[attr-defined]


def _children_fields(change: Children) -> Fields:
    refs = tuple([(r.table, r.column, r.value, r.match) for r in change.requires])
    key = (change.key,) if isinstance(change.key, str) else tuple(change.key)
    rows = tuple(change.rows)
    return change.table, change.parent, _NO_DEFAULTS, _NO_DEFAULTS, refs, change.independent, (key, rows)


def checked(f: Fields, writes: Mapping[str, frozenset[str]], extractor: str) -> Fields:
    """Return ``f`` if it only touches what the extractor declared, else raise RecordError.

    A violation is a bug in the plugin, reported per record so the run can go on.
    """
    table, key, values, defaults, _, _, children = f
    declared = writes.get(table)
    if (
        declared is not None
        and key
        and values.keys() <= declared
        and key.keys() <= declared
        and (defaults is None or defaults.keys() <= declared)
        and (children is None or _children_ok(key, children, declared))
    ):
        return f
    raise _refusal(f, declared, extractor)


def _children_ok(parent: Mapping[str, Any], children: ChildRows, declared: frozenset[str]) -> bool:
    key_cols, rows = children
    if not key_cols or not declared.issuperset(key_cols) or not parent.keys().isdisjoint(key_cols):
        return False
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        if not isinstance(row, Mapping) or not row.keys() <= declared:
            return False
        for col in key_cols:
            if col not in row:
                return False
        for col, value in parent.items():
            if col in row and row[col] != value:
                return False
        seen.add(tuple([row[c] for c in key_cols]))
    return len(seen) == len(rows)


def _refusal(f: Fields, declared: frozenset[str] | None, extractor: str) -> RecordError:
    """Why ``checked`` refused ``f``: built only then, as the check runs for every change."""
    table, key, values, defaults, _, _, children = f
    if declared is None:
        return RecordError(
            f"extractor {extractor!r} wrote table {table!r}, which it does not declare", kind="plugin-bug"
        )
    columns = key.keys() | values.keys() | (defaults or _NO_DEFAULTS).keys()
    if children is not None:
        key_cols, rows = children
        columns |= set(key_cols)
        columns |= {c for row in rows if isinstance(row, Mapping) for c in row}
    undeclared = columns - declared
    if undeclared:
        return RecordError(
            f"extractor {extractor!r} wrote undeclared columns {sorted(undeclared)} of {table!r}",
            kind="plugin-bug",
        )
    if not key:
        what = "a Children change with no parent" if children is not None else "a change with no key"
        return RecordError(f"extractor {extractor!r} returned {what}", kind="plugin-bug")
    assert children is not None
    problem = _children_problem(key, children)
    return RecordError(f"extractor {extractor!r} returned {problem}", kind="plugin-bug")


def _children_problem(parent: Mapping[str, Any], children: ChildRows) -> str:
    key_cols, rows = children
    if not key_cols:
        return "a Children change with no key columns"
    if not parent.keys().isdisjoint(key_cols):
        return f"a Children change whose key {list(key_cols)} repeats a parent column"
    for row in rows:
        if not isinstance(row, Mapping):
            return f"a Children change whose rows hold {type(row).__name__}, not mappings of columns"
        missing = [c for c in key_cols if c not in row]
        if missing:
            return f"a Children row without its key column(s) {missing}: {dict(row)!r}"[:300]
        for col, value in parent.items():
            if col in row and row[col] != value:
                return f"a Children row whose {col}={row[col]!r} is not its parent's {value!r}"
    counts = Counter(tuple([row[c] for c in key_cols]) for row in rows)
    twice = next(k for k, n in counts.items() if n > 1)
    return f"a Children change listing the row with key {dict(zip(key_cols, twice, strict=True))} twice"
