"""Turning a batch of extracted changes into the writes that really change something.

Pure: the engine reads the current rows and the referenced rows, this module decides what to
insert, what to update and what is unchanged, and which source rows fail a reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from backfill_core.changes import ChildRows, Fields
from backfill_core.store.records import Delta, ErrorRecord

_EMPTY: Mapping[Any, Any] = {}

KeyCols = tuple[str, ...]
Target = tuple[str, KeyCols]
"""A table and the key columns changes address it by."""


RefSpec = tuple[Target, Any, Mapping[str, Any]]
"""A Ref as planning uses it: (the referenced table and column as a Target, value, match)."""
Owned = tuple[KeyCols, tuple[tuple[tuple[Any, ...], Mapping[str, Any]], ...]]
"""A Children change as planning uses it: its parent's columns, and each row's key values (in
the target's key order) with the row."""


class Op(NamedTuple):
    """One change as planning uses it. Plain values: cheap to build and to send between
    processes, unlike the Change objects plugins return."""

    target: Target
    key: tuple[Any, ...]
    """The key's values in the target's key order; for a Children change, its parent's values."""
    values: Mapping[str, Any]
    """Without the defaulted columns set to None (those keep what the row has)."""
    defaults: Mapping[str, Any]
    refs: tuple[RefSpec, ...]
    is_update: bool
    independent: bool
    owned: Owned | None
    """What a Children change owns; None for any other change."""


class Extracted(NamedTuple):
    """What one source row produced."""

    key: Any
    ops: list[Op]
    checked: bool
    """Whether planning must check the changes: only an Update or a change with references can
    fail in planning."""


Parents = tuple[Target, KeyCols]
"""A table's rows addressed by a key (the Target) and grouped by parent columns."""


Targets = dict[str, dict[str, Target]]
"""One Target object per table and key column, shared by every change that addresses it (the
planner's dicts then hash and compare them by identity first)."""


new_tuple = tuple.__new__
"""Builds a NamedTuple from a tuple of its fields without the Python call its ``__new__`` costs
per object (hundreds of thousands of changes per run)."""


def op(f: Fields, targets: Targets | None = None) -> Op:
    """A change's ``fields`` as planning uses them; they must have passed ``checked``. Its
    Targets are taken from (or added to) ``targets``."""
    table, key, values, defaults, requires, independent, children = f
    targets = {} if targets is None else targets
    refs = tuple([(_target(targets, t, c), v, m) for t, c, v, m in requires]) if requires else ()
    if children is not None:
        return _owned(table, key, children, refs, independent)
    if len(key) == 1:
        ((col, value),) = key.items()
        target, key_values = _target(targets, table, col), (value,)
    else:  # the key's columns in sorted order, and its values in that order
        cols = tuple(sorted(key))
        target, key_values = (table, cols), tuple(key[c] for c in cols)
    if defaults is None:
        return new_tuple(Op, (target, key_values, values, _EMPTY, refs, True, independent, None))
    effective = _effective(values, defaults) if defaults else values
    return new_tuple(Op, (target, key_values, effective, defaults, refs, False, independent, None))


def _owned(
    table: str, parent: Mapping[str, Any], children: ChildRows, refs: tuple[RefSpec, ...], independent: bool
) -> Op:
    key_cols, rows = children
    parent_cols = tuple(sorted(parent))
    cols = tuple(sorted((*parent_cols, *key_cols)))
    target = (table, cols)
    owned = tuple([(tuple([row[c] if c in row else parent[c] for c in cols]), row) for row in rows])
    parent_values = tuple([parent[c] for c in parent_cols])
    return Op(target, parent_values, _EMPTY, _EMPTY, refs, False, independent, (parent_cols, owned))


def extracted(key: Any, changes: Iterable[Fields], targets: Targets | None = None) -> Extracted:
    """The Extracted for source row ``key`` and its (checked) ``changes``; see :func:`op`."""
    targets = {} if targets is None else targets
    ops = [op(c, targets) for c in changes]
    for o in ops:
        if o.refs or o.is_update:
            return new_tuple(Extracted, (key, ops, True))
    return new_tuple(Extracted, (key, ops, False))


def parents_needed(batch: Iterable[Extracted]) -> dict[Parents, set[tuple[Any, ...]]]:
    """The parents whose current child rows the plan needs, by table and parent columns."""
    needed: dict[Parents, set[tuple[Any, ...]]] = {}
    for _, ops, _ in batch:
        for o in ops:
            owned = o.owned
            if owned is not None:
                needed.setdefault((o.target, owned[0]), set()).add(o.key)
    return needed


@dataclass
class Writes:
    """Rows to insert and to update in one table, addressed by ``key_cols``."""

    table: str
    key_cols: KeyCols
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[tuple[tuple[Any, ...], Mapping[str, Any]]] = field(default_factory=list)
    """(key values in ``key_cols`` order, values) pairs; the values may be the change's own
    mapping, which nothing mutates."""
    deletes: list[tuple[Any, ...]] = field(default_factory=list)
    """Key values, in ``key_cols`` order, of the rows a Children change leaves out."""


@dataclass
class Plan(Delta):
    """A batch's writes, what they will do (its counts) and the source rows that fail in
    planning (its ``errors``, record errors)."""

    writes: dict[Target, Writes] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    merged: dict[Target, dict[tuple[Any, ...], dict[str, Any] | None]] = field(default_factory=dict)
    """The resulting row of every target row inserted or updated (None: deleted), for a dry run's
    overlay; empty unless planned with keep_merged."""


def _target(targets: Targets, table: str, column: str) -> Target:
    by_col = targets.get(table) or targets.setdefault(table, {})
    return by_col.get(column) or by_col.setdefault(column, (table, (column,)))


def keys_needed(batch: Iterable[Extracted]) -> dict[Target, set[tuple[Any, ...]]]:
    """The target rows whose current values the plan needs."""
    needed: dict[Target, set[tuple[Any, ...]]] = {}
    last: Target | None = None
    keys: set[tuple[Any, ...]] = set()
    for _, ops, _ in batch:
        for o in ops:
            target = o.target
            if target is not last:
                last = target
                keys = needed.get(target) or needed.setdefault(target, set())
            owned = o.owned
            if owned is None:
                keys.add(o.key)
            else:
                keys.update(k for k, _ in owned[1])
    return needed


def refs_needed(batch: Iterable[Extracted]) -> dict[Target, tuple[set[str], set[Any]]]:
    """For each referenced table and column: the match columns and the values looked for."""
    needed: dict[Target, tuple[set[str], set[Any]]] = {}
    for _, ops, checked in batch:
        if not checked:
            continue
        for o in ops:
            for target, value, match in o.refs:
                found = needed.get(target)
                if found is None:
                    found = needed[target] = (set(), set())
                if match:
                    found[0].update(match)
                found[1].add(value)
    return needed


Entry = tuple[Mapping[str, Any], Mapping[str, Any]]
"""A target row's pending values within a batch and its defaults: the change's own mappings,
until a second change to the same row merges both into new ones."""


def _effective(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> Mapping[str, Any]:
    """``values`` without the defaulted columns set to None (those keep what the row has)."""
    effective = values
    for col in defaults:
        if col in effective and effective[col] is None:
            if effective is values:
                effective = dict(values)
            del effective[col]  # type: ignore[attr-defined]
    return effective


def plan_batch(
    batch: Sequence[Extracted],
    current: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    referenced: Mapping[Target, Mapping[Any, Mapping[str, Any]]],
    children: Mapping[Parents, Mapping[tuple[Any, ...], Iterable[tuple[Any, ...]]]] = _EMPTY,
    *,
    sample_size: int = 0,
    keep_merged: bool = True,
    extractor: str = "",
) -> Plan:
    """Decide the writes for ``batch``, applying its changes in order (the last one wins).

    ``children`` holds the key values of the rows now under each parent a Children change of the
    batch owns. ``keep_merged=False`` leaves ``Plan.merged`` empty; only a dry run's overlay needs it.
    The plan's errors name ``extractor``.
    """
    entries: dict[Target, dict[tuple[Any, ...], Entry]] = {}
    owners: dict[Target, dict[tuple[KeyCols, tuple[Any, ...]], set[tuple[Any, ...]]]] = {}
    failures: list[ErrorRecord] = []
    for source_key, ops, checked in batch:
        applied: Sequence[Op] = ops
        if checked:
            problem, applied = _check(ops, current, referenced, entries)
            if problem:
                failures.append(ErrorRecord(extractor, source_key, "record", *problem))
        for target, key, new, defaults, _, _, _, owned in applied:
            rows = entries.get(target)
            if rows is None:
                rows = entries[target] = {}
            if owned is not None:
                _own(rows, owners.setdefault(target, {}), key, owned)
                continue
            entry = rows.get(key)
            rows[key] = (new, defaults) if entry is None else ({**entry[0], **new}, {**entry[1], **defaults})
    plan = _diff(entries, current, failures, sample_size, keep_merged)
    if owners:
        _delete(plan, owners, entries, children, sample_size, keep_merged)
    return plan


def _own(
    rows: dict[tuple[Any, ...], Entry],
    owners: dict[tuple[KeyCols, tuple[Any, ...]], set[tuple[Any, ...]]],
    parent: tuple[Any, ...],
    owned: Owned,
) -> None:
    """Apply a Children change: its rows as upserts, and its parent's set as the one it names
    (rows an earlier Children change of the batch named for the same parent are dropped)."""
    parent_cols, items = owned
    wanted = {key for key, _ in items}
    before = owners.get((parent_cols, parent))
    if before is not None:
        for key in before - wanted:
            rows.pop(key, None)
    owners[(parent_cols, parent)] = wanted
    for key, new in items:
        entry = rows.get(key)
        rows[key] = (new, _EMPTY) if entry is None else ({**entry[0], **new}, entry[1])


def _delete(
    plan: Plan,
    owners: Mapping[Target, Mapping[tuple[KeyCols, tuple[Any, ...]], set[tuple[Any, ...]]]],
    entries: Mapping[Target, Mapping[tuple[Any, ...], Entry]],
    children: Mapping[Parents, Mapping[tuple[Any, ...], Iterable[tuple[Any, ...]]]],
    sample_size: int,
    keep_merged: bool,
) -> None:
    """Delete the rows under each owned parent that no change of the batch writes (the plan has
    the writes and merged rows of every target of ``entries``, the owned ones among them)."""
    for target, by_parent in owners.items():
        table, key_cols = target
        written, out, final = entries[target], plan.writes[target], plan.merged[target]
        for parent_cols, parent in by_parent:
            for key in children.get((target, parent_cols), _EMPTY).get(parent, ()):
                if key in written:
                    continue
                out.deletes.append(key)
                if keep_merged:
                    final[key] = None
                if len(plan.samples) < sample_size:
                    plan.samples.append(
                        {"table": table, "action": "delete", "key": dict(zip(key_cols, key, strict=True))}
                    )
        plan.deleted += len(out.deletes)


def _check(
    ops: Sequence[Op],
    current: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    referenced: Mapping[Target, Mapping[Any, Mapping[str, Any]]],
    entries: Mapping[Target, Mapping[tuple[Any, ...], Entry]],
) -> tuple[tuple[str, str] | None, Sequence[Op]]:
    """Why changes of ``ops`` cannot be applied (an Update of a missing row, a failed reference),
    or None; and the changes to apply: none if a change that is not independent failed, else all
    but the independent ones that failed."""
    kept: list[Op] | None = None
    problems: list[tuple[str, str]] = []
    for i, o in enumerate(ops):
        problem = _problem(o, current, referenced, entries)
        if problem is None:
            if kept is not None:
                kept.append(o)
            continue
        problems.append(problem)
        if not o.independent:
            return problem, ()
        if kept is None:
            kept = list(ops[:i])
    if not problems:
        return None, ops
    return (problems[0][0], "; ".join(message for _, message in problems)), kept or ()


def _problem(
    o: Op,
    current: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    referenced: Mapping[Target, Mapping[Any, Mapping[str, Any]]],
    entries: Mapping[Target, Mapping[tuple[Any, ...], Entry]],
) -> tuple[str, str] | None:
    target, key, _, _, refs, is_update, _, _ = o
    if is_update and key not in current.get(target, _EMPTY) and key not in entries.get(target, _EMPTY):
        (table, key_cols) = target
        where = ", ".join(f"{c}={v!r}" for c, v in zip(key_cols, key, strict=True))
        return "missing", f"{table} row {where} does not exist, so it cannot be updated"
    for ref in refs:
        problem = _check_ref(ref, current, referenced, entries)
        if problem:
            return "integrity", problem
    return None


def _check_ref(
    ref: RefSpec,
    current: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    referenced: Mapping[Target, Mapping[Any, Mapping[str, Any]]],
    entries: Mapping[Target, Mapping[tuple[Any, ...], Entry]],
) -> str | None:
    target, value, match = ref
    row: Mapping[str, Any] | None = referenced.get(target, _EMPTY).get(value)
    pending_rows = entries.get(target)
    if pending_rows is not None:  # the batch itself writes the referenced table
        pending = pending_rows.get((value,))
        if pending is not None:
            new, defaults = pending
            base = current.get(target, _EMPTY).get((value,)) or row
            row = {**(defaults if base is None else base), target[1][0]: value, **new}
    if row is None:
        return f"{_named(target, value)} does not exist"
    for col, expected in match.items():
        if row.get(col) != expected:
            return f"{_named(target, value)} has {col}={row.get(col)!r}, expected {expected!r}"
    return None


def _named(target: Target, value: Any) -> str:
    """``table.column=value`` for a message about a reference (built only when one fails)."""
    table, (column,) = target
    return f"{table}.{column}={value!r}"


def _diff(
    entries: dict[Target, dict[tuple[Any, ...], Entry]],
    current: Mapping[Target, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    failures: list[ErrorRecord],
    sample_size: int,
    keep_merged: bool,
) -> Plan:
    writes: dict[Target, Writes] = {}
    merged: dict[Target, dict[tuple[Any, ...], dict[str, Any] | None]] = {}
    samples: list[dict[str, Any]] = []
    inserted = updated = unchanged = 0
    for target, rows in entries.items():
        table, key_cols = target
        out = writes[target] = Writes(table, key_cols)
        inserts, updates = out.inserts, out.updates
        final = merged[target] = {}
        existing = current.get(target, _EMPTY)
        (first_key_col, *more_key_cols) = key_cols
        for key, (new, defaults) in rows.items():
            found = existing.get(key)
            if found is None:
                row = {**defaults, **dict(zip(key_cols, key)), **new}  # noqa: B905
                inserts.append(row)
                if keep_merged:
                    final[key] = row
                if len(samples) < sample_size:
                    samples.append({"table": table, "action": "insert", "row": row})
                continue
            if new.items() <= found.items():
                unchanged += 1  # as it is in the database: nothing for an overlay to remember
                continue
            if first_key_col in new or (more_key_cols and any(c in new for c in more_key_cols)):
                new = {c: v for c, v in new.items() if c not in key_cols}
            updates.append((key, new))
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
    return Plan(
        inserted=inserted,
        updated=updated,
        unchanged=unchanged,
        record_errors=len(failures),
        errors=failures,
        writes=writes,
        samples=samples,
        merged=merged,
    )
