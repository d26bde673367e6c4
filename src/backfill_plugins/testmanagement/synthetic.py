"""A realistic synthetic test-management database, for the demo, the tests and the benchmarks.

The tables are the application's real ones (testio-mcp 0.4.0), created from the plugin's models
(see ``models.py``), and filled the way the application fills them: ``products`` and each
product's ``features``; ``tests`` whose ``data`` is the platform's test JSON as the application
stores it (``json.dumps``: ASCII-escaped, ``", "`` between items) with its denormalized columns;
``bugs`` whose ``raw_data`` is the platform's bug JSON, likewise. ``test_features`` is empty and
``bugs.test_feature_id`` NULL: that is what backfill fills.

The data holds what the application meets (a share ``odd`` of the listed features): a listed
feature without ``id`` (missing or null), one without ``feature_id`` (missing, null or 0), and
one whose ``feature_id`` names a product's feature the cache lacks (not in ``features``). Besides,
any feature may have ``enable_*`` null or missing, ``user_stories`` null or missing, non-ASCII
user stories (``„Warenkorb“``) or no title. A share ``messy`` of the tests and bugs is
deliberately broken (truncated JSON, ``features`` not a list, an id that is not an integer, the
JSON ``null``; bugs naming a test feature that does not exist or is another customer's). Odd
features and messy rows are spread evenly and their kinds taken in turn, so that even a small
database has its share, and a few of them show every kind.

The application opens its cache in WAL mode with foreign keys off. The file built here has
foreign keys off too, but stays in rollback-journal (DELETE) mode unless ``wal=True``: the crash
tests look for the hot ``-journal`` a killed run leaves, read-only copies of a template must be
readable, and ``backfill demo`` rebuilds its file by deleting it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Table, create_engine
from sqlalchemy.schema import CreateIndex, CreateTable

from backfill_plugins.testmanagement.models import Bug, Feature, Product, Test, TestFeature, User

MARKER_TABLE = "backfill_demo"
TABLES: tuple[Table, ...] = tuple(
    m.__table__  # type: ignore[union-attr]
    for m in (User, Product, Feature, Test, TestFeature, Bug)
)
WORDS = [
    "login",
    "checkout",
    "search",
    "cart",
    "payment",
    "profile",
    "settings",
    "upload",
    "export",
    "report",
    "dashboard",
    "filter",
    "invoice",
    "coupon",
    "wishlist",
    "review",
    "notification",
    "onboarding",
    "password",
    "address",
    "shipping",
    "catalog",
    "language",
    "currency",
    "accessibility",
]
NON_ASCII = ["„Warenkorb“", "Größe", "café", "Straße", "Bestellübersicht", "naïve", "crème brûlée", "日本語"]
DEVICES = ("iPhone 15", "Pixel 8", "Galaxy S24", "iPad Air", "Windows 11 / Chrome", "macOS / Safari")
SEVERITIES = ("low", "high", "critical", "visual", "content")
PRODUCT_TYPES = ("website", "mobile_app_ios", "mobile_app_android", "streaming_app")
TEST_STATUSES = ("archived",) * 7 + ("locked", "customer_finalized", "running")
ODD_KINDS = (
    "no-id",
    "no-feature-id",
    "uncached-feature",
    "null-id",
    "null-feature-id",
    "uncached-feature",
    "zero-feature-id",
)
"""Listed features the application does not write as they are, in the order they are dealt out."""
MESSY_TESTS = ("truncated", "not-a-list", "non-integer-id", "null")
"""Deliberately broken tests.data: truncated JSON, features not a list, an id that is not an
integer, the JSON null."""
MESSY_BUGS = ("truncated", "missing-feature", "other-customer")
"""Deliberately broken bugs.raw_data: truncated JSON, a test feature that does not exist, another
customer's test feature."""
EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PRODUCTS_PER_CUSTOMER = 5

PRODUCT_COLUMNS = ("id", "customer_id", "data", "last_synced", "title", "product_type")
FEATURE_COLUMNS = (
    *("id", "product_id", "title", "description", "howtofind"),
    *("user_stories", "section_ids", "raw_data", "last_synced"),
)
TEST_COLUMNS = (
    *("id", "customer_id", "product_id", "data", "status", "start_at", "end_at", "synced_at"),
    *("title", "testing_type", "goal", "instructions", "out_of_scope"),
    *("enable_low", "enable_high", "enable_critical", "test_environment"),
)
BUG_COLUMNS = (
    *("id", "customer_id", "test_id", "title", "severity", "status", "raw_data", "synced_at"),
    *("actual_result", "expected_result", "steps", "reported_at", "known"),
)


@dataclass(frozen=True)
class Counts:
    tests: int
    bugs: int
    messy_tests: int
    messy_bugs: int
    products: int = 0
    features: int = 0
    """Rows in ``features`` (the products' features the cache holds)."""
    listed_features: int = 0
    """Features listed in the well-formed tests' JSON."""
    odd_features: int = 0
    """Of those, the ones the application skips or cannot reference (see ``ODD_KINDS``)."""


class _Rng(random.Random):
    """The seeded source of everything random here, with the two draws the generator makes most,
    made cheaply: sentences (slices of a pool of words drawn once) and integers in a range."""

    POOL = 1 << 16

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.words = self.choices(WORDS, k=self.POOL)

    def sentence(self, n: int, words: list[str] | None = None) -> str:
        if words is None:
            start = int(self.random() * (self.POOL - n))
            picked = self.words[start : start + n]
        else:
            picked = self.choices(words, k=n)
        return " ".join(picked).capitalize() + "."

    def between(self, low: int, high: int) -> int:
        """``randint(low, high)``, at a third of its cost."""
        return low + int(self.random() * (high - low + 1))


@functools.cache
def _db_time(hours: int) -> str:
    """``EPOCH`` + ``hours``, as SQLAlchemy stores a datetime in SQLite (the application's columns)."""
    return (EPOCH + timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S.%f")


@functools.cache
def _api_time(hours: int) -> str:
    """``EPOCH`` + ``hours``, as the platform's API writes a time."""
    return (EPOCH + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Product:
    id: int
    customer: int
    name: str
    type: str
    features: list[dict[str, Any]]
    """The product's features as the API lists them; the cache holds all of them..."""
    uncached: list[dict[str, Any]]
    """...but these, which the application never fetched."""


def _product_feature(rng: _Rng, fid: int) -> dict[str, Any]:
    stories = [rng.sentence(rng.between(6, 12)) for _ in range(rng.between(0, 3))]
    if stories and rng.random() < 0.15:
        stories[0] = rng.sentence(rng.between(4, 8), [*WORDS, *NON_ASCII])
    title = rng.sentence(3) if rng.random() > 0.05 else rng.sentence(2, NON_ASCII)
    return {
        "id": fid,
        "title": title,
        "description": rng.sentence(rng.between(6, 18)),
        "howtofind": rng.sentence(rng.between(4, 10)),
        "user_stories": stories,
    }


def _products(rng: _Rng, customers: int) -> list[_Product]:
    products = []
    next_feature = 100_001  # not the test features' range: a mixed-up id is a dangling one
    for pid in range(1, customers * PRODUCTS_PER_CUSTOMER + 1):
        features = [_product_feature(rng, next_feature + i) for i in range(rng.between(12, 40))]
        next_feature += len(features)
        uncached = [_product_feature(rng, next_feature + i) for i in range(2)]
        next_feature += len(uncached)
        products.append(
            _Product(
                id=pid,
                customer=(pid - 1) % customers + 1,
                name=rng.sentence(2)[:-1],
                type=rng.choice(PRODUCT_TYPES),
                features=features,
                uncached=uncached,
            )
        )
    return products


def _flags(rng: _Rng, listed: dict[str, Any]) -> None:
    for flag in ("enable_default", "enable_content", "enable_visual"):
        r = rng.random()
        if r < 0.4:
            listed[flag] = True
        elif r < 0.75:
            listed[flag] = False
        elif r < 0.93:
            listed[flag] = None
        # else: missing


def _listed(rng: _Rng, feature: dict[str, Any], tfid: int) -> dict[str, Any]:
    """A product's feature as a test lists it (``tests.data.features[i]``)."""
    listed: dict[str, Any] = {
        "id": tfid,
        "feature_id": feature["id"],
        "title": feature["title"],
        "description": feature["description"],
        "location": feature["howtofind"],
        "howtofind": feature["howtofind"],
        "target_idx": None,
    }
    _flags(rng, listed)
    listed["custom_report_configurations"] = []
    r = rng.random()
    if r < 0.06:
        listed["user_stories"] = None
    elif r >= 0.1:  # else missing
        listed["user_stories"] = list(feature["user_stories"])
    if rng.random() < 0.01:
        del listed["title"]
    return listed


def _make_odd(rng: _Rng, listed: dict[str, Any], kind: str, product: _Product) -> None:
    if kind == "no-id":
        del listed["id"]
    elif kind == "null-id":
        listed["id"] = None
    elif kind == "no-feature-id":
        del listed["feature_id"]
    elif kind == "null-feature-id":
        listed["feature_id"] = None
    elif kind == "zero-feature-id":
        listed["feature_id"] = 0
    else:
        assert kind == "uncached-feature", kind
        listed["feature_id"] = rng.choice(product.uncached)["id"]


def _test_data(
    rng: _Rng, test_id: int, product: _Product, features: list[dict[str, Any]], start: int
) -> dict[str, Any]:
    goal = rng.sentence(rng.between(8, 16))
    instructions = rng.sentence(rng.between(20, 45))
    out_of_scope = rng.sentence(rng.between(5, 10))
    title = rng.sentence(4)
    return {
        "id": test_id,
        "test_title": title,
        "title": title,
        "status": rng.choice(TEST_STATUSES),
        "testing_type": rng.choice(("coverage", "focused", "rapid")),
        "goal": f"**{goal}**",
        "goal_text": goal,
        "instructions": instructions,
        "instructions_text": instructions,
        "out_of_scope": out_of_scope,
        "out_of_scope_text": out_of_scope,
        "test_environment": {
            "id": product.id * 10,
            "title": "Staging",
            "url": "https://staging.example.com/",
        },
        "features": features,
        "requirements": [
            {"device": d, "os_version": f"{rng.between(10, 17)}.0"} for d in rng.sample(DEVICES, 3)
        ],
        "report_language": "en",
        "product": {"id": product.id, "name": product.name, "type": product.type},
        "enable_low": True,
        "enable_high": True,
        "enable_critical": rng.random() < 0.8,
        "created_by": None,
        "submitted_by": None,
        "start_at": _api_time(start),
        "end_at": _api_time(start + 48),
    }


def _bug_data(
    rng: _Rng, bug_id: int, test: dict[str, Any], feature: dict[str, Any] | None, reported: int
) -> dict[str, Any]:
    return {
        "id": bug_id,
        "title": rng.sentence(6),
        "severity": rng.choice(SEVERITIES),
        "status": rng.choice(("accepted", "rejected", "forwarded")),
        "language": "en",
        "location": "https://staging.example.com/",
        "author": {"name": f"tester{rng.between(1, 500)}"},
        "expected_result": rng.sentence(rng.between(6, 12)),
        "actual_result": rng.sentence(rng.between(6, 12)),
        "test": {"id": test["id"], "title": test["title"]},
        "product": {"id": test["product"]["id"]},
        "steps": [rng.sentence(rng.between(5, 10)) for _ in range(rng.between(2, 4))],
        "devices": [{"name": rng.choice(DEVICES), "os_version": f"{rng.between(10, 17)}.0"}],
        "known": rng.random() < 0.05,
        "reported_at": _api_time(reported),
        "test_feature": None
        if feature is None
        else {"id": feature["id"], "feature_id": feature.get("feature_id"), "title": feature.get("title")},
    }


class _Dealer:
    """Picks a share of the draws, evenly (one every 1/share draws, so that a small database gets
    its share and no run meets a cluster of them), and gives the picked ones kinds in turn (so
    that a few of them already show every kind).

    The first pick comes at 3/8 of the interval: at the default 1.5%, test 25 is the first messy
    test and the next is 67 tests later. The CLI and crash tests rely on that: a first batch of 50
    holds an error, a run in batches of 5 never exceeds the default 5% limit (1/25 at worst), and
    a run resumed after 30 or 40 tests meets its next error only after 50 more.
    """

    def __init__(self, share: float, kinds: tuple[str, ...]) -> None:
        self.share = share
        self.kinds = kinds
        self.level = 0.625
        self.dealt = 0

    def deal(self) -> str | None:
        """The kind of this draw, or None if it is not picked."""
        self.level += self.share
        if self.level < 1:
            return None
        self.level -= 1
        self.dealt += 1
        return self.kinds[(self.dealt - 1) % len(self.kinds)]


def _messy_test(kind: str, data: dict[str, Any]) -> str:
    if kind == "truncated":
        return json.dumps(data)[:-7]
    if kind == "not-a-list":
        return json.dumps({**data, "features": "not a list"})
    if kind == "non-integer-id":  # with a feature_id: not a feature to skip
        return json.dumps({**data, "features": [{"id": "abc", "feature_id": 100_001, "title": 7}]})
    assert kind == "null", kind
    return "null"


def _test_row(customer: int, data: dict[str, Any], text: str, synced: str, start: int) -> tuple[Any, ...]:
    env = data["test_environment"]
    return (
        *(data["id"], customer, data["product"]["id"], text, data["status"]),
        *(_db_time(start), _db_time(start + 48), synced),
        *(data["title"], data["testing_type"], data["goal_text"], data["instructions_text"]),
        *(data["out_of_scope_text"], data["enable_low"], data["enable_high"], data["enable_critical"]),
        json.dumps(env),
    )


def _bug_row(customer: int, raw: dict[str, Any], text: str, synced: str, reported: int) -> tuple[Any, ...]:
    return (
        *(raw["id"], customer, raw["test"]["id"], raw["title"], raw["severity"], raw["status"], text),
        *(synced, raw["actual_result"], raw["expected_result"], "\n".join(raw["steps"])),
        *(_db_time(reported), raw["known"]),
    )


def _catalogue(products: list[_Product], synced: str) -> Iterator[tuple[str, tuple[Any, ...]]]:
    for product in products:
        data = {
            "id": product.id,
            "name": product.name,
            "description": None,
            "type": product.type,
            "default_section_id": product.id * 100,
            "sections": [],
            "sections_with_default": [{"id": product.id * 100, "name": "default-section"}],
        }
        yield "products", (product.id, product.customer, json.dumps(data), synced, product.name, product.type)
        for f in product.features:
            stories = json.dumps(f["user_stories"])
            row = (f["id"], product.id, f["title"], f["description"], f["howtofind"], stories)
            yield "features", (*row, "[]", json.dumps(f), synced)


def _rows(
    tests: int, customers: int, messy: float, odd: float, seed: int, counts: dict[str, int]
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Rows to insert, as (table, values), in an order that respects the foreign keys."""
    rng = _Rng(seed)
    synced = _db_time(400 * 24)
    products = _products(rng, customers)
    yield from _catalogue(products, synced)
    next_feature = 1
    next_bug = 1
    odd_features = _Dealer(odd, ODD_KINDS)
    messy_tests = _Dealer(messy, MESSY_TESTS)
    messy_bugs = _Dealer(messy, MESSY_BUGS)
    owned: dict[int, list[dict[str, Any]]] = {}
    for test_id in range(1, tests + 1):
        product = rng.choice(products)
        customer = product.customer
        features = []
        odd_here = 0
        for feature in rng.sample(product.features, rng.between(1, 5)):
            listed = _listed(rng, feature, next_feature)
            next_feature += 1
            kind = odd_features.deal()
            if kind is not None:
                _make_odd(rng, listed, kind, product)
                odd_here += 1
            features.append(listed)
        start = rng.between(0, 360) * 24 + rng.between(0, 23)  # hours after EPOCH
        data = _test_data(rng, test_id, product, features, start)
        messy_kind = messy_tests.deal()
        is_messy = messy_kind is not None
        if messy_kind is not None:
            counts["messy_tests"] += 1
            text = _messy_test(messy_kind, data)
        else:
            counts["listed_features"] += len(features)
            counts["odd_features"] += odd_here
            text = json.dumps(data)
        yield "tests", _test_row(customer, data, text, synced, start)
        named = [f for f in features if f.get("id")]
        if not is_messy:
            owned.setdefault(customer, []).extend(named)
        for _ in range(rng.between(2, 6)):
            target = None if is_messy or not named or rng.random() < 0.05 else rng.choice(named)
            reported = start + rng.between(1, 47)
            raw = _bug_data(rng, next_bug, data, target, reported)
            kind = messy_bugs.deal()
            if kind is not None:
                counts["messy_bugs"] += 1
                if kind == "truncated":
                    text = json.dumps(raw)[:40]
                elif kind == "missing-feature":
                    raw["test_feature"] = {"id": 10_000_000 + next_bug}  # does not exist
                    text = json.dumps(raw)
                else:
                    other = [c for c in owned if c != customer]
                    stolen = rng.choice(owned[other[0]]) if other else {"id": 20_000_000}
                    raw["test_feature"] = {"id": stolen["id"]}  # another customer's feature
                    text = json.dumps(raw)
            else:
                text = json.dumps(raw)
            yield "bugs", _bug_row(customer, raw, text, synced, reported)
            next_bug += 1


def build(
    path: Path,
    tests: int = 2000,
    *,
    customers: int = 4,
    messy: float = 0.015,
    odd: float = 0.01,
    seed: int = 1,
    wal: bool = False,
) -> Counts:
    """Create a new SQLite database at ``path`` (which must not exist) and fill it.

    ``messy`` is the share of tests and of bugs deliberately broken; ``odd`` the share of listed
    features the application skips or cannot reference. The same arguments give the same file
    contents. ``wal`` leaves the file in WAL mode, as the application does; the default is
    rollback-journal (DELETE) mode.
    """
    if path.exists():
        raise FileExistsError(path)
    engine = create_engine(f"sqlite:///{path}")
    tables = [str(CreateTable(t).compile(engine)).strip() for t in TABLES]
    indexes = [str(CreateIndex(i).compile(engine)).strip() for t in TABLES for i in t.indexes]
    engine.dispose()
    counts = dict.fromkeys(("messy_tests", "messy_bugs", "listed_features", "odd_features"), 0)
    rows = dict.fromkeys(("products", "features", "tests", "bugs"), 0)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA foreign_keys = OFF")  # as the application has it
        conn.execute("PRAGMA journal_mode = OFF")  # a new file: nothing to roll back to
        conn.execute("PRAGMA synchronous = OFF")
        for ddl in tables:
            conn.execute(ddl)
        conn.execute(f"CREATE TABLE {MARKER_TABLE} (tests INTEGER, seed INTEGER)")
        conn.execute(f"INSERT INTO {MARKER_TABLE} VALUES (?, ?)", (tests, seed))
        batch: dict[str, list[tuple[Any, ...]]] = {name: [] for name in rows}
        for table, values in _rows(tests, customers, messy, odd, seed, counts):
            batch[table].append(values)
            rows[table] += 1
            if len(batch[table]) >= 5000:
                _flush(conn, batch)
        _flush(conn, batch)
        for ddl in indexes:  # after the rows: building an index at once is faster
            conn.execute(ddl)
        conn.commit()
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA journal_mode = {'WAL' if wal else 'DELETE'}")
    finally:
        conn.close()
    return Counts(
        tests=rows["tests"],
        bugs=rows["bugs"],
        messy_tests=counts["messy_tests"],
        messy_bugs=counts["messy_bugs"],
        products=rows["products"],
        features=rows["features"],
        listed_features=counts["listed_features"],
        odd_features=counts["odd_features"],
    )


INSERTS = {
    table: f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
    for table, cols in (
        ("products", PRODUCT_COLUMNS),
        ("features", FEATURE_COLUMNS),
        ("tests", TEST_COLUMNS),
        ("bugs", BUG_COLUMNS),
    )
}


def _flush(conn: sqlite3.Connection, batch: dict[str, list[tuple[Any, ...]]]) -> None:
    for table, values in batch.items():  # in insertion order: referenced tables first
        conn.executemany(INSERTS[table], values)
        values.clear()


def is_demo_database(path: Path) -> bool:
    """Whether ``path`` is a database that ``build`` made. Read as an immutable file, so that the
    file is left as found: a read-only connection to a WAL file would create its -wal and -shm
    files and could not remove them."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True)
        ) as conn:
            return (
                conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (MARKER_TABLE,)).fetchone()
                is not None
            )
    except sqlite3.Error:
        return False
