"""A process playing the test-management application: it writes steadily to the built-in job's
tables beside a backfill, and records every write's latency and every failure.

Run as a script (``python tests/support/application.py DATABASE LOG [--rate N] [--seed N]
[--spare TEST_ID]...``) on a SQLite file (the application's way: WAL as the file has it, foreign
keys off, a 5 s busy timeout, each write transaction begun with ``BEGIN IMMEDIATE``) or a
``postgresql://`` URL (asyncpg, one connection). Each write is one transaction doing what the
application's sync does (``TestRepository``/``BugRepository`` in testio-mcp 0.4.0, see
docs/builtin-job.md):

* ``sync-test``: a test's JSON changes (a feature's title and flags, sometimes one more feature
  listed); ``tests.data`` is updated and every listed feature upserted into ``test_features``;
* ``new-test``: a new test and its features;
* ``new-bug``: a new bug of a synced test, attributed to one of its features (or to none);
* ``update-bug``: a bug of a synced test changes status and test feature, in ``raw_data`` and in
  ``test_feature_id`` alike.

Only tests whose listed features are all well formed are touched, and a bug is only attributed to
a test feature the application wrote, so what it writes is what the backfill derives from the same
source rows. It never removes a listed feature, and leaves the ``--spare`` tests and their bugs
alone.

Every write appends one JSON line to LOG (``op``, ``at`` on the system's monotonic clock,
``ms``, the ``tests`` and ``bugs`` it touched, ``error`` or null), flushed at once: the line
count is its progress. SIGTERM ends it after the write in flight; it exits 0.

``Application`` is the tests' and the benchmark's handle on such a process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

BUSY_TIMEOUT = 5.0
"""The application's SQLite busy timeout (Python's default): a write waiting longer fails."""
OPS = ("sync-test", "new-test", "new-bug", "update-bug")
WEIGHTS = (4, 1, 3, 2)
STATUSES = ("accepted", "rejected", "forwarded")


class Db(Protocol):
    """One connection; ``?`` placeholders on both databases."""

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]: ...
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def begin(self) -> None: ...
    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...
    async def close(self) -> None: ...


class SqliteDb:
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        self.conn.execute("PRAGMA foreign_keys = OFF")

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, args).fetchall()

    async def execute(self, sql: str, *args: Any) -> None:
        self.conn.execute(sql, args)

    async def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    async def close(self) -> None:
        self.conn.close()


def _numbered(sql: str) -> str:
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


class PostgresDb:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.tx: Any = None

    @classmethod
    async def connect(cls, url: str) -> PostgresDb:
        import asyncpg

        return cls(await asyncpg.connect(url, server_settings={"application_name": "busy-application"}))

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.conn.fetch(_numbered(sql), *args)]

    async def execute(self, sql: str, *args: Any) -> None:
        await self.conn.execute(_numbered(sql), *args)

    async def begin(self) -> None:
        self.tx = self.conn.transaction()
        await self.tx.start()

    async def commit(self) -> None:
        await self.tx.commit()
        self.tx = None

    async def rollback(self) -> None:
        if self.tx is not None:
            await self.tx.rollback()
            self.tx = None

    async def close(self) -> None:
        await self.conn.close()


UPSERT_FEATURE = """
INSERT INTO test_features (id, customer_id, test_id, feature_id, title, description, howtofind,
                           user_stories, enable_default, enable_content, enable_visual)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, test_id = excluded.test_id,
    feature_id = excluded.feature_id, title = excluded.title, description = excluded.description,
    howtofind = excluded.howtofind, user_stories = excluded.user_stories,
    enable_default = excluded.enable_default, enable_content = excluded.enable_content,
    enable_visual = excluded.enable_visual
"""


@dataclass
class AppTest:
    """A test as the application knows it: its JSON and its bugs."""

    id: int
    customer: int
    product: int
    doc: dict[str, Any]
    bugs: list[int] = field(default_factory=list)


class App:
    """The application's state (what it knows of the cache) and its writes."""

    def __init__(self, db: Db, rng: random.Random, spare: frozenset[int] = frozenset()) -> None:
        self.db = db
        self.rng = rng
        self.spare = spare
        """Tests it leaves alone, with their features and bugs."""
        self.clean: list[AppTest] = []
        """Tests whose every listed feature is well formed: the ones it syncs."""
        self.synced: list[AppTest] = []
        """Tests whose features it has written: the ones whose bugs it writes."""
        self.synced_ids: set[int] = set()
        self.catalogue: dict[int, list[dict[str, Any]]] = {}
        """product id -> its features, as the platform lists them."""
        self.customer: dict[int, int] = {}
        self.next_test = self.next_bug = self.next_feature = 0
        self.serial = 0

    async def load(self) -> None:
        for fid, product, title, description, howtofind, stories in await self.db.fetch(
            "SELECT id, product_id, title, description, howtofind, user_stories FROM features"
        ):
            self.catalogue.setdefault(product, []).append(
                {
                    "id": fid,
                    "title": title,
                    "description": description,
                    "howtofind": howtofind,
                    "user_stories": json.loads(stories),
                }
            )
        self.customer = dict(await self.db.fetch("SELECT id, customer_id FROM products"))
        by_id: dict[int, AppTest] = {}
        top_feature = 0
        for tid, customer, product, data in await self.db.fetch(
            "SELECT id, customer_id, product_id, data FROM tests ORDER BY id"
        ):
            self.next_test = max(self.next_test, tid + 1)
            try:
                doc = json.loads(data)
            except ValueError:
                continue
            listed = doc.get("features") if isinstance(doc, dict) else None
            if not isinstance(listed, list) or not all(isinstance(f, dict) for f in listed):
                continue
            ids = [f.get("id") for f in listed]
            top_feature = max([top_feature, *(i for i in ids if type(i) is int)])
            known = {f["id"] for f in self.catalogue.get(product, [])}
            if (
                tid not in self.spare
                and listed
                and all(type(i) is int and i > 0 for i in ids)
                and all(f.get("feature_id") in known and isinstance(f.get("title"), str) for f in listed)
            ):
                by_id[tid] = AppTest(tid, customer, product, doc)
        self.clean = list(by_id.values())
        for bid, tid in await self.db.fetch("SELECT id, test_id FROM bugs ORDER BY id"):
            self.next_bug = max(self.next_bug, bid + 1)
            if tid in by_id:
                by_id[tid].bugs.append(bid)
        (written,) = (await self.db.fetch("SELECT coalesce(max(id), 0) FROM test_features"))[0]
        self.next_feature = max(top_feature, written) + 1

    def _listed(self, product: int, exclude: set[int]) -> dict[str, Any] | None:
        choices = [f for f in self.catalogue[product] if f["id"] not in exclude]
        if not choices:
            return None
        feature = self.rng.choice(choices)
        listed = {
            "id": self.next_feature,
            "feature_id": feature["id"],
            "title": feature["title"],
            "description": feature["description"],
            "howtofind": feature["howtofind"],
            "user_stories": feature["user_stories"],
            "enable_default": self.rng.choice((True, False, None)),
        }
        self.next_feature += 1
        return listed

    async def _write_features(self, test: AppTest) -> None:
        """``_upsert_test_feature`` for every listed feature, in id order."""
        for f in sorted(test.doc["features"], key=lambda f: f["id"]):
            await self.db.execute(
                UPSERT_FEATURE,
                *(f["id"], test.customer, test.id, f["feature_id"], f.get("title", "")),
                *(f.get("description"), f.get("howtofind"), json.dumps(f.get("user_stories") or [])),
                *(bool(f.get(flag)) for flag in ("enable_default", "enable_content", "enable_visual")),
            )

    def _synced(self, test: AppTest) -> None:
        if test.id not in self.synced_ids:
            self.synced_ids.add(test.id)
            self.synced.append(test)

    async def sync_test(self) -> tuple[list[int], list[int]]:
        test = self.rng.choice(self.clean)
        self.serial += 1
        features = test.doc["features"]
        changed = self.rng.choice(features)
        changed["title"] = f"Feature revised by the application ({self.serial})"
        changed["enable_visual"] = not changed.get("enable_visual")
        if self.rng.random() < 0.3:
            extra = self._listed(test.product, {f["feature_id"] for f in features})
            if extra is not None:
                features.append(extra)
        await self.db.execute(
            "UPDATE tests SET data = ?, status = ? WHERE id = ?",
            json.dumps(test.doc),
            self.rng.choice(("running", "locked", "archived")),
            test.id,
        )
        await self._write_features(test)
        self._synced(test)
        return [test.id], []

    async def new_test(self) -> tuple[list[int], list[int]]:
        product = self.rng.choice(sorted(self.catalogue))
        test = AppTest(
            self.next_test, self.customer[product], product, {"id": self.next_test, "features": []}
        )
        self.next_test += 1
        for _ in range(self.rng.randint(1, 3)):
            listed = self._listed(product, {f["feature_id"] for f in test.doc["features"]})
            if listed is not None:
                test.doc["features"].append(listed)
        test.doc["title"] = f"Test created by the application ({test.id})"
        await self.db.execute(
            "INSERT INTO tests (id, customer_id, product_id, data, status, title) VALUES (?, ?, ?, ?, ?, ?)",
            test.id,
            test.customer,
            product,
            json.dumps(test.doc),
            "running",
            test.doc["title"],
        )
        await self._write_features(test)
        self.clean.append(test)
        self._synced(test)
        return [test.id], []

    def _attribution(self, test: AppTest) -> int | None:
        if self.rng.random() < 0.05:
            return None
        return int(self.rng.choice(test.doc["features"])["id"])

    async def new_bug(self) -> tuple[list[int], list[int]]:
        if not self.synced:
            return await self.sync_test()
        test = self.rng.choice(self.synced)
        bug, feature = self.next_bug, self._attribution(test)
        self.next_bug += 1
        status = self.rng.choice(STATUSES)
        raw = {
            "id": bug,
            "title": f"Bug {bug}",
            "status": status,
            "test": {"id": test.id},
            "test_feature": None if feature is None else {"id": feature},
        }
        await self.db.execute(
            "INSERT INTO bugs (id, customer_id, test_id, title, status, raw_data, test_feature_id, known)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            bug,
            test.customer,
            test.id,
            raw["title"],
            status,
            json.dumps(raw),
            feature,
            False,
        )
        test.bugs.append(bug)
        return [], [bug]

    async def update_bug(self) -> tuple[list[int], list[int]]:
        with_bugs = [t for t in self.synced if t.bugs]
        if not with_bugs:
            return await self.new_bug()
        test = self.rng.choice(with_bugs)
        bug = self.rng.choice(test.bugs)
        status = self.rng.choice(STATUSES)
        ((text,),) = await self.db.fetch("SELECT raw_data FROM bugs WHERE id = ?", bug)
        try:
            raw = json.loads(text)
        except ValueError:
            raw = None
        if not isinstance(raw, dict):  # a damaged cache row: only the column changes
            await self.db.execute("UPDATE bugs SET status = ? WHERE id = ?", status, bug)
            return [], [bug]
        feature = self._attribution(test)
        raw["status"] = status
        raw["test_feature"] = None if feature is None else {"id": feature}
        await self.db.execute(
            "UPDATE bugs SET status = ?, raw_data = ?, test_feature_id = ? WHERE id = ?",
            status,
            json.dumps(raw),
            feature,
            bug,
        )
        return [], [bug]


async def _connect(database: str) -> Db:
    if database.startswith(("postgresql://", "postgres://")):
        return await PostgresDb.connect(database)
    return SqliteDb(database)


async def play(database: str, log: Path, rate: float, seed: int, spare: frozenset[int]) -> None:
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    db = await _connect(database)
    app = App(db, random.Random(seed), spare)
    await app.load()
    ops = {
        "sync-test": app.sync_test,
        "new-test": app.new_test,
        "new-bug": app.new_bug,
        "update-bug": app.update_bug,
    }
    interval = 1 / rate
    due = time.monotonic()
    with log.open("a", buffering=1) as out:
        while not stopping:
            op = app.rng.choices(OPS, WEIGHTS)[0]
            start = time.monotonic()
            error = None
            touched: tuple[list[int], list[int]] = ([], [])
            began = committing = start
            try:
                await db.begin()
                began = time.monotonic()
                touched = await ops[op]()
                committing = time.monotonic()
                await db.commit()
            except Exception as e:  # every failure is recorded, and the application goes on
                error = f"{type(e).__name__}: {e}"
                try:
                    await db.rollback()
                except Exception as again:
                    error += f" (and the rollback failed: {again})"
            end = time.monotonic()
            line = {
                "op": op,
                "at": start,
                "ms": (end - start) * 1000,
                "begin_ms": (began - start) * 1000,
                "commit_ms": (end - committing) * 1000 if committing > began else 0.0,
                "tests": touched[0],
                "bugs": touched[1],
                "error": error,
            }
            out.write(json.dumps(line) + "\n")
            due = max(due + interval, time.monotonic() - interval)
            pause = due - time.monotonic()
            if pause > 0 and not stopping:
                time.sleep(pause)  # the application's own pace, not a wait on anything
    await db.close()


# -- the handle --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    op: str
    at: float
    ms: float
    """From the start of the transaction to the end of its commit (or rollback)."""
    begin_ms: float
    """Of which waiting for the transaction to begin (SQLite's write lock: ``BEGIN IMMEDIATE``)."""
    commit_ms: float
    """Of which committing."""
    tests: tuple[int, ...]
    bugs: tuple[int, ...]
    error: str | None


@dataclass(frozen=True)
class Latency:
    writes: int
    median: float
    p99: float
    max: float

    @classmethod
    def of(cls, writes: Sequence[Write]) -> Latency:
        ms = sorted(w.ms for w in writes)
        if not ms:
            return cls(0, 0.0, 0.0, 0.0)
        return cls(len(ms), statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1])

    def __str__(self) -> str:
        return (
            f"{self.writes} writes: median {self.median:.1f} ms, p99 {self.p99:.1f} ms, max {self.max:.1f} ms"
        )


class Application:
    """The application process, started on ``database`` and logging to ``log``."""

    def __init__(
        self, database: str, log: Path, *, rate: float = 100, seed: int = 1, spare: Sequence[int] = ()
    ) -> None:
        self.log = log
        self._err = log.with_suffix(".stderr").open("w")
        spared = [a for t in spare for a in ("--spare", str(t))]
        self.popen = subprocess.Popen(
            [sys.executable, __file__, database, str(log), "--rate", str(rate), "--seed", str(seed), *spared],
            stderr=self._err,
            stdin=subprocess.DEVNULL,
        )

    def writes(self) -> list[Write]:
        """The writes done so far (complete lines only)."""
        if not self.log.exists():
            return []
        text = self.log.read_text()
        lines = text.split("\n")[:-1]  # the last piece is empty or still being written
        out = []
        for line in lines:
            d = json.loads(line)
            out.append(
                Write(
                    *(d["op"], d["at"], d["ms"], d["begin_ms"], d["commit_ms"]),
                    *(tuple(d["tests"]), tuple(d["bugs"]), d["error"]),
                )
            )
        return out

    def count(self) -> int:
        return self.log.read_text().count("\n") if self.log.exists() else 0

    def wait_writes(self, n: int, timeout: float = 300) -> None:
        """Wait until it has done ``n`` writes in all (an event: the timeout only guards a hang)."""
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if self.popen.poll() is not None:
                raise AssertionError(f"the application exited with {self.popen.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the application did not reach {n} writes in {timeout}s")
            time.sleep(0.02)

    def stderr(self) -> str:
        self._err.flush()
        return self.log.with_suffix(".stderr").read_text()

    def stop(self) -> list[Write]:
        """SIGTERM, wait for it to finish its write in flight, and return every write."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        rc = self.popen.wait(timeout=120)
        self._err.close()
        assert rc == 0, f"the application exited with {rc}: {self.stderr()}"
        return self.writes()

    def kill(self) -> None:
        """Teardown: end the process if a failed test left it running."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=30)
        self._err.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("database", help="a SQLite file or a postgresql:// URL")
    parser.add_argument("log", type=Path, help="file to append one JSON line per write to")
    parser.add_argument("--rate", type=float, default=100, help="writes per second (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--spare", type=int, action="append", default=[], help="a test id to leave alone, with its bugs"
    )
    args = parser.parse_args(argv)
    asyncio.run(play(args.database, args.log, args.rate, args.seed, frozenset(args.spare)))


if __name__ == "__main__":
    main()
