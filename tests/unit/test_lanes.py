"""The parts of ``--workers N``: ``sources.split`` cuts key ranges into parts of as many source rows
each, from the keys as they are (on a real SQLite file and a scratch PostgreSQL database), and
``Lanes`` interleaves the batches of several sources, each taking parts from one queue."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill_core import make_registry, resolve_url
from backfill_core.engine import sources
from backfill_core.engine.batch import Batch, Converter
from backfill_core.engine.lanes import Lanes
from backfill_core.engine.sources import Work, count_rows, split
from backfill_core.store.database import Database
from backfill_core.store.records import KeyRange
from backfill_plugins.testmanagement import plugin
from support.backends import GOOD, KINDS, Backend, backends


@pytest.fixture(params=KINDS)
def sparse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Tests 1 to 100, then every seventh test up to 1,000: keys far from dense."""
    with backends(request.param, tmp_path) as make:
        db = make([GOOD] * 1000)
        db.execute("DELETE FROM tests WHERE id > 100 AND id % 7 <> 0")
        yield db


def _split(url: str, todo: list[KeyRange], parts: int) -> tuple[list[KeyRange], list[int], int]:
    """The parts, how many source rows each holds, and how many split counted in all."""

    async def go() -> tuple[list[KeyRange], list[int], int]:
        (extractor,) = make_registry(plugin).ordered(["test_features"])
        converter = Converter(extractor)
        async with Database(resolve_url(url)) as db:
            cut, counted = await split(db, converter, todo, parts)
            return cut, [await count_rows(db, converter, [r]) for r in cut], counted

    return asyncio.run(go())


def test_parts_hold_as_many_rows_each_however_sparse_the_keys(sparse: Backend) -> None:
    keys = [k for (k,) in sparse.rows("SELECT id FROM tests ORDER BY id")]
    assert len(keys) == 228
    parts, rows, counted = _split(sparse.url, [KeyRange()], 8)
    assert len(parts) == 8
    assert parts[0].after is None and parts[-1].upto is None  # the open end stays open
    assert all(a.upto == b.after for a, b in itertools.pairwise(parts))
    assert sum(rows) == counted == len(keys) and max(rows) - min(rows) <= 1, rows
    assert parts[0].upto == keys[228 // 8 - 1]  # where the rows, not the key values, say


def test_each_range_is_cut_apart_in_proportion_to_its_rows(sparse: Backend) -> None:
    todo = [KeyRange(None, 50), KeyRange(100, 700), KeyRange(900, None)]
    parts, rows, counted = _split(sparse.url, todo, 6)
    # 50, 86 and 14 rows: 2, 3 and 1 of the 6 parts
    assert rows == [25, 25, 28, 29, 29, 14] and counted == 150
    assert parts == [
        KeyRange(None, 25),
        KeyRange(25, 50),
        KeyRange(100, 294),
        KeyRange(294, 497),
        KeyRange(497, 700),
        KeyRange(900, None),
    ]


def test_a_range_is_cut_into_no_more_parts_than_it_has_rows(sparse: Backend) -> None:
    todo = [KeyRange(None, 3), KeyRange(5000, None)]
    parts, rows, _ = _split(sparse.url, todo, 16)
    assert rows == [1, 1, 1, 0]
    assert parts == [KeyRange(None, 1), KeyRange(1, 2), KeyRange(2, 3), KeyRange(5000, None)]


class Numbers:
    """A source of one-key batches: each key of the parts it takes, in order."""

    ranged, lanes = True, 1

    def __init__(self, todo: Iterable[KeyRange], took: list[KeyRange], pause: float) -> None:
        self.todo, self.took, self.pause, self.size = todo, took, pause, 1

    async def count(self) -> int:
        return 0

    async def batches(self) -> AsyncGenerator[Work, None]:
        for part in self.todo:
            self.took.append(part)
            for key in range(part.after + 1, part.upto + 1):
                await asyncio.sleep(self.pause)
                yield Work(Batch([key]), KeyRange(key - 1, key))


def _lanes(pauses: list[float], parts: list[KeyRange], took: list[list[KeyRange]]) -> Lanes:
    def make(i: int) -> Any:
        return lambda todo: Numbers(todo, took[i], pauses[i])

    return Lanes([make(i) for i in range(len(pauses))], parts, 42, 1)


def test_lanes_give_every_batch_once_tagged_with_its_lane() -> None:
    parts = [KeyRange(k, k + 5) for k in range(0, 40, 5)]
    took: list[list[KeyRange]] = [[], []]
    lanes = _lanes([0.001, 0.004], parts, took)

    async def go() -> list[Work]:
        return [w async for w in lanes.batches()]

    works = asyncio.run(go())
    assert sorted(w.done.upto for w in works if w.done) == list(range(1, 41))
    for lane in (0, 1):  # each lane's batches in key order, from the parts it took
        mine = [w.done.upto for w in works if w.lane == lane and w.done]
        assert mine == sorted(mine) and mine == [
            k for p in took[lane] for k in range(p.after + 1, p.upto + 1)
        ]
    assert sorted(took[0] + took[1], key=lambda p: p.after) == parts
    assert len(took[0]) > len(took[1])  # the faster lane took more parts
    assert lanes.lanes == 2 and asyncio.run(lanes.count()) == 42


def test_closing_lanes_early_stops_every_lane() -> None:
    took: list[list[KeyRange]] = [[], [], []]
    lanes = _lanes([0.001] * 3, [KeyRange(k, k + 10) for k in range(0, 100, 10)], took)

    async def go() -> int:
        stream = lanes.batches()
        seen = [await anext(stream) for _ in range(4)]
        await stream.aclose()
        await asyncio.sleep(0.05)  # a lane still running would take more parts meanwhile
        return len(seen)

    assert asyncio.run(go()) == 4
    assert sum(len(t) for t in took) == 3  # one part each, none taken after the close
    lanes.size = 7
    assert all(source.size == 7 for source in lanes.sources)


def test_rows_deleted_after_the_count_leave_the_rest_as_one_part(
    sparse: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sources.count_rows

    async def counted_before_a_delete(db: Database, converter: Converter, todo: Any) -> int:
        return await real(db, converter, todo) + 100  # 100 rows since deleted by the application

    monkeypatch.setattr(sources, "count_rows", counted_before_a_delete)
    parts, _, _ = _split(sparse.url, [KeyRange(None, 700)], 4)
    # 186 rows counted as 286: cuts after rows 71 and 143, and the third would fall past row 186
    assert parts[0].after is None and parts[-1] == KeyRange(parts[-2].upto, 700)
    assert len(parts) == 3 and all(a.upto == b.after for a, b in itertools.pairwise(parts))
