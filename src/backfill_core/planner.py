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


@dataclass(slots=True)
class Extracted:
    """The changes one source row produced, each with the target row it addresses."""

    key: Any
    changes: Sequence[Change]
    addresses: list[tuple[Target, tuple[Any, ...]]] = field(init=False)

    def __post_init__(self) -> None:
        self.addresses = [address(c) for c in self.changes]


@dataclass(slots=True)
class Failure:
    key: Any
    kind: str
    message: str


@dataclass(slots=True)
class _Entry:
    current: dict[str, Any] | None
    new: dict[str, Any]
    defaults: dict[str, Any] = field(default_factory=dict)


@dataclass
class Writes:
    """Rows to insert and to update in one table, addressed by ``key_cols``."""

    table: str
    key_cols: KeyCols
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)


@dataclass
class Plan:
    writes: dict[Target, Writes]
    inserted: int
    updated: int
    unchanged: int
    failures: list[Failure]
    samples: list[dict[str, Any]]
    merged: dict[Target, dict[tuple[Any, ...], dict[str, Any]]]
    """The resulting row of every target inserted or updated, for a dry run's overlay (rows that
    already exist only with keep_merged)."""

    @property
    def has_writes(self) -> bool:
        return any(w.inserts or w.updates for w in self.writes.values())


def address(change: Change) -> tuple[Target, tuple[Any, ...]]:
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
            needed.setdefault(target, set()).add(key)
    return needed


def refs_needed(batch: Iterable[Extracted]) -> dict[tuple[str, str], tuple[set[str], set[Any]]]:
    """For each referenced (table, column): the match columns and the values looked for."""
    needed: dict[tuple[str, str], tuple[set[str], set[Any]]] = {}
    for item in batch:
        for change in item.changes:
            for ref in change.requires:
                cols, values = needed.setdefault((ref.table, ref.column), (set(), set()))
                cols.update(ref.match)
                values.add(ref.value)
    return needed


def plan_batch(
    batch: Sequence[Extracted],
    current: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    referenced: Mapping[tuple[str, str], Mapping[Any, Mapping[str, Any]]],
    *,
    sample_size: int = 0,
    keep_merged: bool = True,
) -> Plan:
    """Decide the writes for ``batch``, applying its changes in order (the last one wins).

    ``keep_merged=False`` leaves out ``Plan.merged`` for rows that already exist; only a dry
    run's overlay needs them.
    """
    entries: dict[Target, dict[tuple[Any, ...], _Entry]] = {}
    failures: list[Failure] = []
    for item in batch:
        problem = _check(item, current, referenced, entries)
        if problem:
            failures.append(Failure(item.key, *problem))
            continue
        for change, (target, key) in zip(item.changes, item.addresses, strict=True):
            rows = entries.get(target)
            if rows is None:
                rows = entries[target] = {}
            entry = rows.get(key)
            if entry is None:
                found = current.get(target, _EMPTY).get(key)
                entry = rows[key] = _Entry(None if found is None else dict(found), dict(change.key))
            defaults = change.defaults if isinstance(change, Upsert) else _EMPTY
            if not defaults:
                entry.new.update(change.values)
                continue
            entry.defaults.update(defaults)
            for col, value in change.values.items():
                if value is not None or col not in defaults:
                    entry.new[col] = value
    return _diff(entries, failures, sample_size, keep_merged)


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
            problem = _check_ref(ref, referenced, entries)
            if problem:
                return "integrity", problem
    return None


def _check_ref(
    ref: Ref,
    referenced: Mapping[tuple[str, str], Mapping[Any, Mapping[str, Any]]],
    entries: Mapping[Target, Mapping[tuple[Any, ...], _Entry]],
) -> str | None:
    row: Mapping[str, Any] | None = referenced.get((ref.table, ref.column), {}).get(ref.value)
    pending = entries.get((ref.table, (ref.column,)), {}).get((ref.value,))
    if pending is not None:
        row = {**(pending.current or {}), **pending.new}
    if row is None:
        return f"{ref.table}.{ref.column}={ref.value!r} does not exist"
    for col, expected in ref.match.items():
        if row.get(col) != expected:
            return f"{ref.table}.{ref.column}={ref.value!r} has {col}={row.get(col)!r}, expected {expected!r}"
    return None


def _diff(
    entries: dict[Target, dict[tuple[Any, ...], _Entry]],
    failures: list[Failure],
    sample_size: int,
    keep_merged: bool,
) -> Plan:
    writes: dict[Target, Writes] = {}
    merged: dict[Target, dict[tuple[Any, ...], dict[str, Any]]] = {}
    samples: list[dict[str, Any]] = []
    inserted = updated = unchanged = 0
    for target, rows in entries.items():
        out = writes[target] = Writes(target[0], target[1])
        final = merged[target] = {}
        for key, entry in rows.items():
            if entry.current is None:
                row = {**entry.defaults, **entry.new}
                out.inserts.append(row)
                final[key] = row
                inserted += 1
                if len(samples) < sample_size:
                    samples.append({"table": target[0], "action": "insert", "row": row})
                continue
            current = entry.current
            if all(current.get(c) == v for c, v in entry.new.items()):
                unchanged += 1  # as it is in the database: nothing for an overlay to remember
                continue
            if keep_merged:
                final[key] = {**current, **entry.new}
            values = {c: v for c, v in entry.new.items() if c not in target[1]}
            out.updates.append((dict(zip(target[1], key, strict=True)), values))
            updated += 1
            if len(samples) < sample_size:
                changed = {c: v for c, v in entry.new.items() if current.get(c) != v}
                samples.append(
                    {
                        "table": target[0],
                        "action": "update",
                        "key": dict(zip(target[1], key, strict=True)),
                        "changes": {c: [entry.current.get(c), v] for c, v in changed.items()},
                    }
                )
    return Plan(writes, inserted, updated, unchanged, failures, samples, merged)
