"""The run ledger: ``backfill_runs``, ``backfill_ranges`` and ``backfill_errors``, kept in the
target database.

A run's progress is a low-water mark (``backfill_runs.last_key``: every key up to it is done)
plus the key ranges committed above it (``backfill_ranges``), so key ranges can be committed in
any order and a resumed run processes exactly the rest; a run that commits its keys in order
records no range. A batch's checkpoint (its range and its counts) is written in the same
transaction as the batch's own writes, so after any crash the ledger and the data agree exactly.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Select,
    String,
    Table,
    Text,
    desc,
    insert,
    inspect,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.ext.asyncio import AsyncConnection

from backfill_core.errors import BackfillError, EnvironmentProblem
from backfill_core.store.connection import Connection, LockConflict, RowsRefused
from backfill_core.store.database import Database
from backfill_core.store.records import COUNTS, BatchSizes, Delta, KeyRange

RUNNING, SUCCEEDED, FAILED, INTERRUPTED = "running", "succeeded", "failed", "interrupted"
RESUMABLE = {FAILED, INTERRUPTED}
STALE_AFTER_ENV = "BACKFILL_STALE_AFTER"
DEFAULT_STALE_AFTER = 60.0

metadata = MetaData()
runs = Table(
    "backfill_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("extractor", String(200), nullable=False),
    Column("plugin", Text),
    Column("plugin_version", Text),
    Column("status", String(20), nullable=False),
    Column("invocation", String(32), nullable=False),
    Column("plan", Text, nullable=False),
    Column("retry_of", Integer),
    Column("batch_size", Integer),
    Column("options", Text),
    Column("last_key", Text),
    Column("total", Integer),
    *(Column(name, Integer, nullable=False, default=0, server_default="0") for name in COUNTS),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("heartbeat_at", DateTime, nullable=False),
    Column("host", Text),
    Column("pid", Integer),
    Column("message", Text),
    Column("batch_sizes", Text),
    Column("slowest_write", Float),
    Column("parts", Integer),
)
"""``batch_sizes``: how many committed batches read pages of each size (``BatchSizes.encode``);
``slowest_write``: the seconds the slowest of them held its write transaction; ``parts``: how
many key-range parts (``backfill_parts``) a distributed run's jobs process, NULL for a run of one
command."""
Index("ix_backfill_runs_extractor", runs.c.extractor, runs.c.id)
ranges = Table(
    "backfill_ranges",
    metadata,
    Column("run_id", Integer, ForeignKey("backfill_runs.id"), nullable=False),
    Column("after", Text),
    Column("upto", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "upto"),
)
"""The key ranges ``after < key <= upto`` (NULL ``after``: from the first key) a run has committed
above its ``last_key``, none of them touching it or each other; keys encoded as ``encode_key``."""
errors = Table(
    "backfill_errors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("backfill_runs.id"), nullable=False),
    Column("key", Text, nullable=False),
    Column("tier", String(20), nullable=False),
    Column("kind", String(100), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
)
Index("ix_backfill_errors_run_key", errors.c.run_id, errors.c.key)
run_parts = Table(
    "backfill_parts",
    metadata,
    Column("run_id", Integer, ForeignKey("backfill_runs.id"), nullable=False),
    Column("part", Integer, nullable=False),
    Column("after", Text),
    Column("upto", Text),
    Column("status", String(20), nullable=False),
    Column("job_id", BigInteger),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("host", Text),
    Column("pid", Integer),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("message", Text),
    PrimaryKeyConstraint("run_id", "part"),
)
"""The key ranges ``after < key <= upto`` (NULL: open) of a distributed run, one job each (see
app/distributed/): its ``status`` (PART_STATUSES) and the procrastinate job that processes it
(``job_id``), last taken up by ``pid`` on ``host``."""
QUEUED, DONE = "queued", "done"
PART_STATUSES = (QUEUED, RUNNING, DONE, FAILED)


def _missing_columns(conn: SyncConnection) -> tuple[str, ...]:
    """The columns of ``backfill_runs`` that a ledger made by an older backfill lacks."""
    have = {c["name"] for c in inspect(conn).get_columns(runs.name)}
    return tuple(c.name for c in runs.c if c.name not in have)


def now() -> datetime:
    """UTC now, naive: what SQLite and a TIMESTAMP WITHOUT TIME ZONE column round-trip."""
    return datetime.now(UTC).replace(tzinfo=None)


def encode_key(key: Any) -> str:
    """Keys are stored as JSON so an integer key comes back as an integer."""
    return json.dumps(key, default=str)


def decode_key(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _plain(key: Any) -> Any:
    """``key`` as the ledger gives it back (a key of a type JSON lacks, a date, as a string)."""
    return None if key is None else decode_key(encode_key(key))


def _same(a: Any, b: Any) -> bool:
    """Whether two keys (or two Nones) are the same key as the ledger records keys."""
    return bool(a == b) or encode_key(a) == encode_key(b)


def merged(low: Any, done: Sequence[KeyRange]) -> tuple[Any, list[KeyRange]]:
    """A low-water mark and committed ranges (each ending at a key), as the low-water mark that
    the ranges reaching it advance, and the other ranges in key order, touching ones merged.

    Keys compare as the ledger gives them back (see ``decode_key``): integers or strings.
    """
    out: list[KeyRange] = []
    for r in sorted(done, key=lambda r: (r.after is not None, r.after)):
        if out and (r.after is None or r.after <= out[-1].upto):
            if r.upto > out[-1].upto:
                out[-1] = KeyRange(out[-1].after, r.upto)
        else:
            out.append(r)
    while out and (out[0].after is None or (low is not None and out[0].after <= low)):
        reached = out.pop(0).upto
        low = reached if low is None or reached > low else low
    return low, out


def complement(low: Any, done: Sequence[KeyRange]) -> list[KeyRange]:
    """The key ranges still to do after the low-water mark ``low`` and the ranges ``done``
    above it (as ``merged`` gives them), in key order; the last is open-ended."""
    todo = []
    start = low
    for r in done:
        todo.append(KeyRange(start, r.after))
        start = r.upto
    todo.append(KeyRange(start))
    return todo


def stale_after() -> float:
    try:
        return float(os.environ.get(STALE_AFTER_ENV, DEFAULT_STALE_AFTER))
    except ValueError:
        return DEFAULT_STALE_AFTER


class RunInProgress(EnvironmentProblem):
    """Another live process is running the same extractor on the same database."""


@dataclass
class RunState:
    """A run as this process carries it on; its checkpoints keep ``last_key`` and ``ranged``."""

    id: int
    extractor: str
    last_key: Any = None
    """The low-water mark: every key up to it is done (None: none is)."""
    processed: int = 0
    """Rows the run had processed before this process took it up."""
    resumed: bool = False
    note: str | None = None
    todo: list[KeyRange] = field(default_factory=list)
    """The key ranges still to process, in key order; left empty, the keys after ``last_key``."""
    ranged: bool = False
    """Whether ``backfill_ranges`` may hold ranges of the run above ``last_key``."""
    batches: BatchSizes = field(default_factory=BatchSizes)
    """The run's committed batches, of every process that ran it (the batch loop adds this
    process's once each has committed)."""

    def __post_init__(self) -> None:
        if not self.todo:
            self.todo = [KeyRange(after=self.last_key)]


def is_live(row: Any, *, host: str, limit: float) -> bool:
    """Whether the process that owns a ``running`` row is still alive.

    On this host the process itself is asked (a long batch does not make it look dead); on
    another host, a heartbeat newer than ``limit`` seconds counts as alive. A distributed run
    (``parts`` set) is alive while it runs: its jobs wait in the queue, and a worker retries the
    job of a worker that died.
    """
    if row.parts:
        return True
    if row.host == host and row.pid:
        # Our own pid can only be a dead run's: in a container that restarted with the same
        # hostname, the new backfill is often pid 1 again.
        return row.pid != os.getpid() and _is_backfill_process(row.pid)
    age: float = (now() - row.heartbeat_at).total_seconds()
    return age < limit


def _is_backfill_process(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"backfill" in f.read()  # a reused pid belongs to some other program
    except OSError:
        return True  # no /proc: trust the pid


def run_summary(row: Any, host: str | None = None) -> dict[str, Any]:
    """A ledger row as ``backfill status`` shows it; a ``running`` run whose process is gone
    shows as ``dead`` (the next run takes it over)."""
    end = row.finished_at or row.heartbeat_at
    seconds = max((end - row.started_at).total_seconds(), 1e-9)
    return {
        "id": row.id,
        "extractor": row.extractor,
        "status": (
            "dead"
            if row.status == RUNNING and host is not None and not is_live(row, host=host, limit=stale_after())
            else row.status
        ),
        "plugin": row.plugin,
        "retry_of": row.retry_of,
        "processed": row.processed,
        "total": row.total,
        "inserted": row.inserted,
        "updated": row.updated,
        "deleted": row.deleted,
        "unchanged": row.unchanged,
        "record_errors": row.record_errors,
        "batch_errors": row.batch_errors,
        "errors": row.record_errors + row.batch_errors,
        "lock_retries": row.lock_retries,
        "rows_per_second": row.processed / seconds,
        "last_key": decode_key(row.last_key),
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "heartbeat_at": row.heartbeat_at,
        "host": row.host,
        "pid": row.pid,
        "options": json.loads(row.options) if row.options else None,
        "message": row.message,
        "batch_sizes": BatchSizes.decode(row.batch_sizes, row.slowest_write).to_dict(),
    }


class Ledger:
    """Reads and writes the ledger tables of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.host = socket.gethostname()
        self._lacks: tuple[str, ...] = ()

    @cached_property
    def _to_driver(self) -> Callable[[datetime], Any] | None:
        return runs.c.heartbeat_at.type.bind_processor(self.db.sa_dialect)

    def _timestamp(self, value: datetime) -> Any:
        """``value`` as SQLAlchemy would pass a DateTime parameter to this database's driver."""
        return value if self._to_driver is None else self._to_driver(value)

    async def exists(self) -> bool:
        """Whether the ledger tables exist; also notes the columns an older ledger lacks."""
        async with self.db.sqlalchemy() as conn:
            found: bool = await conn.run_sync(lambda sync: inspect(sync).has_table(runs.name))
            if found:
                self._lacks = await conn.run_sync(_missing_columns)
            return found

    async def ensure(self) -> None:
        """Create the ledger tables if they are missing (an older ledger gains
        ``backfill_ranges``), and add the columns an older ledger lacks (a real run does; a dry
        run never)."""
        async with self.db.sqlalchemy(write=True) as conn:
            await self.db.lock(conn, "backfill:ledger")  # commands starting at once create it once
            await conn.run_sync(lambda sync: metadata.create_all(sync, checkfirst=True))
            maybe = "" if self.db.is_sqlite else "IF NOT EXISTS "  # SQLite has no such clause
            for name in await conn.run_sync(_missing_columns):
                kind = "INTEGER NOT NULL DEFAULT 0" if name in COUNTS else str(runs.c[name].type)
                await conn.execute(text(f"ALTER TABLE {runs.name} ADD COLUMN {maybe}{name} {kind}"))
        self._lacks = ()

    def select_runs(self) -> Select[Any]:
        """``select(runs)``, reading the counts an older ledger lacks as 0."""
        if not self._lacks:
            return select(runs)
        return select(*(literal(0).label(c.name) if c.name in self._lacks else c for c in runs.c))

    async def begin(
        self,
        extractor: str,
        *,
        plugin: str,
        version: str,
        invocation: str,
        plan: str,
        options: dict[str, Any],
        restart: bool,
        retry_of: int | None = None,
        depends_on: Sequence[str] = (),
    ) -> RunState:
        """Resume the extractor's interrupted or failed run, take over a dead one, or start anew.

        With ``retry_of``, the same for the runs retrying that run's errors.
        """
        async with self.db.sqlalchemy(write=True) as conn:
            await self.db.lock(conn, f"backfill:{extractor}")
            latest = await self._latest_of_kind(conn, extractor, retry_of)
            running = await self._running(conn, runs.c.extractor == extractor)
            await self._refuse_while_dependencies_fill(conn, extractor, depends_on)
            self._refuse_while_running(extractor, running)
            dead = [row.id for row in running]  # none of them is live, or we would have refused
            stamp = now()
            if not restart and latest is not None and (latest.status in RESUMABLE or latest.id in dead):
                return await self._resume(
                    conn, extractor, latest, taking_over=latest.id in dead, invocation=invocation, stamp=stamp
                )
            await self._supersede(conn, dead)
            return await self._start(
                conn,
                extractor,
                plugin=plugin,
                version=version,
                invocation=invocation,
                plan=plan,
                options=options,
                retry_of=retry_of,
                stamp=stamp,
            )

    async def _latest_of_kind(self, conn: AsyncConnection, extractor: str, retry_of: int | None) -> Any:
        """The extractor's newest run of the same kind: a retry of ``retry_of``, or (None) no retry."""
        same_kind = runs.c.retry_of.is_(None) if retry_of is None else runs.c.retry_of == retry_of
        return (
            await conn.execute(
                self.select_runs()
                .where(runs.c.extractor == extractor, same_kind)
                .order_by(desc(runs.c.id))
                .limit(1)
            )
        ).first()

    async def _running(self, conn: AsyncConnection, which: ColumnElement[bool]) -> Sequence[Any]:
        """The ``running`` rows of the extractors ``which`` selects, live or dead."""
        query = self.select_runs().where(which, runs.c.status == RUNNING)
        rows: Sequence[Any] = (await conn.execute(query)).all()
        return rows

    def _first_live(self, running: Sequence[Any]) -> Any:
        """The first of ``running`` whose process is still alive, or None."""
        return next((row for row in running if is_live(row, host=self.host, limit=stale_after())), None)

    async def _refuse_while_dependencies_fill(
        self, conn: AsyncConnection, extractor: str, depends_on: Sequence[str]
    ) -> None:
        """Raise ``RunInProgress`` if a live run of an extractor in ``depends_on`` is filling."""
        if not depends_on:
            return
        row = self._first_live(await self._running(conn, runs.c.extractor.in_(depends_on)))
        if row is not None:
            where = "distributed" if row.parts else f"pid {row.pid} on {row.host}"
            raise RunInProgress(
                f"{extractor} depends on {row.extractor}, which run {row.id} is still "
                f"filling ({where}); wait for it to finish"
            )

    def _refuse_while_running(self, extractor: str, running: Sequence[Any]) -> None:
        """Raise ``RunInProgress`` if one of the extractor's ``running`` runs is live."""
        row = self._first_live(running)
        if row is not None and row.parts:
            raise RunInProgress(
                f"run {row.id} of {extractor} is distributed: its {row.parts} parts are queued for "
                "`backfill worker`; wait for it to finish (`backfill status`), or `backfill pause` it"
            )
        if row is not None:
            seen = (now() - row.heartbeat_at).total_seconds()
            raise RunInProgress(
                f"run {row.id} of {extractor} is already running (pid {row.pid} on {row.host}, "
                f"last heartbeat {seen:.0f}s ago); wait for it to finish or stop it first"
            )

    def _owner(self, stamp: datetime) -> dict[str, Any]:
        """This process as the owner of a run, with its heartbeat at ``stamp``."""
        return {"host": self.host, "pid": os.getpid(), "heartbeat_at": stamp}

    async def _resume(
        self,
        conn: AsyncConnection,
        extractor: str,
        latest: Any,
        *,
        taking_over: bool,
        invocation: str,
        stamp: datetime,
    ) -> RunState:
        """Carry on the run ``latest`` (a dead one when ``taking_over``) where its committed keys end."""
        await conn.execute(
            update(runs)
            .where(runs.c.id == latest.id)
            .values(
                status=RUNNING,
                invocation=invocation,
                finished_at=None,
                message=None,
                parts=None,
                **self._owner(stamp),
            )
        )
        last, done, ranged = await self.committed(conn, latest.id, decode_key(latest.last_key))
        where = f"from key {last}" if last is not None else "from the start"
        if done:
            where += f" (and {len(done)} key range{'s' * (len(done) > 1)} above it already committed)"
        how = "taking over" if taking_over else "resuming"
        note = f"{how} run {latest.id} of {extractor} {where}"
        return RunState(
            latest.id,
            extractor,
            last,
            latest.processed,
            resumed=True,
            note=note,
            todo=complement(last, done),
            ranged=ranged,
            batches=BatchSizes.decode(latest.batch_sizes, latest.slowest_write),
        )

    async def _supersede(self, conn: AsyncConnection, dead: Sequence[int]) -> None:
        """Mark the ``dead`` runs, which a new run replaces, interrupted."""
        if dead:
            await conn.execute(
                update(runs)
                .where(runs.c.id.in_(dead))
                .values(status=INTERRUPTED, message="its process died; superseded by a newer run")
            )

    async def _start(
        self,
        conn: AsyncConnection,
        extractor: str,
        *,
        plugin: str,
        version: str,
        invocation: str,
        plan: str,
        options: dict[str, Any],
        retry_of: int | None,
        stamp: datetime,
    ) -> RunState:
        """Record a new run of the extractor, started at ``stamp``."""
        result = await conn.execute(
            insert(runs).values(
                extractor=extractor,
                plugin=plugin,
                plugin_version=version,
                status=RUNNING,
                invocation=invocation,
                plan=plan,
                retry_of=retry_of,
                batch_size=options.get("batch_size"),
                options=json.dumps(options, sort_keys=True),
                started_at=stamp,
                **self._owner(stamp),
                **dict.fromkeys(COUNTS, 0),
            )
        )
        run_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        assert run_id is not None
        return RunState(int(run_id), extractor)

    async def committed(
        self, conn: AsyncConnection, run_id: int, last_key: Any
    ) -> tuple[Any, list[KeyRange], bool]:
        """The run's low-water mark and the ranges committed above it, in key order, merged;
        and whether ``backfill_ranges`` holds any row of the run."""
        rows = (
            await conn.execute(select(ranges.c.after, ranges.c.upto).where(ranges.c.run_id == run_id))
        ).all()
        low, done = merged(last_key, [KeyRange(decode_key(r.after), decode_key(r.upto)) for r in rows])
        return low, done, bool(rows)

    async def checkpoint(
        self,
        conn: Connection,
        run: RunState,
        done: KeyRange | None,
        delta: Delta,
        *,
        total: int | None = None,
        clear: tuple[int, Sequence[Any]] | None = None,
        batches: BatchSizes | None = None,
    ) -> None:
        """Record inside a batch's own transaction ``conn`` that the keys of ``done`` are
        committed (None: no progress to record), with ``delta``'s counts and errors.

        Ranges may be committed in any order; ``done.upto`` is a key. ``total`` sets the run's
        total, ``batches`` its batch sizes and slowest write, and ``clear`` (a run and keys)
        deletes that run's recorded errors of those keys.
        ``run.last_key`` and ``run.ranged`` follow what is recorded; a range that extends the
        low-water mark of a run that recorded no range is one statement, the others read the
        ledger. If ``conn``'s transaction then rolls back, ``run`` is ahead of the ledger, so the
        caller commits that range again (starting where the ledger's mark is), or nothing more.
        """
        if done is not None and done.upto is None:
            raise ValueError(f"a committed key range ends at a key, not at the end: {done}")
        extends = done is not None and not run.ranged and _same(done.after, run.last_key)
        assigned = ("heartbeat_at",) + ("last_key",) * extends + ("total",) * (total is not None)
        assigned += ("batch_sizes", "slowest_write") * (batches is not None)
        params = [getattr(delta, name) for name in COUNTS]
        params.append(self._timestamp(now()))
        if extends:
            assert done is not None
            params.append(encode_key(done.upto))
        if total is not None:
            params.append(total)
        if batches is not None:
            params += [batches.encode(), batches.slowest]
        params.append(run.id)
        # Driver-level SQL: this runs with every batch, and SQLAlchemy's statement handling would
        # cost more than the writes themselves.
        sql = self.db.statements.increment(runs.name, COUNTS, assigned, "id")
        await conn.execute(sql, params)
        if extends:
            assert done is not None
            run.last_key = done.upto
        elif done is not None:
            await self._record(conn, run, done)
        if clear is not None and clear[1]:
            old_run, keys = clear
            for i in range(0, len(keys), 1000):
                chunk = [encode_key(k) for k in keys[i : i + 1000]]
                sql = self.db.statements.delete_in(errors.name, "run_id", "key", len(chunk))
                await conn.execute(sql, [old_run, *chunk])
        if delta.errors:
            stamp = self._timestamp(now())
            columns = ("run_id", "key", "tier", "kind", "message", "created_at")
            await conn.execute_many(
                self.db.statements.insert(errors.name, columns),
                [(run.id, encode_key(e.key), e.tier, e.kind, e.message, stamp) for e in delta.errors],
            )

    async def _record(self, conn: Connection, run: RunState, done: KeyRange) -> None:
        """Add ``done`` to the run's low-water mark and ranges as the ledger holds them: the
        mark advances over the ranges that reach it, and ranges that touch merge."""
        st = self.db.statements
        ((stored,),) = await conn.fetch(st.lookup(runs.name, ("last_key",), ("id",), 1), [run.id])
        rows = await conn.fetch(st.lookup(ranges.name, ("after", "upto"), ("run_id",), 1), [run.id])
        low = decode_key(stored)
        recorded = [KeyRange(decode_key(after), decode_key(upto)) for after, upto in rows]
        plain = KeyRange(_plain(done.after), _plain(done.upto))
        new_low, kept = merged(low, [*recorded, plain])
        before = {(after, upto) for after, upto in rows}
        wanted = {(None if r.after is None else encode_key(r.after), encode_key(r.upto)) for r in kept}
        gone = [upto for _, upto in before - wanted]
        for i in range(0, len(gone), 1000):
            chunk = gone[i : i + 1000]
            await conn.execute(st.delete_in(ranges.name, "run_id", "upto", len(chunk)), [run.id, *chunk])
        added = sorted(wanted - before, key=lambda r: r[1])
        if added:
            insert_range = st.insert(ranges.name, ("run_id", "after", "upto"))
            await conn.execute_many(insert_range, [(run.id, a, u) for a, u in added])
        if not _same(new_low, low):
            set_low = st.increment(runs.name, (), ("last_key",), "id")
            await conn.execute(set_low, [encode_key(new_low), run.id])
        run.last_key, run.ranged = new_low, bool(kept)

    async def finish(
        self, run: RunState, status: str, message: str | None = None, *, lock_retries: int = 0
    ) -> bool:
        """Mark the run ended, with its batch sizes and slowest write, adding the ``lock_retries``
        of a batch that never committed; best effort, since the database may be what failed: True
        if it was recorded. LockConflict if another transaction's lock is to blame (trying again
        may succeed)."""
        try:
            async with self.db.sqlalchemy(write=True) as conn:
                ended: dict[str, Any] = {
                    "status": status,
                    "message": message,
                    "finished_at": now(),
                    "heartbeat_at": now(),
                    "batch_sizes": run.batches.encode(),
                    "slowest_write": run.batches.slowest,
                }
                if lock_retries:
                    ended["lock_retries"] = runs.c.lock_retries + lock_retries
                await conn.execute(update(runs).where(runs.c.id == run.id).values(**ended))
        except LockConflict:
            raise
        except (RowsRefused, BackfillError):
            return (
                False  # the run stays 'running'; its dead pid or stale heartbeat lets the next run take over
            )
        return True

    async def note(self, run_id: int, message: str) -> None:
        """Set the message ``backfill status`` shows for a run (a distributed run's validation)."""
        async with self.db.sqlalchemy(write=True) as conn:
            await conn.execute(update(runs).where(runs.c.id == run_id).values(message=message))

    # -- reading, for status, errors and --retry-errors ------------------------------------------

    async def recent(self, per_extractor: int = 5) -> list[Any]:
        if not await self.exists():
            return []
        async with self.db.sqlalchemy() as conn:
            rows = (await conn.execute(self.select_runs().order_by(runs.c.extractor, desc(runs.c.id)))).all()
        out: list[Any] = []
        seen: dict[str, int] = {}
        for row in rows:
            seen[row.extractor] = seen.get(row.extractor, 0) + 1
            if seen[row.extractor] <= per_extractor:
                out.append(row)
        return out

    async def run(self, run_id: int) -> Any:
        if not await self.exists():
            return None
        async with self.db.sqlalchemy() as conn:
            return (await conn.execute(self.select_runs().where(runs.c.id == run_id))).first()

    async def latest(self, extractor: str) -> Any:
        if not await self.exists():
            return None
        async with self.db.sqlalchemy() as conn:
            return (
                await conn.execute(
                    self.select_runs().where(runs.c.extractor == extractor).order_by(desc(runs.c.id)).limit(1)
                )
            ).first()

    async def latest_of(self, extractors: Sequence[str]) -> Any:
        """The newest non-retry run of any of ``extractors``."""
        if not await self.exists():
            return None
        async with self.db.sqlalchemy() as conn:
            return (
                await conn.execute(
                    self.select_runs()
                    .where(runs.c.extractor.in_(extractors), runs.c.retry_of.is_(None))
                    .order_by(desc(runs.c.id))
                    .limit(1)
                )
            ).first()

    async def succeeded_in(self, invocation: str) -> dict[str, int]:
        async with self.db.sqlalchemy() as conn:
            rows = await conn.execute(
                select(runs.c.extractor, runs.c.id).where(
                    runs.c.invocation == invocation, runs.c.status == SUCCEEDED
                )
            )
            return {r.extractor: r.id for r in rows}

    async def errors_of(self, run_id: int) -> list[Any]:
        async with self.db.sqlalchemy() as conn:
            return list(
                (
                    await conn.execute(select(errors).where(errors.c.run_id == run_id).order_by(errors.c.id))
                ).all()
            )

    async def error_keys(self, run_id: int) -> list[Any]:
        async with self.db.sqlalchemy() as conn:
            rows = await conn.execute(select(errors.c.key).where(errors.c.run_id == run_id).distinct())
            return [decode_key(r.key) for r in rows]
