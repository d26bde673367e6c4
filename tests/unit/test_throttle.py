"""The brakes between batches (engine/throttle.py): ``--max-rows-per-second``,
``--sleep-between-batches`` and the plugins' throttles (the ``register_throttles`` hook), through
the real engine (``run_backfill``) on a SQLite file and on a scratch PostgreSQL database.

Durations are only bounded below: a run of N rows at R rows per second cannot end sooner than
N / R seconds, however fast or loaded the machine is.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill_core import RunOptions, RunReport, hookimpl, make_registry, resolve_url, run_backfill
from backfill_core.engine.stats import ErrorLog
from backfill_core.engine.throttle import Brakes, ThrottleFailed, View
from backfill_core.store.controls import Controls, extractor_target
from backfill_core.store.database import Database
from backfill_core.store.ledger import Ledger
from backfill_core.throttle import DatabaseView, Throttle, Wait
from backfill_plugins.testmanagement import plugin
from backfill_plugins.throttles import ReplicaLag
from support.backends import GOOD, KINDS, Backend, MakeBackend, backends
from support.postgres import empty_database, needs_server


@pytest.fixture(params=KINDS)
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    with backends(request.param, tmp_path) as make:
        yield make


def run(db: Backend, options: RunOptions, *plugins: object) -> tuple[RunReport, list[str], float]:
    """Run test_features; the report, the lines announced and the seconds the run took."""
    said: list[str] = []
    report = RunReport(database=db.url, errors=ErrorLog(keep=100))
    registry = make_registry(plugin, *plugins)
    started = time.monotonic()
    asyncio.run(
        run_backfill(
            registry,
            ["test_features"],
            resolve_url(db.url),
            options,
            report,
            validate=False,
            announce=said.append,
        )
    )
    return report, said, time.monotonic() - started


def test_max_rows_per_second_is_a_lower_bound_on_the_run_time(make_db: MakeBackend) -> None:
    rows, rate = 300, 500.0
    db = make_db([GOOD] * rows)

    report, said, seconds = run(db, RunOptions(batch_size=50, max_rows_per_second=rate))

    assert seconds >= rows / rate * 0.9
    assert report.extractors[0].processed == rows
    assert db.feature_tests() == list(range(1, rows + 1))
    assert said.count("test_features: waiting: at most 500 rows/s (--max-rows-per-second)") == 1


def test_sleep_between_batches_waits_before_every_batch_but_the_first(make_db: MakeBackend) -> None:
    db = make_db([GOOD] * 300)

    report, said, seconds = run(db, RunOptions(batch_size=100, sleep_between_batches=0.25))

    assert seconds >= 2 * 0.25 * 0.9  # three batches: two sleeps
    assert report.extractors[0].processed == 300
    assert db.feature_tests() == list(range(1, 301))
    assert said.count("test_features: waiting: 0.25s between batches (--sleep-between-batches)") == 1


def test_without_brakes_nothing_waits(make_db: MakeBackend) -> None:
    db = make_db([GOOD] * 100)

    _, said, _ = run(db, RunOptions(batch_size=10))

    assert not [line for line in said if "waiting" in line]


class Gate(Throttle):
    """Asks to wait on its first ``closed`` checks, then lets every batch go; it reads the
    database through its view each time."""

    name = "gate"

    def __init__(self, closed: int) -> None:
        self.closed = closed
        self.seen: list[tuple[str, str, int, Any]] = []

    async def check(self, db: DatabaseView) -> Wait | None:
        ((tests,),) = await db.fetch(
            "SELECT count(*) FROM tests WHERE customer_id = :customer", {"customer": 7}
        )
        self.seen.append((db.kind, db.extractor, tests, db.options["batch_size"]))
        if len(self.seen) <= self.closed:
            return Wait(0.2, f"gate closed ({len(self.seen)} of {self.closed})")
        return None


def throttle_plugin(throttle: Throttle) -> object:
    class GatePlugin:
        @hookimpl
        def register_throttles(self, register: Callable[[Throttle], None]) -> None:
            register(throttle)

    return GatePlugin()


def test_a_plugin_throttle_makes_the_run_wait_then_lets_it_go(make_db: MakeBackend) -> None:
    db = make_db([GOOD] * 30)
    gate = Gate(closed=2)

    report, said, seconds = run(db, RunOptions(batch_size=10), throttle_plugin(gate))

    assert seconds >= 2 * 0.2 * 0.9
    # Asked before every batch, and again after each wait: 2 closed answers, then 3 batches go.
    assert gate.seen == [(db.kind, "test_features", 30, 10)] * 5
    assert [line for line in said if "gate" in line] == [
        "test_features: waiting: gate closed (1 of 2) (throttle 'gate')",
        "test_features: waiting: gate closed (2 of 2) (throttle 'gate')",
        "test_features: throttle 'gate' lets the run go on",
    ]
    assert report.extractors[0].processed == 30
    assert db.feature_tests() == list(range(1, 31))


class Broken(Throttle):
    name = "broken_gate"

    async def check(self, db: DatabaseView) -> Wait | None:
        raise RuntimeError("lost its connection to the monitoring system")


class Wrong(Throttle):
    name = "wrong_gate"

    async def check(self, db: DatabaseView) -> Wait | None:
        return 5  # type: ignore[return-value]  # a plugin's bug, on purpose


class Forever(Throttle):
    name = "forever_gate"

    async def check(self, db: DatabaseView) -> Wait | None:
        return Wait(math.inf, "never")  # would hold the run until a signal


@pytest.mark.parametrize(
    ("throttle", "shown"),
    [
        (Broken(), "RuntimeError: lost its connection to the monitoring system"),
        (Wrong(), "answered 5; a throttle returns None or Wait(seconds >= 0, reason)"),
        (Forever(), "answered Wait(seconds=inf, reason='never'); a throttle returns None or Wait("),
    ],
    ids=["raises", "answers-nonsense", "waits-forever"],
)
def test_a_failing_throttle_stops_the_run_before_a_write_and_names_the_plugin(
    make_db: MakeBackend, throttle: Throttle, shown: str
) -> None:
    db = make_db([GOOD] * 20)

    with pytest.raises(ThrottleFailed) as failed:
        run(db, RunOptions(batch_size=10), throttle_plugin(throttle))

    message = str(failed.value)
    assert f"throttle {throttle.name!r} (plugin GatePlugin)" in message
    assert shown in message
    assert "--disable-plugin GatePlugin" in message and "run the same command to resume" in message
    assert db.runs() == [(1, "test_features", "failed", 0, 0)]
    assert db.feature_tests() == []

    report, _, _ = run(db, RunOptions(batch_size=10))  # without it, the same command resumes the run

    assert report.extractors[0].run_id == 1
    assert db.feature_tests() == list(range(1, 21))


@pytest.mark.parametrize(
    ("registered", "shown"),
    [
        (object(), "which is not a Throttle instance"),
        (type("Nameless", (Throttle,), {})(), "it has no name"),
    ],
    ids=["not-a-throttle", "nameless"],
)
def test_register_throttles_refuses_what_is_not_a_named_throttle(registered: Any, shown: str) -> None:
    class Bad:
        @hookimpl
        def register_throttles(self, register: Callable[[Any], None]) -> None:
            register(registered)

    registry = make_registry(plugin, Bad())

    info = next(p for p in registry.plugins if p.name == "Bad")
    assert info.status == "error" and info.error is not None and shown in info.error
    assert registry.throttles() == []


class FakeTime:
    """A clock that only moves when the brakes sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.naps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


def brakes(options: RunOptions, fake: FakeTime) -> Brakes:
    made = Brakes(None, options, clock=fake.clock, sleep=fake.sleep)  # type: ignore[arg-type]  # no database needed
    made.begin("x", None)
    return made


def test_the_rate_is_paid_before_each_batch_and_naps_never_exceed_a_second() -> None:
    fake = FakeTime()
    paced = brakes(RunOptions(max_rows_per_second=20), fake)

    asyncio.run(paced.before(50))  # 50 rows at 20 rows/s: 2.5 s before the first batch
    assert fake.now == 2.5 and max(fake.naps) <= 1.0
    fake.now += 0.2  # the batch took 0.2 s, which counts towards the next one's wait
    asyncio.run(paced.before(10))
    assert fake.now == pytest.approx(3.0)  # 60 rows at 20 rows/s
    fake.now += 1.0  # a slow batch: the next one is already due
    asyncio.run(paced.before(10))

    assert fake.now == pytest.approx(4.0)


def test_time_unused_since_the_last_batch_earns_no_burst() -> None:
    fake = FakeTime()
    paced = brakes(RunOptions(max_rows_per_second=20), fake)
    asyncio.run(paced.before(10))  # 0.5 s
    fake.now += 10.0  # a long throttle wait, or a stalled batch

    started = fake.now
    for _ in range(3):
        asyncio.run(paced.before(10))

    assert fake.now - started == pytest.approx(1.0)  # the first goes at once, the next two pace


def test_sleep_between_batches_skips_the_first_and_counts_from_the_call() -> None:
    fake = FakeTime()
    paced = brakes(RunOptions(sleep_between_batches=1.5), fake)

    asyncio.run(paced.before(10))
    assert fake.now == 0.0
    asyncio.run(paced.before(10))
    asyncio.run(paced.before(10))

    assert fake.now == 3.0


def on_postgres(test: Callable[..., None]) -> Callable[..., None]:
    """Marked as a PostgreSQL test, skipped without the server."""
    for mark in needs_server:
        test = mark(test)
    return test


class Replicas(ReplicaLag):
    """The built-in throttle over replicas given as rows of the same shape as its query's, read
    from the real server (which has none of its own)."""

    def __init__(self, rows: str) -> None:
        self.query = rows


async def check_lag(url: str, throttle: Throttle, limit: float | None) -> tuple[Wait | None, list[str]]:
    noted: list[str] = []
    async with Database(resolve_url(url)) as db:
        view = View(db, {"max_replica_lag": limit}, "test_features", noted.append)
        return await throttle.check(view), noted


REPLICAS = "SELECT 'db2', '10.0.0.2', 7.5::float8, true UNION ALL SELECT '', '10.0.0.3', 1.0::float8, true"


@pytest.mark.parametrize(
    ("limit", "waits"),
    [
        (5.0, Wait(2.5, "replica db2 replays 7.5s behind, over --max-replica-lag 5")),
        (7.2, Wait(0.5, "replica db2 replays 7.5s behind, over --max-replica-lag 7.2")),  # at least 0.5 s
        (0.0, Wait(7.5, "replica db2 replays 7.5s behind, over --max-replica-lag 0")),
        (7.5, None),  # at the limit: go
        (None, None),  # not asked for
    ],
)
@on_postgres
def test_replica_lag_waits_while_the_most_lagging_replica_is_over_the_limit(
    limit: float | None, waits: Wait | None
) -> None:
    with empty_database() as url:
        assert asyncio.run(check_lag(url, Replicas(REPLICAS), limit)) == (waits, [])
        # The real query, on a server without replicas: a note, no wait.
        wait, noted = asyncio.run(check_lag(url, ReplicaLag(), limit))
    assert wait is None
    assert noted == ([] if limit is None else [NO_REPLICAS])


NO_REPLICAS = "--max-replica-lag: the server has no replicas (pg_stat_replication is empty); not throttling"


@on_postgres
def test_replica_lag_refuses_to_guess_when_the_role_cannot_see_the_lag() -> None:
    hidden = Replicas("SELECT 'db2', '', 0::float8, false")  # what a role without pg_monitor reads
    with empty_database() as url:
        wait, noted = asyncio.run(check_lag(url, hidden, 1.0))
    assert wait is None
    assert noted == [
        "--max-replica-lag: this role cannot read replay_lag in pg_stat_replication (grant it pg_monitor "
        "or pg_read_all_stats); not throttling"
    ]


def test_a_throttle_is_asked_again_once_its_wait_is_over_in_naps_of_a_second() -> None:
    fake = FakeTime()
    asked_at: list[float] = []

    class Twice(Throttle):
        name = "twice"

        async def check(self, db: DatabaseView) -> Wait | None:
            asked_at.append(fake.now)
            return Wait(2.5, "busy") if len(asked_at) <= 2 else None

    said: list[str] = []
    paced = Brakes(None, RunOptions(), [("p", Twice())], said.append, clock=fake.clock, sleep=fake.sleep)  # type: ignore[arg-type]
    paced.begin("x", None)

    asyncio.run(paced.before(10))

    assert asked_at == [0.0, 2.5, 5.0]
    assert fake.naps == [1.0, 1.0, 0.5] * 2
    assert said == ["x: waiting: busy (throttle 'twice')", "x: throttle 'twice' lets the run go on"]


class Bar:
    """A progress bar that keeps what it was told to show after the count."""

    def __init__(self) -> None:
        self.postfixes: list[str] = []

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        self.postfixes.append(s)


async def paused_then_resumed(url: str) -> tuple[list[str], list[str], list[float]]:
    """A run's brakes held by a pause on its extractor, which is lifted during the first nap."""
    fake = FakeTime()
    said: list[str] = []
    bar = Bar()
    async with Database(resolve_url(url)) as db:
        await Ledger(db).ensure()
        controls = Controls(db)
        await controls.change(extractor_target("test_features"), paused=True)

        async def nap(seconds: float) -> None:
            await fake.sleep(seconds)
            if len(fake.naps) == 2:
                await controls.change(extractor_target("test_features"), paused=False)

        paced = Brakes(db, RunOptions(), (), said.append, controls, clock=fake.clock, sleep=nap)
        paced.begin("test_features", 1, bar)
        await paced.before(10)
    return bar.postfixes, said, fake.naps


def test_a_paused_run_shows_paused_on_its_bar_until_resumed(make_db: MakeBackend) -> None:
    db = make_db([GOOD])

    postfixes, said, naps = asyncio.run(paused_then_resumed(db.url))

    assert postfixes == ["paused", ""]
    assert said == [
        "test_features: paused (`backfill pause test_features` holds every run of test_features); "
        "waiting until `backfill resume test_features`. Ctrl-C still interrupts",
        "test_features: resumed",
    ]
    assert naps == [1.0, 1.0]  # the controls are read again after each nap
