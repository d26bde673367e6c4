"""Extractors and schemas the testing kit's regression tests share (tests/testing/test_kit_*.py)."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import strategies as st

from backfill_core import Extractor, RecordError, Row, Update, Upsert, parse_json
from backfill_core.testing import payloads_like

ITEMS = """
CREATE TABLE items (id INTEGER PRIMARY KEY, payload TEXT);
CREATE TABLE labels (item_id INTEGER PRIMARY KEY, label TEXT NOT NULL);
"""
ROW = {"id": 3, "payload": '{"label": "red"}'}
LABELS = payloads_like({"label": "red"}, overrides={"label": st.sampled_from(["red", "blue"])})


class Labels(Extractor):
    """Correct: labels.label from items.payload.label."""

    name = "labels"
    source = "items"
    columns = ("id", "payload")
    writes = {"labels": ("item_id", "label")}

    def extract(self, row: Row) -> list[Upsert]:
        doc = parse_json(row["payload"], "items.payload")
        if not isinstance(doc, dict):
            raise RecordError("items.payload is not an object", kind="invalid-shape")
        label = doc.get("label")
        if not isinstance(label, str):
            return []
        return [Upsert("labels", key={"item_id": row["id"]}, values={"label": label})]


class ResetsPayload(Labels):
    """Sets the payload it was given to '{}': a second call on the same dict gives the same
    (empty) result, so comparing two calls on one row object cannot see it."""

    name = "resets_payload"

    def extract(self, row: Row) -> list[Upsert]:
        try:
            return super().extract(row)
        finally:  # on every row, also one whose payload is a record error
            row["payload"] = "{}"  # type: ignore[index]


class ResetsWhileIterated(Labels):
    """The same mutation, made while the caller iterates the changes."""

    name = "resets_while_iterated"

    def extract(self, row: Row) -> Iterator[Upsert]:  # type: ignore[override]
        try:
            yield from super().extract(row)
        finally:
            row["payload"] = "{}"  # type: ignore[index]


class Appends(Extractor):
    """Deterministic but not idempotent: appends to its own source column on every run."""

    name = "appends"
    source = "orders"
    columns = ("id", "payload")
    writes = {"orders": ("id", "payload")}

    def extract(self, row: Row) -> list[Update]:
        if not isinstance(row["payload"], str):
            return []
        return [Update("orders", key={"id": row["id"]}, values={"payload": row["payload"] + "!"})]


class Totals(Extractor):
    """Correct: order_totals.total from orders.payload.total."""

    name = "totals"
    source = "orders"
    columns = ("id", "payload")
    writes = {"order_totals": ("order_id", "total")}

    def extract(self, row: Row) -> list[Upsert]:
        doc = parse_json(row["payload"], "orders.payload")
        if not isinstance(doc, dict) or not isinstance(doc.get("total"), int):
            return []
        return [Upsert("order_totals", key={"order_id": row["id"]}, values={"total": doc["total"]})]


TOTALS = "CREATE TABLE order_totals (order_id INTEGER PRIMARY KEY, total INTEGER NOT NULL);"


def orders(required: str) -> str:
    """An orders table with one more required column, which no extractor here reads."""
    return f"CREATE TABLE orders (id INTEGER PRIMARY KEY, {required}, payload TEXT);\n{TOTALS}"


# A required column whose every value the kit could make up is refused: no row gets in.
STATUS = orders("status TEXT NOT NULL CHECK (status IN ('open', 'closed'))")
# Required columns the kit fills, with values distinct per row (the old '' and 0 were refused).
FILLABLE = {
    "positive": orders("customer_id INTEGER NOT NULL CHECK (customer_id > 0)"),
    "unique": orders("code TEXT NOT NULL UNIQUE"),
    "text primary key": (
        "CREATE TABLE orders (id INTEGER NOT NULL UNIQUE, code TEXT NOT NULL PRIMARY KEY, payload TEXT);\n"
        + TOTALS
    ),
    "default null": orders("customer_id INTEGER NOT NULL DEFAULT NULL"),
}
