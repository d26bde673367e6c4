"""What reading pages through ``store.encoding.fetch_rows`` costs over the driver's own fetch.

Every source page on SQLite is read through ``fetch_rows``, which reads a page again only when a
TEXT value in it is not UTF-8. This reads every page of ``tests`` (id, customer_id, data, as
``test_features`` does) both ways, interleaved, and prints the ratio of the best times: the clean
path should cost nothing (a ratio of about 1.00). It also prints the ratio for a file whose
first page holds one undecodable value (that page is read twice, decoded per value).

    python benchmarks/text_decoding.py [TESTS] [ROUNDS]
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from backfill_core.store.encoding import fetch_rows
from backfill_plugins.testmanagement import synthetic

PAGE = "SELECT id, customer_id, data FROM tests WHERE id > ? ORDER BY id LIMIT 500"
Fetch = Callable[[sqlite3.Connection, str, Sequence[Any]], list[tuple[Any, ...]]]


def driver(con: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return con.execute(sql, params).fetchall()


def read_all(con: sqlite3.Connection, fetch: Fetch) -> list[tuple[Any, ...]]:
    """Every page of ``tests``, keyset-paged as the engine pages it."""
    out: list[tuple[Any, ...]] = []
    last = -1
    while rows := fetch(con, PAGE, (last,)):
        out += rows
        last = rows[-1][0]
    return out


def timed(con: sqlite3.Connection, fetch: Fetch) -> float:
    start = time.perf_counter()
    read_all(con, fetch)
    return time.perf_counter() - start


def measure(clean: Path, damaged: Path, rounds: int) -> dict[str, list[float]]:
    """Per round, the time of reading every page of ``clean`` with the driver's fetch and with
    fetch_rows, and of ``damaged`` with fetch_rows, in a rotating order (so that a busy machine
    slows each alike)."""
    cons = [sqlite3.connect(clean), sqlite3.connect(damaged)]
    ways: list[tuple[str, sqlite3.Connection, Fetch]] = [
        ("driver", cons[0], driver),
        ("fetch_rows", cons[0], fetch_rows),
        ("damaged", cons[1], fetch_rows),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in ways}
    try:
        for _name, con, fetch in ways:  # warm the page caches
            read_all(con, fetch)
        for i in range(rounds):
            for name, con, fetch in ways[i % 3 :] + ways[: i % 3]:
                times[name].append(timed(con, fetch))
    finally:
        for con in cons:
            con.close()
    return times


def damage_one(path: Path) -> None:
    """Make one test's ``data`` end in a byte that is not UTF-8."""
    with sqlite3.connect(path) as con:
        con.execute("UPDATE tests SET data = CAST(CAST(data AS BLOB) || X'FF' AS TEXT) WHERE id = 1")
    con.close()


def main(tests: int = 3000, rounds: int = 31) -> None:
    with tempfile.TemporaryDirectory() as folder:
        clean, damaged = Path(folder) / "clean.db", Path(folder) / "damaged.db"
        synthetic.build(clean, tests, seed=1)
        shutil.copy(clean, damaged)
        damage_one(damaged)
        times = measure(clean, damaged, rounds)
        plain = times["driver"]

        def ratio(name: str) -> float:
            return statistics.median(t / p for t, p in zip(times[name], plain, strict=True))

        print(
            f"{tests} tests, {rounds} rounds: driver's fetch {min(plain) * 1000:.1f} ms (best); "
            f"fetch_rows on clean pages: ratio {ratio('fetch_rows'):.3f} (median of the rounds' ratios); "
            f"with one undecodable value in the first page: ratio {ratio('damaged'):.3f}"
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
