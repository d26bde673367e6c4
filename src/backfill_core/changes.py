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
    update and takes the default on insert.
    """

    table: str
    key: Mapping[str, Any]
    values: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[Ref, ...] = ()


@dataclass(frozen=True, slots=True)
class Update:
    """Update the existing row keyed by ``key``; a missing row is a record error."""

    table: str
    key: Mapping[str, Any]
    values: Mapping[str, Any]
    requires: tuple[Ref, ...] = ()


Change = Upsert | Update
_NO_DEFAULTS: Mapping[str, Any] = {}


def check_change(change: object, writes: Mapping[str, frozenset[str]], extractor: str) -> Change:
    """Return ``change`` if it only touches what the extractor declared, else raise RecordError.

    A violation is a bug in the plugin, reported per record so the run can go on.
    """
    if isinstance(change, (Upsert, Update)):  # a tuple: faster than a union here
        declared = writes.get(change.table)
        if (
            declared is not None
            and change.key
            and change.values.keys() <= declared
            and change.key.keys() <= declared
            and (not isinstance(change, Upsert) or change.defaults.keys() <= declared)
        ):
            return change
    raise _refusal(change, writes, extractor)


def _refusal(change: object, writes: Mapping[str, frozenset[str]], extractor: str) -> RecordError:
    """Why check_change refused ``change``: built only then, as this runs for every change."""
    if not isinstance(change, (Upsert, Update)):
        return RecordError(
            f"extractor {extractor!r} returned {type(change).__name__}, not Upsert or Update",
            kind="plugin-bug",
        )
    declared = writes.get(change.table)
    if declared is None:
        return RecordError(
            f"extractor {extractor!r} wrote table {change.table!r}, which it does not declare",
            kind="plugin-bug",
        )
    defaults = change.defaults if isinstance(change, Upsert) else _NO_DEFAULTS
    undeclared = (change.key.keys() | change.values.keys() | defaults.keys()) - declared
    if undeclared:
        return RecordError(
            f"extractor {extractor!r} wrote undeclared columns {sorted(undeclared)} of {change.table!r}",
            kind="plugin-bug",
        )
    return RecordError(f"extractor {extractor!r} returned a change with no key", kind="plugin-bug")
