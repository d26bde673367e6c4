"""What reading pages through ``store.encoding.fetch_rows`` costs over the driver's own fetch.

Every source page on SQLite is read through ``fetch_rows``, which reads a page again only when a
TEXT value in it is not UTF-8. This reads every page of ``tests`` (id, customer_id, data, as
``test_features`` does) both ways, interleaved, and prints the ratio of the best times: the clean
path should cost nothing (a ratio of about 1.00). It also prints what a page holding one
undecodable value costs (read twice, decoded per value), for information.

    python benchmarks/text_decoding.py [TESTS] [ROUNDS]
"""

from __future__ import annotations

import sqlite3
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


def best(con: sqlite3.Connection, fetch: Fetch) -> float:
    start = time.perf_counter()
    read_all(con, fetch)
    return time.perf_counter() - start


def measure(path: Path, rounds: int) -> tuple[float, float]:
    """The best time of the driver's fetch and of fetch_rows over ``rounds`` interleaved reads."""
    con = sqlite3.connect(path)
    try:
        times: dict[str, list[float]] = {"driver": [], "fetch_rows": []}
        ways: list[tuple[str, Fetch]] = [("driver", driver), ("fetch_rows", fetch_rows)]
        read_all(con, driver)  # warm the page cache
        for i in range(rounds):  # alternating which goes first
            for name, fetch in ways if i % 2 == 0 else ways[::-1]:
                times[name].append(best(con, fetch))
        plain, salvaging = times["driver"], times["fetch_rows"]
        return min(plain), min(salvaging)
    finally:
        con.close()


def damage_one(path: Path) -> None:
    """Make one test's ``data`` end in a byte that is not UTF-8."""
    with sqlite3.connect(path) as con:
        con.execute("UPDATE tests SET data = CAST(CAST(data AS BLOB) || X'FF' AS TEXT) WHERE id = 1")
    con.close()


def main(tests: int = 3000, rounds: int = 15) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        synthetic.build(path, tests, seed=1)
        plain, salvaging = measure(path, rounds)
        print(
            f"clean pages ({tests} tests): driver {plain * 1000:.1f} ms, "
            f"fetch_rows {salvaging * 1000:.1f} ms, ratio {salvaging / plain:.3f}"
        )
        damage_one(path)
        con = sqlite3.connect(path)
        try:
            times = [best(con, fetch_rows) for _ in range(rounds)]
        finally:
            con.close()
        print(
            f"one undecodable value in the first page: {min(times) * 1000:.1f} ms, "
            f"ratio {min(times) / plain:.3f} of the clean read"
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
