"""A shop's backfills, as a third-party plugin for an application that is not test management.

``orders.payload`` is JSON: ``{"country": "NL", "coupon": "SPRING", "items": [{"sku": "A1",
"qty": 2}, ...]}``. ``order_items`` owns each order's item rows, keyed ``(order_id, line_no)``;
``order_details`` fills ``orders.country`` and ``orders.coupon_code`` (a coupon that is not in
``coupons`` is an error of its own and leaves the country written).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import column, func, select, table

from backfill_core import (
    Children,
    Extractor,
    Metric,
    RecordError,
    Ref,
    Row,
    Update,
    Validator,
    hookimpl,
    parse_json,
)

DDL = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, payload TEXT,
                     country TEXT, coupon_code TEXT);
CREATE TABLE coupons (code TEXT PRIMARY KEY);
CREATE TABLE order_items (order_id INTEGER NOT NULL, line_no INTEGER NOT NULL, sku TEXT NOT NULL,
                          qty INTEGER NOT NULL, PRIMARY KEY (order_id, line_no));
"""
"""The shop's tables, for SQLite and PostgreSQL alike."""


def _payload(row: Row) -> dict[str, Any] | None:
    payload = parse_json(row["payload"], "orders.payload")
    if payload is not None and not isinstance(payload, dict):
        raise RecordError(f"orders.payload is {type(payload).__name__}, not an object", kind="invalid-shape")
    return payload


class OrderItems(Extractor):
    """``order_items``: exactly the order's ``items``, one row per item, numbered from 1."""

    name = "order_items"
    description = "order_items rows from orders.payload.items"
    source = "orders"
    columns = ("payload",)
    writes = {"order_items": ("order_id", "line_no", "sku", "qty")}

    def extract(self, row: Row) -> list[Children]:
        payload = _payload(row)
        if payload is None or "items" not in payload:
            return []
        items = payload["items"]
        if not isinstance(items, list):
            raise RecordError("orders.payload.items is not a list", kind="invalid-shape")
        rows = []
        for n, item in enumerate(items, 1):
            if not isinstance(item, dict) or not isinstance(item.get("sku"), str):
                raise RecordError(f"item {n} of orders.payload.items has no sku", kind="invalid-shape")
            qty = item.get("qty", 1)
            if not isinstance(qty, int) or isinstance(qty, bool):
                raise RecordError(f"item {n} has qty {qty!r}, not an integer", kind="invalid-type")
            rows.append({"line_no": n, "sku": item["sku"], "qty": qty})
        return [Children("order_items", parent={"order_id": row["id"]}, key=("line_no",), rows=rows)]


class OrderDetails(Extractor):
    """``orders.country`` and ``orders.coupon_code``; a coupon must be in ``coupons``."""

    name = "order_details"
    description = "orders.country and orders.coupon_code from orders.payload"
    source = "orders"
    columns = ("payload",)
    writes = {"orders": ("id", "country", "coupon_code")}

    def extract(self, row: Row) -> list[Update]:
        payload = _payload(row)
        if payload is None:
            return []
        changes = []
        if isinstance(payload.get("country"), str):
            changes.append(Update("orders", key={"id": row["id"]}, values={"country": payload["country"]}))
        coupon = payload.get("coupon")
        if isinstance(coupon, str):
            changes.append(
                Update(
                    "orders",
                    key={"id": row["id"]},
                    values={"coupon_code": coupon},
                    requires=(Ref("coupons", "code", coupon),),
                    independent=True,
                )
            )
        return changes


orders = table("orders", column("id"), column("country"), column("coupon_code"), column("payload"))
order_items = table("order_items", column("order_id"))


class OrdersCoverage(Validator):
    name = "orders_coverage"
    description = "orders have their country and items"
    covers = ("order_details", "order_items")
    tables = {"orders": ("id", "country", "coupon_code", "payload"), "order_items": ("order_id",)}

    def metrics(self) -> list[Metric]:
        count = select(func.count()).select_from(orders)
        with_payload = count.where(orders.c.payload.is_not(None))
        return [
            Metric(
                "orders_with_country",
                "orders with a payload that have a country",
                with_payload.where(orders.c.country.is_not(None)),
                with_payload,
                0.5,
                "order_details",
            ),
            Metric(
                "orders_with_items",
                "orders with at least one order_items row",
                count.where(orders.c.id.in_(select(order_items.c.order_id))),
                count,
                None,
                "order_items",
            ),
            Metric(
                "orders_with_coupon",
                "orders with a coupon",
                count.where(orders.c.coupon_code.is_not(None)),
                count,
                None,
                "order_details",
            ),
        ]


@hookimpl
def register_extractors(register: Callable[[Extractor], None]) -> None:
    register(OrderItems())
    register(OrderDetails())


@hookimpl
def register_validators(register: Callable[[Validator], None]) -> None:
    register(OrdersCoverage())
