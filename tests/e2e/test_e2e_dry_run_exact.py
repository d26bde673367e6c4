"""A dry run predicts what the real run does, including the writes the target's constraints
refuse: NOT NULL, UNIQUE, CHECK, and foreign keys where the database enforces them."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.cli import run_cli
from support.postgres import empty_database, execute, needs_server

TABLES = """
CREATE TABLE tests (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, data TEXT);
CREATE TABLE features (id INTEGER PRIMARY KEY);
CREATE TABLE customers (id INTEGER PRIMARY KEY);
CREATE TABLE test_features (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    test_id INTEGER NOT NULL,
    feature_id INTEGER NOT NULL REFERENCES features (id),
    title VARCHAR NOT NULL CHECK (title <> 'forbidden'),
    description VARCHAR NOT NULL,
    howtofind VARCHAR,
    user_stories VARCHAR NOT NULL DEFAULT '[]',
    enable_default BOOLEAN NOT NULL,
    enable_content BOOLEAN NOT NULL,
    enable_visual BOOLEAN NOT NULL,
    UNIQUE (test_id, title)
);
"""
FEATURES = 40
CUSTOMERS = (1, 2)  # tests of customer 3 name a customer the table lacks


def _feature(fid: int, title: str, description: str | None = "d") -> dict[str, Any]:
    return {"id": fid, "feature_id": 1 + fid % FEATURES, "title": title, "description": description}


def _tests() -> list[tuple[int, int, str]]:
    """60 tests; every 5th breaks one constraint with one of its features."""
    rows = []
    for t in range(1, 61):
        features = [_feature(t * 10 + i, f"feature {i}") for i in range(3)]
        match t % 25:
            case 5:
                features[1]["description"] = None  # NOT NULL
            case 10:
                features[2]["title"] = "forbidden"  # CHECK
            case 15:
                features[2]["title"] = features[0]["title"]  # UNIQUE (test_id, title)
        customer = 3 if t % 25 == 20 else CUSTOMERS[t % 2]  # FOREIGN KEY, where enforced
        rows.append((t, customer, json.dumps({"features": features})))
    return rows


def _sqlite(path: Path) -> str:
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript(TABLES)
        conn.executemany("INSERT INTO tests VALUES (?, ?, ?)", _tests())
        conn.executemany("INSERT INTO features VALUES (?)", [(i,) for i in range(1, FEATURES + 1)])
        conn.executemany("INSERT INTO customers VALUES (?)", [(c,) for c in CUSTOMERS])
    conn.close()
    return str(path)


async def _postgres(url: str) -> None:
    await execute(url, TABLES)
    rows = ", ".join(f"({t}, {c}, '{d}')" for t, c, d in _tests())
    await execute(url, f"INSERT INTO tests VALUES {rows}")
    await execute(url, f"INSERT INTO features SELECT generate_series(1, {FEATURES})")
    await execute(url, f"INSERT INTO customers VALUES {', '.join(f'({c})' for c in CUSTOMERS)}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_server)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield _sqlite(tmp_path / "shop.db")
        return
    with empty_database() as url:
        asyncio.run(_postgres(url))
        yield url


def _counts(out: str) -> dict[str, Any]:
    (x,) = json.loads(out)["extractors"]
    return {k: x[k] for k in ("processed", "inserted", "updated", "unchanged", "errors_by_tier", "skipped")}


def test_dry_run_counts_are_the_real_runs_counts(database: str) -> None:
    args = ["run", "test_features", "-d", database, "--no-validate", "--max-error-rate", "0.5"]
    args += ["--json", "-q"]
    dry = run_cli([*args, "--dry-run"])
    real = run_cli(args)
    assert dry.returncode == 0, dry.stderr
    assert real.returncode == 0, real.stderr
    assert _counts(dry.stdout) == _counts(real.stdout)
    refused = _counts(real.stdout)["errors_by_tier"]["batch"]["write"]
    # NOT NULL, CHECK and UNIQUE each refuse some tests; PostgreSQL also enforces the foreign key
    # to customers (SQLite's connection leaves foreign keys off, so those rows are written).
    breaking = (5, 10, 15, 20) if database.startswith("postgresql") else (5, 10, 15)
    assert refused == sum(1 for t, _, _ in _tests() if t % 25 in breaking), _counts(real.stdout)
    second_dry = run_cli([*args, "--dry-run"])
    assert _counts(second_dry.stdout) == _counts(run_cli(args).stdout)
