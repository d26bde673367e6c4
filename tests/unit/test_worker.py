"""The extraction worker on its own: a forked process reading and extracting pages of a real file."""

from __future__ import annotations

import asyncio
import fcntl
import pickle
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from backfill_core import Extractor, RecordError, Row, Upsert
from backfill_core.engine.extraction import BatchExtractor, Extraction
from backfill_core.engine.worker import PIPE_SIZE, Worker, WorkerFailed, WorkerReadError, _pickled

FIRST = "SELECT id, label FROM items WHERE id IS NOT NULL ORDER BY id LIMIT 7"
NEXT = "SELECT id, label FROM items WHERE id IS NOT NULL AND id > ? ORDER BY id LIMIT 7"


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


async def _collect(worker: Worker, start_after: Any = None) -> list[Extraction]:
    """The batches as the engine takes them: finished here where the worker left that to it."""
    batches = [b async for b in worker.extractions("labels", FIRST, NEXT, start_after)]
    for b in batches:
        BatchExtractor(Labels()).finish(b)
    return batches


def _flat(batches: Sequence[Extraction]) -> list[Any]:
    return [(b.keys, b.items, b.errors, b.needed) for b in batches]


def test_worker_batches_are_what_extracting_here_gives(items: Path) -> None:
    extract = BatchExtractor(Labels())
    with sqlite3.connect(items) as conn:
        rows = conn.execute("SELECT id, label FROM items ORDER BY id").fetchall()
    expected = [extract(rows[i : i + 7]) for i in range(0, len(rows), 7)]
    worker = Worker.fork([extract], str(items), 1.0)
    try:
        assert _flat(asyncio.run(_collect(worker))) == _flat(expected)
        # the same worker serves a second run, here resumed after key 21
        assert _flat(asyncio.run(_collect(worker, 21))) == _flat([extract(rows[21:28]), extract(rows[28:])])
    finally:
        worker.stop()
    assert not worker.alive


def test_the_pipe_from_the_worker_holds_a_whole_batch(items: Path) -> None:
    worker = Worker.fork([BatchExtractor(Labels())], str(items), 1.0)
    try:
        # a batch of test features is about 670 KB: the worker sends it without waiting for the engine
        assert fcntl.fcntl(worker._inbox.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_SIZE >= 700_000
    finally:
        worker.stop()


def test_a_page_the_worker_cannot_read_is_a_read_error(items: Path) -> None:
    worker = Worker.fork([BatchExtractor(Labels())], str(items), 1.0)
    try:
        batches = worker.extractions("labels", "SELECT id, label FROM nowhere", NEXT, None)
        with pytest.raises(WorkerReadError, match="no such table: nowhere"):
            asyncio.run(anext(batches))
        assert _flat(asyncio.run(_collect(worker))) != []  # and it still serves the next request
    finally:
        worker.stop()


class Oversteps(Labels):
    """Writes a column it does not declare on every third row: those rows fail their check."""

    def extract(self, row: Row) -> list[Upsert]:
        if row["id"] % 3 == 0:
            return [Upsert("labels", {"id": row["id"]}, {"secret": 1})]
        return super().extract(row)


def test_a_batch_checked_by_the_engine_equals_one_checked_by_the_worker() -> None:
    extract = BatchExtractor(Oversteps())
    rows = [(i, None if i % 5 == 0 else f"l{i}") for i in range(1, 16)]
    left = extract(rows, finish=False)
    unchecked = left.unchecked
    assert left.items == [] and unchecked is not None
    extract.finish(left)
    here = extract(rows)
    assert (left.keys, left.items, left.errors, left.needed, left.refs, left.unchecked) == (
        here.keys,
        here.items,
        here.errors,
        here.needed,
        here.refs,
        None,
    )
    # Failed extractions and failed checks, in key order either way.
    assert [(k, kind) for k, kind, _ in here.errors] == [
        (3, "plugin-bug"),
        (5, "missing"),
        (6, "plugin-bug"),
        (9, "plugin-bug"),
        (10, "missing"),
        (12, "plugin-bug"),
        (15, "plugin-bug"),
    ]


@pytest.mark.parametrize("finish", [True, False], ids=["checked", "unchecked"])
def test_changes_that_cannot_be_pickled_become_record_errors(finish: bool) -> None:
    extract = BatchExtractor(Labels(), plugin="labels-plugin 1.0")
    batch = extract([(1, "a"), (2, None), (3, "c"), (4, "d")], finish=finish)
    lock = threading.Lock()
    if finish:
        batch.items[2][1][0] = (*batch.items[2][1][0][:2], {"text": lock}, *batch.items[2][1][0][3:])
    else:
        assert batch.unchecked is not None
        table, key, _, defaults, refs, independent, children = batch.unchecked[2][1][0]
        batch.unchecked[2][1][0] = (table, key, {"text": lock}, defaults, refs, independent, children)
    kind, sent = pickle.loads(_pickled("batch", batch, extract))
    assert kind == "batch"
    extract.finish(sent)
    assert [item[0] for item in sent.items] == [1, 3]
    assert sent.needed == {("labels", ("id",)): {(1,), (3,)}}
    assert [(k, kind) for k, kind, _ in sent.errors] == [(2, "missing"), (4, "plugin-bug")]
    message = sent.errors[1][2]
    assert "cannot take" in message and "labels-plugin 1.0" in message


class Quits(Labels):
    """Raises what is not an Exception on one row: the worker cannot go on."""

    name = "quits"

    def extract(self, row: Row) -> list[Upsert]:
        if row["id"] == 9:
            raise SystemExit(3)
        return super().extract(row)


def test_extract_raising_system_exit_fails_the_run_naming_the_row(items: Path) -> None:
    worker = Worker.fork([BatchExtractor(Quits(), plugin="quits-plugin 2.0")], str(items), 1.0)
    try:
        batches = worker.extractions("quits", FIRST, NEXT, None)
        with pytest.raises(WorkerFailed) as e:
            asyncio.run(_drain(batches))
        message = str(e.value)
        assert "extractor 'quits' (quits-plugin 2.0) on the row with key 9" in message, message
        assert "SystemExit: 3" in message and "run the same command to resume" in message
        assert not worker.alive
    finally:
        worker.stop()


async def _drain(batches: Any) -> None:
    async for _ in batches:
        pass
