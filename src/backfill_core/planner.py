"""Turning a batch of extracted changes into the writes that really change something.

Pure: the engine reads the current rows and the referenced rows, this module decides what to
insert, what to update and what is unchanged, and which source rows fail a reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill_core.changes import Change, Ref, Update, Upsert

_EMPTY: Mapping[Any, Any] = {}

KeyCols = tuple[str, ...]
Target = tuple[str, KeyCols]
"""A table and the key columns changes address it by."""
Address = tuple[Target, tuple[Any, ...]]


@dataclass(slots=True)
class Extracted:
    """The changes one source row produced, each with the target row it addresses."""

    key: Any
    changes: Sequence[Change]
    addresses: Sequence[Address] = ()
    checked: bool = True
    """Whether a change is an Update or has references: only then can the row fail in planning."""

    def __post_init__(self) -> None:
        if not self.addresses and self.changes:
            self.addresses = [address(c) for c in self.changes]


@dataclass(slots=True)
class Failure:
    key: Any
    kind: str
    message: str


@dataclass
class Writes:
    """Rows to insert and to update in one table, addressed by ``key_cols``."""

    table: str
    key_cols: KeyCols
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[tuple[dict[str, Any], Mapping[str, Any]]] = field(default_factory=list)
    """(key, values) pairs; the values may be the change's own mapping, which nothing mutates."""


@dataclass
class Plan:
    writes: dict[Target, Writes]
    inserted: int
    updated: int
    unchanged: int
    failures: list[Failure]
    samples: list[dict[str, Any]]
    merged: dict[Target, dict[tuple[Any, ...], dict[str, Any]]]
    """The resulting row of every target inserted or updated, for a dry run's overlay; empty
    unless planned with keep_merged."""

    @property
    def has_writes(self) -> bool:
        return any(w.inserts or w.updates for w in self.writes.values())


def address(change: Change) -> Address:
    """The (table, key columns) a change addresses, and its key values in that column order."""
    key = change.key
    if len(key) == 1:
        ((col, value),) = key.items()
        return (change.table, (col,)), (value,)
    cols = tuple(sorted(key))
    return (change.table, cols), tuple(key[c] for c in cols)


def keys_needed(batch: Iterable[Extracted]) -> dict[Target, set[tuple[Any, ...]]]:
    """The target rows whose current values the plan needs."""
    needed: dict[Target, set[tuple[Any, ...]]] = {}
    for item in batch:
        for target, key in item.addresses:
            keys = needed.get(target)
            if keys is None:
                keys = needed[target] = set()
            keys.add(key)
    return needed


def refs_needed(batch: Iterable[Extracted]) -> dict[tuple[str, str], tuple[set[str], set[Any]]]:
    """For each referenced (table, column): the match columns and the values looked for."""
    needed: dict[tuple[str, str], tuple[set[str], set[Any]]] = {}
    for item in batch:
        if not item.checked:
            continue
        for change in item.changes:
            for ref in change.requires:
                cols, values = needed.setdefault((ref.table, ref.column), (set(), set()))
                cols.update(ref.match)
                values.add(ref.value)
    return needed


class _Entry:
    """A target row's pending values within a batch: ``new`` is shared with the change until a
    second change to the same row merges into a copy."""

    __slots__ = ("defaults", "new", "owned")

    def __init__(self, new: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        self.new = new
        self.defaults = defaults
        self.owned = False

    def merge(self, new: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        if not self.owned:
            self.new, self.defaults, self.owned = dict(self.new), dict(self.defaults), True
        self.new.update(new)  # type: ignore[attr-defined]
        self.defaults.update(defaults)  # type: ignore[attr-defined]


def _effective(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> Mapping[str, Any]:
    """``values`` without the defaulted columns set to None (those keep what the row has)."""
    for col in defaults:
        if col in values and values[col] is None:
            return {c: v for c, v in values.items() if v is not None or c not in defaults}
    return values


def plan_batch(
    batch: Sequence[Extracted],
    current: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    referenced: Mapping[tuple[str, str], Mapping[Any, Mapping[str, Any]]],
    *,
    sample_size: int = 0,
    keep_merged: bool = True,
) -> Plan:
    """Decide the writes for ``batch``, applying its changes in order (the last one wins).

    ``keep_merged=False`` leaves ``Plan.merged`` empty; only a dry run's overlay needs it.
    """
    entries: dict[Target, dict[tuple[Any, ...], _Entry]] = {}
    failures: list[Failure] = []
    for item in batch:
        if item.checked:
            problem = _check(item, current, referenced, entries)
            if problem:
                failures.append(Failure(item.key, *problem))
                continue
        for change, (target, key) in zip(item.changes, item.addresses, strict=True):
            rows = entries.get(target)
            if rows is None:
                rows = entries[target] = {}
            defaults = change.defaults if isinstance(change, Upsert) else _EMPTY
            new = _effective(change.values, defaults) if defaults else change.values
            entry = rows.get(key)
            if entry is None:
                rows[key] = _Entry(new, defaults)
            else:
                entry.merge(new, defaults)
    return _diff(entries, current, failures, sample_size, keep_merged)


def _check(
    item: Extracted,
    current: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    referenced: Mapping[tuple[str, str], Mapping[Any, Mapping[str, Any]]],
    entries: Mapping[Target, Mapping[tuple[Any, ...], _Entry]],
) -> tuple[str, str] | None:
    """Why ``item`` cannot be applied (an Update of a missing row, a failed reference), or None."""
    for change, (target, key) in zip(item.changes, item.addresses, strict=True):
        if (
            isinstance(change, Update)
            and key not in current.get(target, _EMPTY)
            and key not in entries.get(target, _EMPTY)
        ):
            where = ", ".join(f"{c}={v!r}" for c, v in sorted(change.key.items()))
            return "missing", f"{change.table} row {where} does not exist, so it cannot be updated"
        for ref in change.requires:
            problem = _check_ref(ref, current, referenced, entries)
            if problem:
                return "integrity", problem
    return None


def _check_ref(
    ref: Ref,
    current: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    referenced: Mapping[tuple[str, str], Mapping[Any, Mapping[str, Any]]],
    entries: Mapping[Target, Mapping[tuple[Any, ...], _Entry]],
) -> str | None:
    row: Mapping[str, Any] | None = referenced.get((ref.table, ref.column), _EMPTY).get(ref.value)
    target = (ref.table, (ref.column,))
    pending = entries.get(target, _EMPTY).get((ref.value,))
    if pending is not None:
        base = current.get(target, _EMPTY).get((ref.value,)) or row
        row = {**(pending.defaults if base is None else base), ref.column: ref.value, **pending.new}
    if row is None:
        return f"{ref.table}.{ref.column}={ref.value!r} does not exist"
    for col, expected in ref.match.items():
        if row.get(col) != expected:
            return f"{ref.table}.{ref.column}={ref.value!r} has {col}={row.get(col)!r}, expected {expected!r}"
    return None


def _diff(
    entries: dict[Target, dict[tuple[Any, ...], _Entry]],
    current: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    failures: list[Failure],
    sample_size: int,
    keep_merged: bool,
) -> Plan:
    writes: dict[Target, Writes] = {}
    merged: dict[Target, dict[tuple[Any, ...], dict[str, Any]]] = {}
    samples: list[dict[str, Any]] = []
    inserted = updated = unchanged = 0
    for target, rows in entries.items():
        table, key_cols = target
        out = writes[target] = Writes(table, key_cols)
        inserts, updates = out.inserts, out.updates
        final = merged[target] = {}
        existing = current.get(target, _EMPTY)
        for key, entry in rows.items():
            new = entry.new
            found = existing.get(key)
            if found is None:
                row = {**entry.defaults, **dict(zip(key_cols, key, strict=True)), **new}
                inserts.append(row)
                if keep_merged:
                    final[key] = row
                if len(samples) < sample_size:
                    samples.append({"table": table, "action": "insert", "row": row})
                continue
            if new.items() <= found.items():
                unchanged += 1  # as it is in the database: nothing for an overlay to remember
                continue
            if any(c in new for c in key_cols):
                new = {c: v for c, v in new.items() if c not in key_cols}
            updates.append((dict(zip(key_cols, key, strict=True)), new))
            if keep_merged:
                final[key] = {**found, **new}
            if len(samples) < sample_size:
                samples.append(
                    {
                        "table": table,
                        "action": "update",
                        "key": dict(zip(key_cols, key, strict=True)),
                        "changes": {c: [found.get(c), v] for c, v in new.items() if found.get(c) != v},
                    }
                )
        inserted += len(inserts)
        updated += len(updates)
    return Plan(writes, inserted, updated, unchanged, failures, samples, merged)
