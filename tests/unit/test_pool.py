"""The extraction pool on its own: a forked process reading and extracting pages of a real file,
giving the batches and key ranges that reading and extracting them in this process gives."""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from backfill_core import Extractor, RecordError, Row, Upsert
from backfill_core.app import resolve_url
from backfill_core.engine.batch import TURN, Batch, Converter, Extracts
from backfill_core.engine.pool import ExtractionPool, WorkerFailed, sendable
from backfill_core.engine.sources import Pages
from backfill_core.store.database import Database
from backfill_core.store.records import KeyRange


class Labels(Extractor):
    name = "labels"
    source = "items"
    columns = ("label",)
    writes = {"labels": ("id", "text")}

    def extract(self, row: Row) -> list[Upsert]:
        if row["label"] is None:
            raise RecordError("no label", kind="missing")
        return [Upsert("labels", {"id": row["id"]}, {"text": row["label"].upper()})]


@pytest.fixture
def items(tmp_path: Path) -> Path:
    path = tmp_path / "items.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT)")
        conn.executemany(
            "INSERT INTO items VALUES (?, ?)", [(i, None if i % 5 == 0 else f"l{i}") for i in range(1, 31)]
        )
    return path


async def _collect(pool: ExtractionPool, path: Path, x: Converter, todo: Sequence[KeyRange]) -> list[Any]:
    """The pool's batches and their ranges over ``todo``, checked against the in-process source's."""
    async with Database(resolve_url(str(path)), read_only=True) as db:
        got = [(w.batch, w.done) async for w in pool.pages(db, x, todo, 7).batches()]
        here = [(w.batch, w.done) async for w in Pages(db, x, todo, 7).batches()]
    assert _flat([b for b, _ in got]) == _flat([b for b, _ in here])
    assert [d for _, d in got] == [d for _, d in here]
    return got


def _flat(batches: Sequence[Batch]) -> list[Any]:
    return [(b.keys, b.items, b.errors, b.needed) for b in batches]


def test_pool_batches_are_what_extracting_here_gives(items: Path) -> None:
    extract = Converter(Labels())
    with sqlite3.connect(items) as conn:
        rows = conn.execute("SELECT id, label FROM items ORDER BY id").fetchall()
    expected = [extract(rows[i : i + 7]) for i in range(0, len(rows), 7)]
    pool = ExtractionPool([extract], str(items), 1.0)
    try:
        got = asyncio.run(_collect(pool, items, extract, [KeyRange()]))
        assert _flat([b for b, _ in got]) == _flat(expected)
        assert [d for _, d in got] == [
            KeyRange(None, 7),
            KeyRange(7, 14),
            KeyRange(14, 21),
            KeyRange(21, 28),
            KeyRange(28, 30),
        ]
        # the same worker serves a second run, here resumed after key 21
        got = asyncio.run(_collect(pool, items, extract, [KeyRange(21)]))
        assert _flat([b for b, _ in got]) == _flat([extract(rows[21:28]), extract(rows[28:])])
        # and key ranges given out of order, each bounded
        got = asyncio.run(_collect(pool, items, extract, [KeyRange(20, 25), KeyRange(None, 3)]))
        assert _flat([b for b, _ in got]) == _flat([extract(rows[20:25]), extract(rows[:3])])
        assert [d for _, d in got] == [KeyRange(20, 25), KeyRange(None, 3)]
        # a bounded range of exactly two pages is two batches, not a third empty one
        got = asyncio.run(_collect(pool, items, extract, [KeyRange(7, 21)]))
        assert _flat([b for b, _ in got]) == _flat([extract(rows[7:14]), extract(rows[14:21])])
        assert [d for _, d in got] == [KeyRange(7, 14), KeyRange(14, 21)]
        # a bounded range's short last page, and an empty bounded range, are done to the range's end
        got = asyncio.run(_collect(pool, items, extract, [KeyRange(21, 40), KeyRange(40, 50)]))
        assert _flat([b for b, _ in got]) == _flat([extract(rows[21:28]), extract(rows[28:]), extract([])])
        assert [d for _, d in got] == [KeyRange(21, 28), KeyRange(28, 40), KeyRange(40, 50)]
    finally:
        pool.close()
    assert not pool.alive


def test_a_page_the_worker_cannot_read_is_a_read_error(items: Path) -> None:
    extract = Converter(Labels())
    pool = ExtractionPool([extract], str(items), 1.0)

    async def read_nowhere() -> Batch:
        nowhere = "SELECT id, label FROM nowhere"
        return await pool.result(pool.submit("labels", (nowhere, nowhere), (None,), None), "labels")

    try:
        with pytest.raises(sqlite3.OperationalError, match="no such table: nowhere"):
            asyncio.run(read_nowhere())
        assert asyncio.run(_collect(pool, items, extract, [KeyRange()])) != []  # and it still serves
    finally:
        pool.close()


class Oversteps(Labels):
    """Writes a column it does not declare on every third row: those rows fail their check."""

    def extract(self, row: Row) -> list[Upsert]:
        if row["id"] % 3 == 0:
            return [Upsert("labels", {"id": row["id"]}, {"secret": 1})]
        return super().extract(row)


def test_failed_extractions_and_failed_checks_are_record_errors_in_key_order() -> None:
    here = Converter(Oversteps())([(i, None if i % 5 == 0 else f"l{i}") for i in range(1, 16)])
    assert [(e.key, e.kind) for e in here.errors] == [
        (3, "plugin-bug"),
        (5, "missing"),
        (6, "plugin-bug"),
        (9, "plugin-bug"),
        (10, "missing"),
        (12, "plugin-bug"),
        (15, "plugin-bug"),
    ]
    assert [item[0] for item in here.items] == [1, 2, 4, 7, 8, 11, 13, 14]


def test_a_page_extracted_in_turns_is_the_batch_extracted_at_once_and_lets_other_tasks_run() -> None:
    rows = [(i, None if i % 5 == 0 else f"l{i}") for i in range(1, 3 * TURN + 8)]
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def in_turns() -> Batch:
        beside = asyncio.ensure_future(other_task())
        await asyncio.sleep(0)
        try:
            return await Converter(Oversteps()).in_turns(rows)
        finally:
            beside.cancel()

    turned = asyncio.run(in_turns())
    at_once = Converter(Oversteps())(rows)
    assert _flat([turned]) == _flat([at_once])
    assert (turned.refs, turned.parents, turned.skips) == (at_once.refs, at_once.parents, at_once.skips)
    assert [(e.key, e.kind) for e in turned.errors][:3] == [
        (3, "plugin-bug"),
        (5, "missing"),
        (6, "plugin-bug"),
    ]
    assert turns > 2 * len(rows) // TURN  # a turn after each part's extraction and its checks


def test_changes_that_cannot_be_pickled_become_record_errors() -> None:
    extract = Converter(Labels(), plugin="labels-plugin 1.0")
    batch = extract([(1, "a"), (2, None), (3, "c"), (4, "d")])
    lock = threading.Lock()
    ops = batch.items[2][1]
    ops[0] = ops[0]._replace(values={"text": lock})
    sent: Batch = pickle.loads(sendable(batch, extract))
    assert [item[0] for item in sent.items] == [1, 3]
    assert sent.needed == {("labels", ("id",)): {(1,), (3,)}}
    assert [(e.key, e.kind) for e in sent.errors] == [(2, "missing"), (4, "plugin-bug")]
    message = sent.errors[1].message
    assert "cannot take" in message and "labels-plugin 1.0" in message


class Quits(Labels):
    """Raises what is not an Exception on one row: the worker cannot go on."""

    name = "quits"

    def extract(self, row: Row) -> list[Upsert]:
        if row["id"] == 9:
            raise SystemExit(3)
        return super().extract(row)


def test_extract_raising_system_exit_fails_the_run_naming_the_row(items: Path) -> None:
    extract = Converter(Quits(), plugin="quits-plugin 2.0")
    pool = ExtractionPool([extract], str(items), 1.0)
    try:
        with pytest.raises(WorkerFailed) as e:
            asyncio.run(_collect(pool, items, extract, [KeyRange()]))
        message = str(e.value)
        assert "extractor 'quits' (quits-plugin 2.0) on the row with key 9" in message, message
        assert "SystemExit: 3" in message and "run the same command to resume" in message
        assert not pool.alive
    finally:
        pool.close()


def test_a_batch_converted_here_equals_one_converted_by_the_worker(items: Path) -> None:
    extract = Converter(Oversteps())
    with sqlite3.connect(items) as conn:
        rows = conn.execute("SELECT id, label FROM items ORDER BY id").fetchall()
    pool = ExtractionPool([extract], str(items), 1.0)
    sql = "SELECT id, label FROM items ORDER BY id"

    async def page(waiting: int) -> tuple[bytes, Batch]:
        pool.waiting.value = waiting
        data = await pool.submit("labels", (sql, sql), (None,), None)
        pool.waiting.value = 0
        return data, await pool.result(pool.submit("labels", (sql, sql), (None,), None), "labels")

    try:
        waited, here = asyncio.run(page(1))  # this process waits for it: it converts
        busy, there = asyncio.run(page(0))  # this process is busy: the worker converts
    finally:
        pool.close()
    assert isinstance(pickle.loads(waited), Extracts) and isinstance(pickle.loads(busy), Batch)
    assert _flat([here]) == _flat([there]) == _flat([extract(rows)])
    assert (here.refs, here.parents, here.skips) == (there.refs, there.parents, there.skips)
