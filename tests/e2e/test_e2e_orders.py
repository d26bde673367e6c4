"""A second application, end to end: a shop's database, with the shop's plugin really installed
(tests/plugins/backfill-orders-plugin) next to the built-in test-management plugin, on SQLite and on
PostgreSQL.

The shop's database has none of the test-management tables, so the built-ins must step aside
when not named; ``order_items`` owns each order's items (``Children``), so a list that shrinks,
loses a middle item or grows leaves ``order_items`` exactly as the JSON says.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.backends import KINDS, Backend, PostgresBackend, SqliteBackend
from support.cli import RunCli, parse_json_output, plugin_env, stats_by_name
from support.plugins import install_plugins
from support.postgres import empty_database, execute

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "backfill-orders-plugin"


def _ddl() -> str:
    """The shop's DDL, read from the plugin's source (the test process does not install it)."""
    source = PLUGIN / "backfill_orders_plugin" / "__init__.py"
    spec = importlib.util.spec_from_file_location("orders_plugin_source", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.DDL)


def payload(country: str | None = None, coupon: str | None = None, items: list[Any] | None = None) -> str:
    data: dict[str, Any] = {}
    if country is not None:
        data["country"] = country
    if coupon is not None:
        data["coupon"] = coupon
    if items is not None:
        data["items"] = items
    return json.dumps(data)


def items(*skus: str) -> list[dict[str, Any]]:
    return [{"sku": s, "qty": len(s)} for s in skus]


ORDERS: dict[int, str | None] = {
    1: payload("NL", "SPRING", items("a", "bb", "ccc")),
    2: payload("DE", None, items("d", "ee", "fff")),
    3: payload("FR", "NOPE", items("g")),  # an unknown coupon: the country is still written
    4: payload(None, None, items("h", "ii")),
    5: payload("BE"),  # no items key: its order_items rows are left alone
    6: None,
    7: "{not json",
    8: payload("IT", None, []),
    **{n: payload("NL", "SPRING" if n % 3 == 0 else None, items(*["x"] * (n % 4 + 1))) for n in range(9, 41)},
}
COUPONS = ("SPRING",)
LEFT_ALONE = (5, 1, "kept", 1)
"""A row of an order whose payload has no items: no Children change names it."""


def expected_items(orders: dict[int, str | None]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = [LEFT_ALONE]
    for order_id, text in orders.items():
        try:
            data = json.loads(text) if text is not None else None
        except json.JSONDecodeError:
            continue
        if data is None or "items" not in data:
            continue
        rows += [(order_id, n, i["sku"], i["qty"]) for n, i in enumerate(data["items"], 1)]
    return sorted(rows)


def expected_orders(orders: dict[int, str | None]) -> list[tuple[Any, ...]]:
    out = []
    for order_id, text in sorted(orders.items()):
        try:
            data = json.loads(text) if text is not None else {}
        except json.JSONDecodeError:
            data = {}
        coupon = data.get("coupon")
        out.append((order_id, data.get("country"), coupon if coupon in COUPONS else None))
    return out


class Shop:
    def __init__(self, db: Backend) -> None:
        self.db = db
        self.orders = dict(ORDERS)
        for code in COUPONS:
            db.execute(f"INSERT INTO coupons (code) VALUES ('{code}')")
        for order_id, text in self.orders.items():
            self._insert(order_id, text)
        db.execute(f"INSERT INTO order_items VALUES {LEFT_ALONE}")

    def _insert(self, order_id: int, text: str | None) -> None:
        value = "NULL" if text is None else "'" + text.replace("'", "''") + "'"
        self.db.execute(f"INSERT INTO orders (id, customer_id, payload) VALUES ({order_id}, 1, {value})")

    def set_payloads(self, changed: dict[int, str | None]) -> None:
        for order_id, text in changed.items():
            value = "NULL" if text is None else "'" + text.replace("'", "''") + "'"
            self.db.execute(f"UPDATE orders SET payload = {value} WHERE id = {order_id}")
            self.orders[order_id] = text

    def order_items(self) -> list[tuple[Any, ...]]:
        return self.db.rows("SELECT order_id, line_no, sku, qty FROM order_items ORDER BY order_id, line_no")

    def order_columns(self) -> list[tuple[Any, ...]]:
        return self.db.rows("SELECT id, country, coupon_code FROM orders ORDER BY id")


@pytest.fixture(params=KINDS)
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shop]:
    ddl = _ddl()
    if request.param == "sqlite":
        path = tmp_path / "shop.db"
        conn = sqlite3.connect(path)
        conn.executescript(ddl)
        conn.close()
        yield Shop(SqliteBackend(path))
        return
    with empty_database() as url:
        asyncio.run(execute(url, ddl))
        yield Shop(PostgresBackend("postgresql", url))


@pytest.fixture(scope="session")
def orders_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugins(tmp_path_factory, ("backfill-orders-plugin",))


def test_a_shop_from_its_plugin_alone(cli: RunCli, shop: Shop, orders_site: Path) -> None:
    env = plugin_env(orders_site)
    db = ["-d", shop.db.url]

    listed = cli(["list-plugins"], env)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("orders "))
    assert "ok" in line and "order_items" in line and "order_details" in line and "orders_coverage" in line

    # Before any run: the shop's validator fails (no country yet); the built-in one steps aside.
    validate = cli(["validate", *db], env)
    assert validate.returncode == 1, validate.stderr
    assert "skipped validator 'coverage' (plugin testmanagement)" in validate.stderr
    assert "FAIL  orders_coverage.orders_with_country" in validate.stdout

    before = (shop.order_items(), shop.order_columns())
    dry = cli(["run", "--all", "--dry-run", "--json", *db], env)
    assert dry.returncode == 0, dry.stderr
    assert (shop.order_items(), shop.order_columns()) == before

    real = cli(["run", "--all", "--json", *db], env)
    assert real.returncode == 0, real.stderr
    for name in ("test_features", "bug_attribution"):
        assert f"skipped extractor '{name}' (plugin testmanagement)" in real.stderr
    dry_stats, real_stats = stats_by_name(parse_json_output(dry)), stats_by_name(parse_json_output(real))
    assert set(real_stats) == {"order_items", "order_details"}
    for name in real_stats:
        counts = ("inserted", "updated", "deleted", "unchanged", "errors")
        assert {k: dry_stats[name][k] for k in counts} == {k: real_stats[name][k] for k in counts}, name
    assert shop.order_items() == expected_items(shop.orders)
    assert shop.order_columns() == expected_orders(shop.orders)
    items_stats = real_stats["order_items"]
    assert (items_stats["inserted"], items_stats["deleted"]) == (len(expected_items(shop.orders)) - 1, 0)
    assert items_stats["errors_by_tier"] == {"record": {"invalid-json": 1}}
    assert real_stats["order_details"]["errors_by_tier"] == {"record": {"integrity": 1, "invalid-json": 1}}
    validation = {m["metric"]: m for m in parse_json_output(real)["validation"]}
    assert set(validation) == {"orders_with_country", "orders_with_items", "orders_with_coupon"}

    assert cli(["validate", *db], env).returncode == 0

    again = cli(["run", "--all", "--json", *db], env)
    assert again.returncode == 0, again.stderr
    for stats in stats_by_name(parse_json_output(again)).values():
        assert (stats["inserted"], stats["updated"], stats["deleted"]) == (0, 0, 0), stats

    # The orders' item lists change: a list shrinks, a middle item goes, a list grows, one empties.
    shop.set_payloads(
        {
            1: payload("NL", "SPRING", items("a")),
            2: payload("DE", None, items("d", "fff")),
            4: payload(None, None, items("h", "ii", "jjj", "kkkk")),
            9: payload("NL", None, []),
        }
    )
    changed = cli(["run", "order_items", "--json", *db], env)
    assert changed.returncode == 0, changed.stderr
    stats = stats_by_name(parse_json_output(changed))["order_items"]
    # order 1 loses lines 2-3, order 2 line 3 (its line 2 shifts), order 9 its two lines
    assert (stats["inserted"], stats["updated"], stats["deleted"]) == (2, 1, 5)
    assert shop.order_items() == expected_items(shop.orders)
    text = cli(["run", "order_items", *db], env)
    assert text.returncode == 0, text.stderr
    assert "deleted" not in text.stdout  # nothing deleted this time: no such column
    status = cli(["status", *db], env)
    assert "deleted" in status.stdout.splitlines()[0]
