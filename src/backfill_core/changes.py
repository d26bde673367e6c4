"""The changes an extractor returns: plain, immutable descriptions of writes."""

from __future__ import annotations

from collections.abc import Mapping
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
class Skip:
    """Something in the row that is deliberately not written, such as a list item without an id.

    Not an error: counted by ``kind`` in the run's summary.
    """

    kind: str
    message: str = ""


Change = Upsert | Update
_NO_DEFAULTS: Mapping[str, Any] = {}
RefFields = tuple[str, str, Any, Mapping[str, Any]]
Fields = tuple[
    str, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any] | None, tuple[RefFields, ...], bool
]
"""A change as plain values, cheap to build and to send between processes: (table, key, values,
defaults or None for an Update, requires as (table, column, value, match) tuples, independent)."""


class Skipped(Exception):
    """Raised by :func:`fields` for a :class:`Skip`: rows without one never pay for telling them apart."""


def fields(change: object, extractor: str) -> Fields:
    """``change`` as plain values; RecordError if it is neither an Upsert nor an Update, Skipped
    if it is a Skip."""
    cls = type(change)
    defaults: Mapping[str, Any] | None
    if cls is Upsert or (cls is not Update and isinstance(change, Upsert)):
        defaults = change.defaults  # type: ignore[attr-defined]
    elif cls is Update or isinstance(change, Update):
        defaults = None
    elif isinstance(change, Skip):
        raise Skipped
    else:
        raise RecordError(
            f"extractor {extractor!r} returned {cls.__name__}, not Upsert, Update or Skip", kind="plugin-bug"
        )
    requires = change.requires  # type: ignore[attr-defined]
    refs = tuple([(r.table, r.column, r.value, r.match) for r in requires]) if requires else ()
    return change.table, change.key, change.values, defaults, refs, change.independent  # type: ignore[attr-defined]


def checked(f: Fields, writes: Mapping[str, frozenset[str]], extractor: str) -> Fields:
    """Return ``f`` if it only touches what the extractor declared, else raise RecordError.

    A violation is a bug in the plugin, reported per record so the run can go on.
    """
    table, key, values, defaults, _, _ = f
    declared = writes.get(table)
    if (
        declared is not None
        and key
        and values.keys() <= declared
        and key.keys() <= declared
        and (defaults is None or defaults.keys() <= declared)
    ):
        return f
    raise _refusal(f, declared, extractor)


def check_change(change: object, writes: Mapping[str, frozenset[str]], extractor: str) -> Change:
    """Return ``change`` if it is an Upsert or Update that only touches what the extractor
    declared, else raise RecordError."""
    checked(fields(change, extractor), writes, extractor)
    return change  # type: ignore[return-value]


def _refusal(f: Fields, declared: frozenset[str] | None, extractor: str) -> RecordError:
    """Why ``checked`` refused ``f``: built only then, as the check runs for every change."""
    table, key, values, defaults, _, _ = f
    if declared is None:
        return RecordError(
            f"extractor {extractor!r} wrote table {table!r}, which it does not declare", kind="plugin-bug"
        )
    undeclared = (key.keys() | values.keys() | (defaults or _NO_DEFAULTS).keys()) - declared
    if undeclared:
        return RecordError(
            f"extractor {extractor!r} wrote undeclared columns {sorted(undeclared)} of {table!r}",
            kind="plugin-bug",
        )
    return RecordError(f"extractor {extractor!r} returned a change with no key", kind="plugin-bug")
