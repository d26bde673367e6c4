"""The job queue of distributed runs: procrastinate's, kept in the target PostgreSQL database.

A part's job is deferred in the same transaction that records the part in the ledger, so every
recorded part has its job and every job its part. Nothing here imports procrastinate until a
distributed command needs it: it is the optional extra ``backfill[distributed]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import URL

from backfill_core.errors import DatabaseUnavailable, EnvironmentProblem, UsageError
from backfill_core.store.database import Database, display
from backfill_core.store.ledger import QUEUED, encode_key, now
from backfill_core.store.records import KeyRange

if TYPE_CHECKING:
    from procrastinate import App

QUEUE = "backfill"
"""The procrastinate queue of backfill's jobs (other applications' jobs may share the schema)."""
PART_TASK = "backfill.part"
VALIDATE_TASK = "backfill.validate"
SCHEMA_LOCK = "backfill:procrastinate-schema"
UNREACHABLE_TRIES = 10


def require_postgres(url: URL, command: str) -> None:
    if url.get_backend_name() != "postgresql":
        raise UsageError(
            f"`backfill {command}` needs PostgreSQL, where procrastinate keeps its job queue, not "
            f"{display(url)}; on SQLite, `backfill run --workers N` uses every core of one machine"
        )


def conninfo(url: URL) -> str:
    """``url`` as libpq (and so psycopg) reads it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def make_app(url: URL, tasks: Sequence[tuple[str, Callable[..., Any]]], *, timeout: float = 30.0) -> App:
    """A procrastinate App on ``url``'s database whose ``tasks`` (name, coroutine taking the job
    context first) are retried at once when their worker is stopped mid-job; its connections
    give up after ``timeout`` seconds without one."""
    try:
        import procrastinate
        from procrastinate.retry import BaseRetryStrategy, RetryDecision
    except ModuleNotFoundError as e:
        raise EnvironmentProblem(
            f"distributed runs need procrastinate and psycopg ({e.name} is not installed); "
            "run: pip install 'backfill[distributed]'"
        ) from None

    class Again(BaseRetryStrategy):
        """A job goes back in the queue at once when its worker stopped it (after its batch in
        flight), and after a wait when the database could not be reached (up to
        UNREACHABLE_TRIES times); a part's other failures are recorded in the ledger instead."""

        def get_retry_decision(self, *, exception: BaseException, job: Any) -> RetryDecision | None:
            if isinstance(exception, asyncio.CancelledError):
                return RetryDecision(retry_in={"seconds": 0})
            if isinstance(exception, DatabaseUnavailable) and job.attempts < UNREACHABLE_TRIES:
                return RetryDecision(retry_in={"seconds": min(2**job.attempts, 60)})
            return None

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(url), timeout=timeout))
    for name, work in tasks:
        app.task(name=name, queue=QUEUE, pass_context=True, retry=Again())(work)
    return app


async def ensure_schema(app: App, db: Database, announce: Callable[[str], object]) -> None:
    """Apply procrastinate's schema to the database if it lacks it, saying so in one line."""
    async with db.sqlalchemy(write=True) as conn:
        await db.lock(conn, SCHEMA_LOCK)  # two commands starting at once apply it once
        found = (await conn.execute(text("SELECT to_regclass('procrastinate_jobs')"))).scalar()
        if found is None:
            await app.schema_manager.apply_schema_async()
            announce(f"applied procrastinate's schema (its job queue) to {db.display_url}")


async def defer_parts(app: App, run_id: int, parts: Sequence[KeyRange], total: int) -> None:
    """Record the run's ``parts`` (replacing those of an earlier attempt) and its ``total``
    rows, and defer one job per part, in one transaction."""
    import psycopg
    from procrastinate.exceptions import ProcrastinateException

    try:
        await _defer_parts(app, run_id, parts, total)
    except (psycopg.Error, ProcrastinateException) as e:
        raise DatabaseUnavailable(f"could not queue the parts of run {run_id}: {e}") from e


async def _defer_parts(app: App, run_id: int, parts: Sequence[KeyRange], total: int) -> None:
    connector: Any = app.connector
    async with connector.pool.connection() as conn, conn.transaction():
        task = app.configure_task(PART_TASK, connection=conn)
        jobs: list[dict[str, Any]] = [{"run_id": run_id, "part": i} for i in range(len(parts))]
        ids = await task.batch_defer_async(*jobs)
        await conn.execute("DELETE FROM backfill_parts WHERE run_id = %s", [run_id])
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO backfill_parts (run_id, part, after, upto, status, job_id, attempts) "
                "VALUES (%s, %s, %s, %s, %s, %s, 0)",
                [
                    (
                        run_id,
                        i,
                        None if r.after is None else encode_key(r.after),
                        None if r.upto is None else encode_key(r.upto),
                        QUEUED,
                        job,
                    )
                    for i, (r, job) in enumerate(zip(parts, ids, strict=True))
                ],
            )
        await conn.execute(
            "UPDATE backfill_runs SET parts = %s, total = processed + %s, heartbeat_at = %s WHERE id = %s",
            [len(parts), total, now(), run_id],
        )


async def stuck(db: Database, run_id: int) -> bool:
    """Whether none of the run's unfinished parts has a job waiting or running: they failed, or
    someone deleted them, and no worker will end the run."""
    async with db.sqlalchemy() as conn:
        alive = await conn.execute(
            text(
                "SELECT COUNT(*) FROM backfill_parts p JOIN procrastinate_jobs j ON j.id = p.job_id "
                "WHERE p.run_id = :run AND p.status IN ('queued', 'running') "
                "AND j.status IN ('todo', 'doing')"
            ),
            {"run": run_id},
        )
        return not alive.scalar()


async def retry_stalled(app: App, stale: float, announce: Callable[[str], object]) -> None:
    """Put back in the queue, every ``stale`` / 2 seconds, the jobs of workers that have sent no
    heartbeat for ``stale`` seconds (killed, or cut off): another worker then takes them up."""
    from procrastinate.exceptions import ProcrastinateException

    while True:
        try:
            stalled = await app.job_manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=stale)
        except ProcrastinateException:  # the database is away: the worker's heartbeat will say so
            stalled = []
        for job in stalled:
            try:
                await app.job_manager.retry_job(job)
            except Exception:  # another worker put it back first
                continue
            announce(
                f"job {job.id} ({job.call_string}): its worker sent no heartbeat for {stale:g}s; retrying it"
            )
        await asyncio.sleep(stale / 2)
