"""A plugin for a shop's database (``orders``, ``order_items``, ``coupons``), which has none of
the built-in plugin's tables: the end-to-end tests install it to show the built-in plugin
stepping aside.

``shop_coupon_codes`` fills ``orders.coupon_code`` with the order's ``coupon`` trimmed and in
upper case; ``shop_coverage`` checks it (``coupons_normalised``, threshold 90%) and reports the
share of orders that used a coupon (``orders_with_coupon``, informational: no threshold).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import column, func, select, table

from backfill_core import Extractor, Metric, RecordError, Row, Update, Validator, hookimpl

ORDERS = table("orders", column("id"), column("coupon"), column("coupon_code"))


class CouponCodes(Extractor):
    name = "shop_coupon_codes"
    description = "orders.coupon_code from orders.coupon, trimmed, in upper case"
    source = "orders"
    columns = ("id", "coupon")
    writes = {"orders": ("id", "coupon_code")}

    def extract(self, row: Row) -> list[Update]:
        coupon = row["coupon"]
        if coupon is None:
            return []
        if not isinstance(coupon, str):
            raise RecordError(f"orders.coupon is {type(coupon).__name__}, not text", kind="invalid-type")
        return [Update("orders", {"id": row["id"]}, {"coupon_code": coupon.strip().upper()})]


class ShopCoverage(Validator):
    name = "shop_coverage"
    description = "orders with a coupon have its code"
    covers = ("shop_coupon_codes",)
    tables = {"orders": ("id", "coupon", "coupon_code")}

    def metrics(self) -> list[Metric]:
        with_coupon = select(func.count()).select_from(ORDERS).where(ORDERS.c.coupon.is_not(None))
        return [
            Metric(
                "coupons_normalised",
                "orders with a coupon that have its code",
                with_coupon.where(ORDERS.c.coupon_code.is_not(None)),
                with_coupon,
                threshold=0.9,
                extractor="shop_coupon_codes",
            ),
            Metric(
                "orders_with_coupon",
                "orders that used a coupon",
                with_coupon,
                select(func.count()).select_from(ORDERS),
                threshold=None,
            ),
        ]


@hookimpl
def register_extractors(register: Callable[[Extractor], None]) -> None:
    register(CouponCodes())


@hookimpl
def register_validators(register: Callable[[Validator], None]) -> None:
    register(ShopCoverage())
