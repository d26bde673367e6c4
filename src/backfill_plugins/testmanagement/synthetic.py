"""A realistic synthetic test-management database, for the demo, the tests and the benchmarks."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine

from backfill_plugins.testmanagement.models import Bug, Test, TestFeature

MARKER_TABLE = "backfill_demo"
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
DEVICES = ("iPhone 15", "Pixel 8", "Galaxy S24", "iPad Air", "Windows 11 / Chrome", "macOS / Safari")


@dataclass(frozen=True)
class Counts:
    tests: int
    bugs: int
    messy_tests: int
    messy_bugs: int


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _feature(rng: random.Random, fid: int) -> dict[str, object]:
    flags = {
        f: rng.choice((True, False, None)) for f in ("enable_default", "enable_content", "enable_visual")
    }
    return {
        "id": fid,
        "feature_id": rng.randint(1, 5000),
        "title": _sentence(rng, 3),
        "description": _sentence(rng, rng.randint(10, 30)),
        "howtofind": _sentence(rng, rng.randint(5, 15)),
        "user_stories": [_sentence(rng, rng.randint(6, 12)) for _ in range(rng.randint(0, 3))]
        if rng.random() > 0.1
        else None,
        **flags,
    }


def _test_data(rng: random.Random, test_id: int, features: list[dict[str, object]]) -> dict[str, object]:
    return {
        "id": test_id,
        "title": _sentence(rng, 4),
        "goal": _sentence(rng, rng.randint(20, 40)),
        "instructions": _sentence(rng, rng.randint(60, 120)),
        "out_of_scope": _sentence(rng, rng.randint(10, 20)),
        "requirements": [
            {"device": d, "os_version": f"{rng.randint(10, 17)}.0"} for d in rng.sample(DEVICES, 3)
        ],
        "start_at": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T09:00:00Z",
        "features": features,
    }


def _bug_data(rng: random.Random, bug_id: int, feature: dict[str, object] | None) -> dict[str, object]:
    return {
        "id": bug_id,
        "title": _sentence(rng, 6),
        "severity": rng.choice(("low", "high", "critical", "visual", "content")),
        "status": rng.choice(("accepted", "rejected", "forwarded")),
        "test_feature": None if feature is None else {"id": feature["id"], "title": feature["title"]},
        "device": {"name": rng.choice(DEVICES), "os_version": f"{rng.randint(10, 17)}.0"},
        "steps": _sentence(rng, rng.randint(30, 60)),
        "expected_result": _sentence(rng, rng.randint(8, 16)),
        "actual_result": _sentence(rng, rng.randint(8, 16)),
    }


def _messy_test(rng: random.Random, data: dict[str, object]) -> str:
    choice = rng.randrange(4)
    if choice == 0:
        return json.dumps(data)[:-7]  # truncated JSON
    if choice == 1:
        return json.dumps({**data, "features": "not a list"})
    if choice == 2:
        return json.dumps({**data, "features": [{"id": "abc", "title": 7}]})
    return "null"


def _rows(tests: int, customers: int, messy: float, seed: int) -> Iterator[tuple[str, tuple[object, ...]]]:
    """Rows to insert, as (table, values), in an order that respects the foreign keys."""
    rng = random.Random(seed)
    next_feature = 1
    next_bug = 1
    owned: dict[int, list[dict[str, object]]] = {}
    for test_id in range(1, tests + 1):
        customer = rng.randint(1, customers)
        features = [_feature(rng, next_feature + i) for i in range(rng.randint(1, 5))]
        next_feature += len(features)
        data = _test_data(rng, test_id, features)
        is_messy = rng.random() < messy
        text = _messy_test(rng, data) if is_messy else json.dumps(data)
        yield "tests", (test_id, customer, rng.randint(1, 40), "archived", text, is_messy)
        if not is_messy:
            owned.setdefault(customer, []).extend(features)
        for _ in range(rng.randint(2, 6)):
            feature = None if is_messy or rng.random() < 0.05 else rng.choice(features)
            raw = _bug_data(rng, next_bug, feature)
            bug_messy = rng.random() < messy
            if bug_messy:
                kind = rng.randrange(3)
                if kind == 0:
                    text = json.dumps(raw)[:40]
                elif kind == 1:
                    raw["test_feature"] = {"id": 10_000_000 + next_bug}  # does not exist
                    text = json.dumps(raw)
                else:
                    other = [c for c in owned if c != customer]
                    stolen = rng.choice(owned[other[0]]) if other else {"id": 20_000_000}
                    raw["test_feature"] = {"id": stolen["id"]}  # another customer's feature
                    text = json.dumps(raw)
            else:
                text = json.dumps(raw)
            yield "bugs", (next_bug, customer, test_id, text, bug_messy)
            next_bug += 1


def build(
    path: Path, tests: int = 2000, *, customers: int = 4, messy: float = 0.015, seed: int = 1
) -> Counts:
    """Create a new SQLite database at ``path`` (which must not exist) and fill it."""
    if path.exists():
        raise FileExistsError(path)
    engine = create_engine(f"sqlite:///{path}")
    tables = [m.__table__ for m in (Test, TestFeature, Bug)]  # type: ignore[union-attr]
    Test.metadata.create_all(engine, tables=tables)
    engine.dispose()
    counts = {"tests": 0, "bugs": 0, "messy_tests": 0, "messy_bugs": 0}
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE {MARKER_TABLE} (tests INTEGER, seed INTEGER)")
        conn.execute(f"INSERT INTO {MARKER_TABLE} VALUES (?, ?)", (tests, seed))
        batch: dict[str, list[tuple[object, ...]]] = {"tests": [], "bugs": []}
        for table, values in _rows(tests, customers, messy, seed):
            *row, is_messy = values
            batch[table].append(tuple(row))
            counts[table] += 1
            counts[f"messy_{table}"] += bool(is_messy)
            if len(batch[table]) >= 5000:
                _flush(conn, batch)
        _flush(conn, batch)
    return Counts(counts["tests"], counts["bugs"], counts["messy_tests"], counts["messy_bugs"])


def _flush(conn: sqlite3.Connection, batch: dict[str, list[tuple[object, ...]]]) -> None:
    conn.executemany(
        "INSERT INTO tests (id, customer_id, product_id, status, data) VALUES (?,?,?,?,?)", batch["tests"]
    )
    conn.executemany("INSERT INTO bugs (id, customer_id, test_id, raw_data) VALUES (?,?,?,?)", batch["bugs"])
    batch["tests"].clear()
    batch["bugs"].clear()


def is_demo_database(path: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return (
                conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (MARKER_TABLE,)).fetchone()
                is not None
            )
    except sqlite3.Error:
        return False
