"""The ledger records a run's progress as a low-water mark (``backfill_runs.last_key``) plus the key
ranges committed above it (``backfill_ranges``): ranges committed in any order resume exactly,
and a run that commits in key order records no range.

The real ledger on a real SQLite file and on a scratch PostgreSQL database (when
BACKFILL_TEST_POSTGRES_URL is set), each checkpoint in a batch transaction of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backfill_core import RunOptions, RunReport, make_registry, resolve_url, run_backfill
from backfill_core.engine.batch import Converter
from backfill_core.engine.loop import BatchLoop
from backfill_core.engine.sources import Pages
from backfill_core.engine.stats import ErrorLog, ExtractorStats
from backfill_core.engine.writer import Writer
from backfill_core.store.database import Database
from backfill_core.store.ledger import FAILED, Ledger, RunState, complement, merged
from backfill_core.store.records import Delta, KeyRange
from backfill_plugins.testmanagement import plugin
from support.backends import GOOD, KINDS, Backend, MakeBackend, backends
from support.cli import run_cli
from support.postgres import empty_database

Span = tuple[Any, Any]
"""A key range as (after, upto)."""


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a scratch database on the PostgreSQL server."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        sqlite3.connect(path).close()
        yield str(path)
    else:
        with empty_database() as made:
            yield made


@pytest.fixture(params=KINDS)
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    with backends(request.param, tmp_path) as make:
        yield make


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[tuple[Database, Ledger]]:
    async with Database(resolve_url(url)) as db:
        ledger = Ledger(db)
        await ledger.ensure()
        yield db, ledger


async def begin(ledger: Ledger, *, restart: bool) -> RunState:
    return await ledger.begin(
        "x", plugin="p", version="1", invocation="i", plan="x", options={}, restart=restart
    )


async def commit(db: Database, ledger: Ledger, run: RunState, *spans: Span) -> None:
    """Commit each span in a batch transaction of its own, one processed row each."""
    for after, upto in spans:
        async with db.writing() as conn:
            await ledger.checkpoint(conn, run, KeyRange(after, upto), Delta(processed=1))


async def resumed(ledger: Ledger, run: RunState) -> RunState:
    """The run as the next process takes it up, once this one has failed."""
    await ledger.finish(run, FAILED)
    state = await begin(ledger, restart=False)
    assert (state.id, state.resumed) == (run.id, True)
    return state


async def recorded(db: Database, run_id: int) -> tuple[Any, list[Span], int]:
    """The run's low-water mark, its ranges (after, upto) in key order, and its processed count."""
    async with db.sqlalchemy() as conn:
        run: Sequence[Any] = (
            await conn.exec_driver_sql(f"SELECT last_key, processed FROM backfill_runs WHERE id = {run_id}")
        ).one()
        rows: Sequence[Sequence[Any]] = (
            await conn.exec_driver_sql(f"SELECT after, upto FROM backfill_ranges WHERE run_id = {run_id}")
        ).all()
    last, processed = run[0], run[1]
    spans = [(None if r[0] is None else json.loads(r[0]), json.loads(r[1])) for r in rows]
    spans.sort(key=lambda s: (s[0] is not None, s[0]))
    return (None if last is None else json.loads(last)), spans, processed


def ranges(*spans: Span) -> list[KeyRange]:
    return [KeyRange(a, u) for a, u in spans]


def test_an_ordered_run_records_no_range_and_resumes_after_its_last_key(url: str) -> None:
    async def body() -> None:
        async with opened(url) as (db, ledger):
            run = await begin(ledger, restart=True)
            assert run.todo == [KeyRange()]
            await commit(db, ledger, run, (None, 10), (10, 20), (20, 30))
            assert (run.last_key, run.ranged) == (30, False)
            assert await recorded(db, run.id) == (30, [], 3)
            again = await resumed(ledger, run)
            assert (again.last_key, again.todo, again.processed) == (30, [KeyRange(30)], 3)
            assert again.note == f"resuming run {run.id} of x from key 30"

    asyncio.run(body())


def test_ranges_committed_out_of_order_merge_and_advance_the_low_water_mark(url: str) -> None:
    async def body() -> None:
        async with opened(url) as (db, ledger):
            run = await begin(ledger, restart=True)
            steps: list[tuple[Span, Any, list[Span]]] = [
                ((20, 30), None, [(20, 30)]),
                ((40, 50), None, [(20, 30), (40, 50)]),
                ((30, 40), None, [(20, 50)]),  # merges the ranges on both sides
                ((60, 70), None, [(20, 50), (60, 70)]),
                ((None, 10), 10, [(20, 50), (60, 70)]),
                ((10, 20), 50, [(60, 70)]),  # reaches the mark, which absorbs (20, 50]
                ((50, 60), 70, []),
                ((70, 80), 80, []),  # back to the ordered case
            ]
            for n, (span, low, above) in enumerate(steps, 1):
                await commit(db, ledger, run, span)
                assert await recorded(db, run.id) == (low, above, n), f"after committing {span}"
                assert (run.last_key, run.ranged) == (low, bool(above)), f"after committing {span}"

    asyncio.run(body())


SHAPES: dict[str, tuple[list[Span], list[Span]]] = {
    "fresh": ([], [(None, None)]),
    "ordered": ([(None, 10), (10, 20)], [(20, None)]),
    "one-range-above-nothing": ([(20, 30)], [(None, 20), (30, None)]),
    "ranges-at-both-ends": ([(90, 100), (None, 10)], [(10, 90), (100, None)]),
    "several-gaps": (
        [(50, 60), (70, 80), (None, 10), (20, 30)],
        [(10, 20), (30, 50), (60, 70), (80, None)],
    ),
    "adjacent-ranges-merge": ([(40, 50), (30, 40), (None, 10)], [(10, 30), (50, None)]),
    "string-keys": ([("m", "p"), (None, "c")], [("c", "m"), ("p", None)]),
    "negative-keys": ([(-5, 0), (None, -10)], [(-10, -5), (0, None)]),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_resumed_run_has_the_ranges_left_to_do_in_key_order(url: str, shape: str) -> None:
    committed, todo = SHAPES[shape]

    async def body() -> None:
        async with opened(url) as (db, ledger):
            run = await begin(ledger, restart=True)
            await commit(db, ledger, run, *committed)
            again = await resumed(ledger, run)
            assert again.todo == ranges(*todo)
            assert again.processed == len(committed)

    asyncio.run(body())


def test_the_note_of_a_resumed_run_tells_of_its_ranges(url: str) -> None:
    async def body() -> None:
        async with opened(url) as (db, ledger):
            run = await begin(ledger, restart=True)
            await commit(db, ledger, run, (None, 10), (20, 30), (40, 50))
            again = await resumed(ledger, run)
            assert again.note == (
                f"resuming run {run.id} of x from key 10 (and 2 key ranges above it already committed)"
            )

    asyncio.run(body())


def test_a_rolled_back_checkpoint_records_nothing(url: str) -> None:
    async def body() -> None:
        async with opened(url) as (db, ledger):
            run = await begin(ledger, restart=True)
            await commit(db, ledger, run, (None, 10))
            for spans in ([(10, 20)], [(30, 40)], [(30, 40), (10, 20)]):
                with pytest.raises(RuntimeError):
                    async with db.writing() as conn:
                        for after, upto in spans:
                            await ledger.checkpoint(conn, run, KeyRange(after, upto), Delta(processed=1))
                        raise RuntimeError("the batch failed after its checkpoint")
                assert await recorded(db, run.id) == (10, [], 1), f"after rolling back {spans}"
            # The run's state ran ahead of the ledger; committing the same ranges again records
            # them where the ledger has them.
            await commit(db, ledger, run, (30, 40))
            assert await recorded(db, run.id) == (10, [(30, 40)], 2)
            await commit(db, ledger, run, (10, 20), (20, 30))
            assert await recorded(db, run.id) == (40, [], 4)
            assert (run.last_key, run.ranged) == (40, False)
            again = await resumed(ledger, run)
            assert again.todo == [KeyRange(40)]

    asyncio.run(body())


def test_a_checkpoint_without_a_range_records_only_counts(url: str) -> None:
    async def body() -> None:
        async with opened(url) as (db, ledger):
            run = await begin(ledger, restart=True)
            await commit(db, ledger, run, (20, 30))
            async with db.writing() as conn:
                await ledger.checkpoint(conn, run, None, Delta(processed=5), total=9)
            assert await recorded(db, run.id) == (None, [(20, 30)], 6)
            with pytest.raises(ValueError, match="ends at a key"):
                async with db.writing() as conn:
                    await ledger.checkpoint(conn, run, KeyRange(30), Delta())

    asyncio.run(body())


# -- any order of committing a partition gives back exactly what is left ------------------------------


@st.composite
def partitions(draw: st.DrawFn) -> tuple[list[Span], list[int], list[int]]:
    """Pieces (None, b1], (b1, b2], ... (bn-1, bn] of the integers, some of them (by index) in the
    order they are committed, and the others."""
    bounds = sorted(draw(st.sets(st.integers(-50, 50), min_size=1, max_size=8)))
    pieces: list[Span] = list(zip([None, *bounds[:-1]], bounds, strict=True))
    order = draw(st.permutations(range(len(pieces))))
    count = draw(st.integers(0, len(pieces)))
    return pieces, list(order[:count]), sorted(order[count:])


def expected_todo(pieces: Sequence[Span], left: Sequence[int]) -> list[KeyRange]:
    """The pieces not committed, touching ones joined, then all keys after the last piece."""
    todo: list[KeyRange] = []
    for after, upto in [*(pieces[i] for i in left), (pieces[-1][1], None)]:
        if todo and todo[-1].upto == after:
            todo[-1] = KeyRange(todo[-1].after, upto)
        else:
            todo.append(KeyRange(after, upto))
    return todo


def contains(todo: Sequence[KeyRange], key: int) -> bool:
    return any((r.after is None or r.after < key) and (r.upto is None or key <= r.upto) for r in todo)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(partition=partitions())
def test_any_order_of_commits_leaves_exactly_the_uncommitted_keys(
    url: str, partition: tuple[list[Span], list[int], list[int]]
) -> None:
    pieces, committed, left = partition

    async def body() -> list[KeyRange]:
        async with opened(url) as (db, ledger):
            run = await begin(ledger, restart=True)  # a new run on the same database each time
            await commit(db, ledger, run, *(pieces[i] for i in committed))
            low, above, processed = await recorded(db, run.id)
            assert processed == len(committed)
            assert low == merged(None, ranges(*(pieces[i] for i in committed)))[0]
            assert not above or low is None or above[0][0] > low
            return (await resumed(ledger, run)).todo

    todo = asyncio.run(body())
    assert todo == expected_todo(pieces, left)
    done = {k for i in committed for k in range(-51, 52) if contains(ranges(pieces[i]), k)}
    for key in range(-51, 52):
        assert contains(todo, key) != (key in done), key


@given(
    spans=st.lists(
        st.tuples(st.integers(-20, 20), st.integers(1, 10)).map(lambda t: (t[0], t[0] + t[1])),
        max_size=8,
    ),
    low=st.one_of(st.none(), st.integers(-20, 20)),
)
def test_merged_ranges_cover_the_same_keys_and_neither_touch_nor_reach_the_mark(
    spans: list[Span], low: int | None
) -> None:
    """``merged`` and ``complement`` as pure functions, over overlapping ranges too."""
    new_low, above = merged(low, ranges(*spans))

    def done(key: int) -> bool:
        return (low is not None and key <= low) or contains(ranges(*spans), key)

    for key in range(-25, 35):
        by_merge = (new_low is not None and key <= new_low) or contains(above, key)
        assert by_merge == done(key), key
        assert contains(complement(new_low, above), key) == (not done(key)), key
    for first, second in itertools.pairwise(above):
        assert first.upto < second.after
    if above and new_low is not None:
        assert above[0].after > new_low


# -- the real engine, and ledgers made before backfill_ranges -------------------------------------------


def run(db: Backend, *, batch_size: int = 3, dry_run: bool = False) -> tuple[RunReport, list[str]]:
    notes: list[str] = []
    options = RunOptions(batch_size=batch_size, dry_run=dry_run)
    report = RunReport(database=db.url, errors=ErrorLog(keep=100))
    coro = run_backfill(
        make_registry(plugin),
        ["test_features"],
        resolve_url(db.url),
        options,
        report,
        validate=False,
        announce=notes.append,
    )
    asyncio.run(coro)
    return report, notes


def test_the_engine_commits_an_ordered_run_without_ranges(make_db: MakeBackend) -> None:
    db = make_db([GOOD] * 10)
    report, _ = run(db)
    assert report.exit_code == 0
    assert db.rows("SELECT id, status, last_key, processed FROM backfill_runs") == [
        (1, "succeeded", "10", 10)
    ]
    assert db.rows("SELECT COUNT(*) FROM backfill_ranges") == [(0,)]


OLD_LEDGER = {
    "sqlite": """
CREATE TABLE backfill_runs (
    id INTEGER NOT NULL, extractor VARCHAR(200) NOT NULL, plugin TEXT, plugin_version TEXT,
    status VARCHAR(20) NOT NULL, invocation VARCHAR(32) NOT NULL, "plan" TEXT NOT NULL,
    retry_of INTEGER, batch_size INTEGER, options TEXT, last_key TEXT, total INTEGER,
    processed INTEGER DEFAULT '0' NOT NULL, inserted INTEGER DEFAULT '0' NOT NULL,
    updated INTEGER DEFAULT '0' NOT NULL, deleted INTEGER DEFAULT '0' NOT NULL,
    unchanged INTEGER DEFAULT '0' NOT NULL, record_errors INTEGER DEFAULT '0' NOT NULL,
    batch_errors INTEGER DEFAULT '0' NOT NULL, started_at DATETIME NOT NULL, finished_at DATETIME,
    heartbeat_at DATETIME NOT NULL, host TEXT, pid INTEGER, message TEXT, PRIMARY KEY (id));
CREATE INDEX ix_backfill_runs_extractor ON backfill_runs (extractor, id);
CREATE TABLE backfill_errors (
    id INTEGER NOT NULL, run_id INTEGER NOT NULL, "key" TEXT NOT NULL, tier VARCHAR(20) NOT NULL,
    kind VARCHAR(100) NOT NULL, message TEXT NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(run_id) REFERENCES backfill_runs (id));
CREATE INDEX ix_backfill_errors_run_key ON backfill_errors (run_id, "key");
""",
    "postgresql": """
CREATE TABLE backfill_runs (
    id SERIAL NOT NULL, extractor VARCHAR(200) NOT NULL, plugin TEXT, plugin_version TEXT,
    status VARCHAR(20) NOT NULL, invocation VARCHAR(32) NOT NULL, plan TEXT NOT NULL,
    retry_of INTEGER, batch_size INTEGER, options TEXT, last_key TEXT, total INTEGER,
    processed INTEGER DEFAULT '0' NOT NULL, inserted INTEGER DEFAULT '0' NOT NULL,
    updated INTEGER DEFAULT '0' NOT NULL, deleted INTEGER DEFAULT '0' NOT NULL,
    unchanged INTEGER DEFAULT '0' NOT NULL, record_errors INTEGER DEFAULT '0' NOT NULL,
    batch_errors INTEGER DEFAULT '0' NOT NULL, started_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    finished_at TIMESTAMP WITHOUT TIME ZONE, heartbeat_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    host TEXT, pid INTEGER, message TEXT, PRIMARY KEY (id));
CREATE INDEX ix_backfill_runs_extractor ON backfill_runs (extractor, id);
CREATE TABLE backfill_errors (
    id SERIAL NOT NULL, run_id INTEGER NOT NULL, key TEXT NOT NULL, tier VARCHAR(20) NOT NULL,
    kind VARCHAR(100) NOT NULL, message TEXT NOT NULL, created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(run_id) REFERENCES backfill_runs (id));
CREATE INDEX ix_backfill_errors_run_key ON backfill_errors (run_id, key);
""",
}
"""The ledger's tables as the previous schema (before backfill_ranges) created them."""

FAILED_RUN = (
    "INSERT INTO backfill_runs (extractor, plugin, plugin_version, status, invocation, plan, options, "
    "last_key, total, processed, started_at, heartbeat_at, host, pid, message) VALUES ('test_features', "
    "'testmanagement', '0', 'failed', 'abc', 'test_features', '{}', '4', 10, 4, "
    "'2024-01-01 00:00:00', '2024-01-01 00:00:01', 'elsewhere', 1, 'stopped')"
)


def _status(db: Backend) -> list[dict[str, Any]]:
    proc = run_cli(["status", "-d", db.url, "--json"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    runs: list[dict[str, Any]] = json.loads(proc.stdout)
    return runs


def test_a_ledger_of_the_previous_schema_is_migrated_in_place_and_resumed(make_db: MakeBackend) -> None:
    db = make_db([GOOD] * 10)
    for statement in OLD_LEDGER[db.kind].split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(FAILED_RUN)
    (before,) = _status(db)
    assert (before["status"], before["last_key"], before["processed"]) == ("failed", 4, 4)
    assert before["lock_retries"] == 0  # a column the old ledger lacks, read as 0
    assert "backfill_ranges" not in db.tables()

    report, _ = run(db, dry_run=True)
    assert report.exit_code == 0
    assert "backfill_ranges" not in db.tables(), "a dry run wrote to the database"

    report, notes = run(db)
    assert report.exit_code == 0
    assert "resuming run 1 of test_features from key 4" in notes
    assert "backfill_ranges" in db.tables()
    assert db.rows("SELECT COUNT(*) FROM backfill_ranges") == [(0,)]
    assert db.rows("SELECT id, status, last_key, processed FROM backfill_runs") == [
        (1, "succeeded", "10", 10)
    ]
    assert db.rows("SELECT lock_retries FROM backfill_runs") == [(0,)]  # the column added in place
    assert db.feature_tests() == list(range(5, 11))  # the rows after the old checkpoint
    (after,) = _status(db)
    assert (after["status"], after["last_key"], after["processed"]) == ("succeeded", 10, 10)

    # An old ledger with ranges left by an out-of-order run is read the same way once migrated.
    db.execute("UPDATE backfill_runs SET status = 'failed', last_key = '2'")
    db.execute("INSERT INTO backfill_ranges (run_id, after, upto) VALUES (1, '3', '5')")
    report, notes = run(db)
    assert report.exit_code == 0
    assert any(n.startswith("resuming run 1 of test_features from key 2 (and 1 key range") for n in notes)
    assert db.rows("SELECT COUNT(*) FROM backfill_ranges") == [(0,)]
    assert db.rows("SELECT last_key FROM backfill_runs") == [("10",)]


async def _out_of_order(url: str, todo: list[KeyRange], batch_size: int) -> None:
    """The real engine over ``todo``'s key ranges in that order, as a new run."""
    (extractor,) = make_registry(plugin).ordered(["test_features"])
    async with Database(resolve_url(url)) as db:
        ledger = Ledger(db)
        await ledger.ensure()
        options = RunOptions(batch_size=batch_size)
        x = Converter(extractor)
        await db.check_schema({extractor.source_table: x.cols, **x.written})
        loop = BatchLoop(db, Writer(db, x.name, x.written), options, ErrorLog(keep=10), ledger=ledger)
        state = await ledger.begin(
            "test_features", plugin="", version="0", invocation="i", plan="p", options={}, restart=True
        )
        state.todo = todo
        stats = await loop.run(Pages(db, x, state.todo, batch_size), ExtractorStats(x.name), state)
        assert stats.processed == 30


@pytest.mark.parametrize("again", [False, True], ids=["writing", "unchanged"])
def test_the_engine_commits_ranges_given_out_of_order_and_ends_with_one_mark(
    make_db: MakeBackend, again: bool
) -> None:
    """Batches of one range that changed nothing are folded into the next checkpoint only within
    their range: the ledger still ends with every key done, and no range left."""
    db = make_db([GOOD] * 30)
    if again:
        run(db)
    todo = ranges((12, 20), (None, 5), (25, None), (5, 12), (20, 25))
    asyncio.run(_out_of_order(db.url, todo, batch_size=4))
    assert db.feature_tests() == list(range(1, 31))
    latest = db.rows(
        "SELECT status, last_key, processed, total, inserted, unchanged FROM backfill_runs ORDER BY id"
    )[-1]
    assert latest == ("succeeded", "30", 30, 30, 0 if again else 30, 30 if again else 0)
    assert db.rows("SELECT COUNT(*) FROM backfill_ranges") == [(0,)]
