"""The text-decoding benchmark reads the same rows both ways, on a small input (no timing)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from backfill_core.store.encoding import Salvaged, Undecodable, fetch_rows
from backfill_plugins.testmanagement import synthetic
from support.benchmarks import load_benchmark


def test_both_reads_return_the_same_rows_and_a_damaged_page_only_its_bad_value(tmp_path: Path) -> None:
    text_decoding = load_benchmark("text_decoding")
    path = tmp_path / "bench.db"
    synthetic.build(path, 30, seed=1)
    with sqlite3.connect(path) as con:
        plain = text_decoding.read_all(con, text_decoding.driver)
        assert text_decoding.read_all(con, fetch_rows) == plain and len(plain) == 30
    con.close()
    text_decoding.damage_one(path)
    with sqlite3.connect(path) as con:
        page = fetch_rows(con, text_decoding.PAGE, (-1,))
    con.close()
    assert type(page) is Salvaged
    assert [i for i, row in enumerate(page) if any(isinstance(v, Undecodable) for v in row)] == [0]
    assert page[1:] == plain[1:]
