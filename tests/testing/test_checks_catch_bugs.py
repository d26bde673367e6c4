"""Each property check fails on an extractor broken in the way it exists to catch, with a
message naming the extractor and the row; and passes on a correct one.

SQLite only: the kit builds and checks its own SQLite files.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backfill_core import Extractor, RecordError, Row, Update, Upsert, parse_json
from backfill_core.testing import (
    check_declared,
    check_deterministic,
    check_dry_run_agrees,
    check_extractor,
    check_idempotent,
    check_total,
    extractor_properties,
    payloads_like,
    rows,
    well_formed_rows,
)

SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY, payload TEXT);
CREATE TABLE labels (item_id INTEGER PRIMARY KEY, label TEXT NOT NULL);
"""
ROW = {"id": 3, "payload": '{"label": "red"}'}


class Labels(Extractor):
    """Correct: labels.label from items.payload.label."""

    name = "labels"
    source = "items"
    columns = ("id", "payload")
    writes = {"labels": ("item_id", "label")}

    def label(self, row: Row) -> Any:
        doc = parse_json(row["payload"], "items.payload")
        if not isinstance(doc, dict):
            raise RecordError("items.payload is not an object", kind="invalid-shape")
        return doc.get("label")

    def extract(self, row: Row) -> list[Upsert]:
        label = self.label(row)
        if label is None:
            return []
        if not isinstance(label, str):
            raise RecordError("payload.label is not text", kind="invalid-type")
        return [Upsert("labels", key={"item_id": row["id"]}, values={"label": label})]


class KeyErrorOnMissingLabel(Labels):
    name = "key_error"

    def label(self, row: Row) -> Any:
        doc = parse_json(row["payload"], "items.payload")
        return doc["label"]  # KeyError, TypeError on anything but an object with a label


class Counter(Labels):
    name = "counter"
    calls = itertools.count()

    def extract(self, row: Row) -> list[Upsert]:
        return [Upsert("labels", key={"item_id": row["id"]}, values={"label": str(next(self.calls))})]


class UndeclaredColumn(Labels):
    name = "undeclared_column"

    def extract(self, row: Row) -> list[Upsert]:
        return [Upsert("labels", key={"item_id": row["id"]}, values={"label": "x", "colour": "red"})]


class UndeclaredTable(Labels):
    name = "undeclared_table"

    def extract(self, row: Row) -> list[Upsert]:
        return [Upsert("tags", key={"item_id": row["id"]}, values={"tag": "x"})]


class NotAChange(Labels):
    name = "not_a_change"

    def extract(self, row: Row) -> list[Any]:
        return [{"table": "labels", "item_id": row["id"]}]


class Unpicklable(Labels):
    name = "unpicklable"

    def extract(self, row: Row) -> list[Upsert]:
        return [Upsert("labels", key={"item_id": row["id"]}, values={"label": lambda: "red"})]


class ReturnsNone(Labels):
    name = "returns_none"

    def extract(self, row: Row) -> Any:
        return None


class EmptyKind(Labels):
    name = "empty_kind"

    def extract(self, row: Row) -> list[Upsert]:
        raise RecordError("bad row", kind="")


class MutatesRow(Labels):
    name = "mutates_row"

    def extract(self, row: Row) -> list[Upsert]:
        row["payload"] = None  # type: ignore[index]
        return []


class AppendsToSource(Extractor):
    """Deterministic but not idempotent: rewrites its own source column, growing it each run."""

    name = "appends"
    source = "items"
    columns = ("id", "payload")
    writes = {"items": ("id", "payload")}

    def extract(self, row: Row) -> list[Update]:
        if not isinstance(row["payload"], str):
            return []
        return [Update("items", key={"id": row["id"]}, values={"payload": row["payload"] + "!"})]


class EveryOtherCall(Labels):
    """Writes on every other call only: a dry run and the real run after it disagree."""

    name = "every_other_call"

    def __init__(self) -> None:
        self.calls = itertools.count()

    def extract(self, row: Row) -> list[Upsert]:
        if next(self.calls) % 2:
            return []
        return [Upsert("labels", key={"item_id": row["id"]}, values={"label": "x"})]


class WritesTheFile(Labels):
    """Does I/O in extract: writes to the database file, even in a dry run."""

    name = "writes_the_file"
    path: Path

    def extract(self, row: Row) -> list[Upsert]:
        with sqlite3.connect(self.path) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS side_effect (x)")
        return []


# -- each check catches its bug -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extractor", "check", "message"),
    [
        (KeyErrorOnMissingLabel(), check_total, "raised KeyError"),
        (ReturnsNone(), check_total, "not a list of changes"),
        (EmptyKind(), check_total, "kind ''"),
        (Counter(), check_deterministic, "not deterministic"),
        (MutatesRow(), check_deterministic, "changed the row"),
        (UndeclaredColumn(), check_declared, r"undeclared columns \['colour'\]"),
        (UndeclaredTable(), check_declared, "wrote table 'tags'"),
        (NotAChange(), check_declared, "returned dict, not Upsert, Update, Children or Skip"),
        (Unpicklable(), check_declared, "cannot be pickled"),
    ],
    ids=lambda v: getattr(v, "name", None) or getattr(v, "__name__", ""),
)
def test_row_check_fails_on_its_bug(extractor: Extractor, check: Callable[..., Any], message: str) -> None:
    row = {"id": 3, "payload": '{"colour": "red"}'}
    with pytest.raises(AssertionError, match=message) as e:
        check(extractor, row)
    assert extractor.name in str(e.value)
    assert "colour" in str(e.value)  # the row is shown


def test_row_checks_pass_on_a_correct_extractor() -> None:
    for row in (ROW, {"id": 4, "payload": "{"}, {"id": 5, "payload": None}, {"id": 6, "payload": "[1]"}):
        check_total(Labels(), row)
        check_deterministic(Labels(), row)
        check_declared(Labels(), row)
    assert check_total(Labels(), ROW) == [Upsert("labels", key={"item_id": 3}, values={"label": "red"})]
    assert check_total(Labels(), {"id": 4, "payload": "{"}) is None  # a RecordError


def test_idempotent_fails_when_a_second_run_changes_rows(tmp_path: Path) -> None:
    expected = r"'appends'.*not idempotent.*inserted 0 and updated 1 rows"
    with pytest.raises(AssertionError, match=expected) as e:
        check_idempotent(AppendsToSource(), [ROW], tmp_path / "a.db", schema=SCHEMA)
    assert "red" in str(e.value)
    check_idempotent(Labels(), [ROW, {"id": 4, "payload": "{"}], tmp_path / "b.db", schema=SCHEMA)


def test_dry_run_check_fails_when_the_counts_disagree(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"dry run of extractor 'every_other_call'.* disagrees") as e:
        check_dry_run_agrees(EveryOtherCall(), [ROW], tmp_path / "a.db", schema=SCHEMA)
    assert "1 inserted" in str(e.value) and "0 inserted" in str(e.value)
    check_dry_run_agrees(Labels(), [ROW], tmp_path / "b.db", schema=SCHEMA)


def test_dry_run_check_fails_when_the_file_changes(tmp_path: Path) -> None:
    extractor = WritesTheFile()
    extractor.path = tmp_path / "a.db"
    with pytest.raises(
        AssertionError, match=r"dry run of extractor 'writes_the_file'.* changed the database file"
    ):
        check_dry_run_agrees(extractor, [ROW], extractor.path, schema=SCHEMA)


def test_database_checks_need_a_schema_for_tables_given_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"without a model class.*schema="):
        check_idempotent(Labels(), [ROW], tmp_path / "a.db")


# -- check_extractor finds the bugs by itself -----------------------------------------------------

PAYLOADS = payloads_like({"label": "red", "size": 3})


@pytest.mark.parametrize(
    ("extractor", "message"),
    [
        (KeyErrorOnMissingLabel(), "raised (KeyError|TypeError)"),
        (Counter(), "not deterministic"),
        (UndeclaredColumn(), "undeclared columns"),
        (AppendsToSource(), "not idempotent"),
        (EveryOtherCall(), "not deterministic"),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
def test_check_extractor_finds_the_bug(extractor: Extractor, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_extractor(extractor, schema=SCHEMA, max_examples=50, database_examples=5)


def test_check_extractor_finds_a_non_idempotent_extractor_from_the_database_checks() -> None:
    """AppendsToSource passes every row check: only a real database shows the bug."""
    check_extractor(AppendsToSource(), schema=SCHEMA, max_examples=50, database_examples=0)
    with pytest.raises(AssertionError, match="not idempotent"):
        check_extractor(AppendsToSource(), schema=SCHEMA, max_examples=10, database_examples=10)


def test_check_extractor_passes_a_correct_extractor() -> None:
    check_extractor(
        Labels(),
        schema=SCHEMA,
        rows=well_formed_rows(Labels(), {"payload": PAYLOADS}) | rows(Labels()),
        max_examples=100,
        database_examples=15,
    )


def test_check_extractor_rejects_invalid_declarations() -> None:
    class NoWrites(Labels):
        name = "no_writes"
        writes = {}

    with pytest.raises(AssertionError, match=r"'no_writes'.*writes declares no table"):
        check_extractor(NoWrites(), schema=SCHEMA)


# -- the ready-made test -----------------------------------------------------------------------------

test_labels_properties = extractor_properties(Labels(), schema=SCHEMA, max_examples=30, database_examples=5)
test_several_properties = extractor_properties(
    Labels(), AppendsToSource(), schema=SCHEMA, max_examples=20, database_examples=0
)


def test_ready_made_test_fails_on_a_broken_extractor() -> None:
    broken = extractor_properties(UndeclaredColumn(), schema=SCHEMA, max_examples=20, database_examples=0)
    assert broken.__name__.startswith("test")
    with pytest.raises(AssertionError, match="undeclared_column"):
        broken()


def test_ready_made_test_is_parametrised_by_extractor_name() -> None:
    marks = test_several_properties.pytestmark  # type: ignore[attr-defined]
    [mark] = [m for m in marks if m.name == "parametrize"]
    assert mark.kwargs["ids"] == ["labels", "appends"]


def test_rows_the_source_table_refuses_are_left_out(tmp_path: Path) -> None:
    schema = SCHEMA.replace("payload TEXT", "payload TEXT NOT NULL")
    check_idempotent(Labels(), [ROW, {"id": 4, "payload": None}], tmp_path / "a.db", schema=schema)
    with sqlite3.connect(tmp_path / "a.db") as conn:
        assert conn.execute("SELECT id FROM items").fetchall() == [(3,)]
        assert conn.execute("SELECT * FROM labels").fetchall() == [(3, "red")]
