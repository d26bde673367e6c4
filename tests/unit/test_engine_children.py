"""A Children change owns the rows under its parent key: the engine inserts, updates and deletes
the difference, counts it (summary, ledger, dry run) and never deletes anywhere else.

The real engine on a real SQLite file and on a scratch PostgreSQL database: an ``orders`` table
whose ``payload`` lists items, and ``order_items`` keyed ``(order_id, line_no)``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from backfill_core import (
    Children,
    Extractor,
    RecordError,
    Ref,
    Row,
    RunOptions,
    RunReport,
    Update,
    hookimpl,
    make_registry,
    parse_json,
    resolve_url,
    run_backfill,
)
from backfill_core.engine.stats import ErrorLog, ExtractorStats
from support.backends import KINDS, Backend, PostgresBackend, SqliteBackend
from support.postgres import empty_database, execute

SCHEMA = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, payload TEXT, country TEXT);
CREATE TABLE order_items (
    order_id INTEGER NOT NULL, line_no INTEGER NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL,
    PRIMARY KEY (order_id, line_no));
CREATE TABLE skus (sku TEXT PRIMARY KEY);
"""


class OrderItems(Extractor):
    """One order_items row per item of ``payload.items``; ``payload.country`` into orders."""

    name = "order_items"
    source = "orders"
    columns = ("payload",)
    writes = {"order_items": ("order_id", "line_no", "sku", "qty"), "orders": ("id", "country")}

    def extract(self, row: Row) -> list[Any]:
        payload = parse_json(row["payload"], "orders.payload")
        if payload is None:
            return []
        if not isinstance(payload, dict):
            raise RecordError("orders.payload is not an object", kind="invalid-shape")
        changes: list[Any] = []
        if "items" in payload:
            items = [
                {"line_no": n, "sku": item["sku"], "qty": item.get("qty", 1)}
                for n, item in enumerate(payload["items"], 1)
            ]
            refs = tuple(Ref("skus", "sku", i["sku"]) for i in items if payload.get("check_skus"))
            changes.append(
                Children(
                    "order_items",
                    parent={"order_id": row["id"]},
                    key=("line_no",),
                    rows=items,
                    requires=refs,
                    independent=bool(payload.get("independent")),
                )
            )
        if "country" in payload:
            changes.append(Update("orders", key={"id": row["id"]}, values={"country": payload["country"]}))
        return changes


class ExtraLines(Extractor):
    """Depends on order_items and names the same parents' items again, with one more line: in a
    dry run it must see what order_items would have left."""

    name = "extra_lines"
    source = "orders"
    columns = ("payload",)
    writes = {"order_items": ("order_id", "line_no", "sku", "qty")}
    depends_on = ("order_items",)

    def extract(self, row: Row) -> list[Any]:
        payload = parse_json(row["payload"], "orders.payload")
        if not isinstance(payload, dict) or "extra" not in payload:
            return []
        rows = [{"line_no": n, "sku": sku, "qty": 1} for n, sku in enumerate(payload["extra"], 1)]
        return [Children("order_items", parent={"order_id": row["id"]}, key=("line_no",), rows=rows)]


@hookimpl
def register_extractors(register: Callable[[Extractor], None]) -> None:
    register(OrderItems())
    register(ExtraLines())


def items(*skus: str) -> dict[str, Any]:
    return {"items": [{"sku": s, "qty": len(s)} for s in skus]}


class Shop:
    """A shop database on one backend: orders with JSON payloads, and their order_items."""

    def __init__(self, db: Backend) -> None:
        self.db = db
        self.url = db.url

    def set_orders(self, payloads: dict[int, Any]) -> None:
        for order_id, payload in payloads.items():
            text = "NULL" if payload is None else "'" + json.dumps(payload).replace("'", "''") + "'"
            self.db.execute(f"DELETE FROM orders WHERE id = {order_id}")
            self.db.execute(f"INSERT INTO orders (id, payload) VALUES ({order_id}, {text})")

    def add_items(self, rows: Iterable[tuple[int, int, str, int]]) -> None:
        for row in rows:
            self.db.execute(f"INSERT INTO order_items VALUES ({row[0]}, {row[1]}, '{row[2]}', {row[3]})")

    def items(self) -> list[tuple[Any, ...]]:
        return self.db.rows("SELECT order_id, line_no, sku, qty FROM order_items ORDER BY order_id, line_no")

    def run(
        self, names: Sequence[str] = ("order_items",), *, dry_run: bool = False, batch_size: int = 500
    ) -> RunReport:
        options = RunOptions(batch_size=batch_size, dry_run=dry_run, sample_size=50)
        report = RunReport(database=self.url, errors=ErrorLog(keep=1000))
        url = resolve_url(self.url)
        registry = make_registry(__import__(__name__, fromlist=["register_extractors"]))
        asyncio.run(run_backfill(registry, names, url, options, report, validate=False))
        return report


def stats(report: RunReport, name: str = "order_items") -> ExtractorStats:
    return next(s for s in report.extractors if s.name == name)


def counts(report: RunReport, name: str = "order_items") -> tuple[int, int, int, int]:
    s = stats(report, name)
    return s.inserted, s.updated, s.deleted, s.unchanged


@pytest.fixture(params=KINDS)
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shop]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            path = tmp_path / "shop.db"
            conn = sqlite3.connect(path)
            conn.executescript(SCHEMA)
            conn.close()
            db: Backend = SqliteBackend(path)
        else:
            url = stack.enter_context(empty_database())
            asyncio.run(execute(url, SCHEMA))
            db = PostgresBackend("postgresql", url)
        yield Shop(db)


def test_first_run_inserts_every_child(shop: Shop) -> None:
    shop.set_orders({1: items("a", "b", "c"), 2: items("d"), 3: None, 4: {"items": []}})
    report = shop.run()
    assert counts(report) == (4, 0, 0, 0)
    assert shop.items() == [(1, 1, "a", 1), (1, 2, "b", 1), (1, 3, "c", 1), (2, 1, "d", 1)]


def test_a_second_run_changes_nothing(shop: Shop) -> None:
    shop.set_orders({1: items("a", "bb", "c"), 2: items("d")})
    shop.run()
    before = shop.items()
    assert counts(shop.run()) == (0, 0, 0, 4)
    assert shop.items() == before


def test_a_shrunk_list_deletes_the_rows_it_left_out(shop: Shop) -> None:
    shop.set_orders({1: items("a", "bb", "ccc"), 2: items("d", "e")})
    shop.run()
    shop.set_orders({1: items("a")})
    report = shop.run()
    assert counts(report) == (0, 0, 2, 3)
    assert shop.items() == [(1, 1, "a", 1), (2, 1, "d", 1), (2, 2, "e", 1)]
    assert shop.db.rows("SELECT deleted FROM backfill_runs ORDER BY id") == [(0,), (2,)]


def test_a_removed_middle_item_shifts_the_lines_after_it(shop: Shop) -> None:
    shop.set_orders({1: items("a", "bb", "ccc")})
    shop.run()
    shop.set_orders({1: items("a", "ccc")})
    report = shop.run()
    assert counts(report) == (0, 1, 1, 1)
    assert shop.items() == [(1, 1, "a", 1), (1, 2, "ccc", 3)]


def test_a_grown_list_inserts_and_an_empty_one_deletes_all(shop: Shop) -> None:
    shop.set_orders({1: items("a"), 2: items("d", "e")})
    shop.run()
    shop.set_orders({1: items("a", "bb", "ccc"), 2: {"items": []}})
    report = shop.run()
    assert counts(report) == (2, 0, 2, 1)
    assert shop.items() == [(1, 1, "a", 1), (1, 2, "bb", 2), (1, 3, "ccc", 3)]


def test_rows_under_other_parents_are_never_deleted(shop: Shop) -> None:
    """Only a parent that a Children change names loses rows: an order without ``items``, an order
    whose payload is NULL, and items of an order that does not exist are left alone."""
    shop.add_items([(2, 1, "x", 1), (3, 1, "y", 1), (99, 1, "z", 1)])
    shop.set_orders({1: items("a"), 2: {"country": "NL"}, 3: None})
    report = shop.run()
    assert counts(report) == (1, 1, 0, 0)
    assert shop.items() == [(1, 1, "a", 1), (2, 1, "x", 1), (3, 1, "y", 1), (99, 1, "z", 1)]


def test_a_failed_reference_leaves_the_parents_rows_and_an_independent_one_only_them(shop: Shop) -> None:
    shop.db.execute("INSERT INTO skus (sku) VALUES ('a')")
    shop.add_items([(1, 1, "old", 1), (1, 2, "old", 1), (2, 1, "old", 1), (2, 2, "old", 1)])
    shop.set_orders(
        {
            1: {**items("a", "nope"), "check_skus": True, "country": "NL"},
            2: {**items("a", "nope"), "check_skus": True, "country": "DE", "independent": True},
        }
    )
    report = shop.run()
    s = stats(report)
    assert s.errors == {("record", "integrity"): 2}
    # Order 1: nothing of the row is written; order 2: its country is, its items are not.
    assert shop.db.rows("SELECT id, country FROM orders ORDER BY id") == [(1, None), (2, "DE")]
    assert shop.items() == [(1, 1, "old", 1), (1, 2, "old", 1), (2, 1, "old", 1), (2, 2, "old", 1)]
    assert counts(report) == (0, 1, 0, 0)


@pytest.mark.parametrize("batch_size", [1, 500])
def test_a_dry_run_counts_what_the_run_then_does(shop: Shop, batch_size: int) -> None:
    """Both extractors name the same parents, so the second one's dry run must see the first one's
    would-be inserts and deletes (the overlay), batch by batch."""
    shop.add_items([(1, 1, "old", 1), (1, 2, "old", 1), (1, 3, "old", 1), (2, 5, "old", 1)])
    shop.set_orders(
        {
            1: {**items("a", "bb"), "extra": ["a", "x", "y", "z"]},
            2: {**items("d"), "extra": []},
            3: {**items("e", "f"), "extra": ["e"]},
        }
    )
    before = shop.items()
    names = ("order_items", "extra_lines")
    dry = shop.run(names, dry_run=True, batch_size=batch_size)
    assert shop.items() == before
    real = shop.run(names, batch_size=batch_size)
    for name in names:
        assert counts(dry, name) == counts(real, name), name
    assert counts(real, "order_items") == (3, 2, 2, 0)
    assert counts(real, "extra_lines") == (2, 1, 2, 2)
    assert shop.items() == [(1, 1, "a", 1), (1, 2, "x", 1), (1, 3, "y", 1), (1, 4, "z", 1), (3, 1, "e", 1)]
    deletes = [s for s in stats(dry).samples if s["action"] == "delete"]
    assert {json.dumps(s, sort_keys=True) for s in deletes} == {
        json.dumps({"action": "delete", "key": {"line_no": n, "order_id": o}, "table": "order_items"})
        for o, n in [(1, 3), (2, 5)]
    }


def test_a_plugin_bug_in_a_children_change_is_a_record_error(shop: Shop) -> None:
    """A Children change that writes an undeclared column, lists a row twice, omits a row's key or
    contradicts its parent is refused for that row alone, naming the problem."""

    class Buggy(Extractor):
        name = "buggy"
        source = "orders"
        columns = ("payload",)
        writes = {"order_items": ("order_id", "line_no", "sku", "qty")}

        def extract(self, row: Row) -> list[Any]:
            good = {"line_no": 1, "sku": "a", "qty": 1}
            rows = {
                1: [good],
                2: [{**good, "price": 3}],
                3: [good, good],
                4: [{"sku": "a", "qty": 1}],
                5: [{**good, "order_id": 99}],
            }[row["id"]]
            return [Children("order_items", parent={"order_id": row["id"]}, key=("line_no",), rows=rows)]

    class Plugin:
        @hookimpl
        def register_extractors(self, register: Callable[[Extractor], None]) -> None:
            register(Buggy())

    shop.set_orders({i: {} for i in range(1, 6)})
    report = RunReport(database=shop.url, errors=ErrorLog(keep=100))
    asyncio.run(
        run_backfill(
            make_registry(Plugin()), ["buggy"], resolve_url(shop.url), RunOptions(), report, validate=False
        )
    )
    messages = {e.key: e.message for e in report.errors.first}
    assert set(messages) == {2, 3, 4, 5}
    assert "undeclared columns ['price']" in messages[2]
    assert "twice" in messages[3]
    assert "without its key column(s) ['line_no']" in messages[4]
    assert "order_id=99 is not its parent's 1" not in messages[5] and "order_id=99" in messages[5]
    assert shop.items() == [(1, 1, "a", 1)]


def test_a_ledger_without_the_deleted_count_is_read_as_zero_and_then_gets_it(shop: Shop) -> None:
    """A ledger made before runs counted deletes: ``status`` reads it, the next run adds the column."""
    from backfill_core import Database
    from backfill_core.store.ledger import Ledger, run_summary

    shop.set_orders({1: items("a", "b")})
    shop.run()
    shop.db.execute("ALTER TABLE backfill_runs DROP COLUMN deleted")

    async def recent() -> list[Any]:
        async with Database(resolve_url(shop.url)) as db:
            return await Ledger(db).recent()

    assert [run_summary(r)["deleted"] for r in asyncio.run(recent())] == [0]
    shop.set_orders({1: items("a")})
    assert counts(shop.run()) == (0, 0, 1, 1)
    summaries = [run_summary(r) for r in asyncio.run(recent())]
    assert [(r["deleted"], r["inserted"]) for r in summaries] == [(1, 0), (0, 2)]
