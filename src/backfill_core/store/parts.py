"""A distributed run's parts in the ledger (``backfill_parts``): taken up by a job, ended, counted.

Every part of a run is one job (see app/distributed/). A job takes its part up, processes the keys
of the part that the run's ledger does not yet record as committed, and ends it; the job that
ends the run's last part ends the run. Each of these steps holds the lock of the run's row in
``backfill_runs``, as every checkpoint of a batch does, so they see each other's effects whole.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from backfill_core.errors import BackfillError, EnvironmentProblem
from backfill_core.store.connection import Connection, LockConflict, RowsRefused
from backfill_core.store.database import Database
from backfill_core.store.ledger import (
    DONE,
    FAILED,
    INTERRUPTED,
    PART_STATUSES,
    QUEUED,
    RUNNING,
    STALE_AFTER_ENV,
    SUCCEEDED,
    Ledger,
    RunState,
    complement,
    decode_key,
    now,
    run_parts,
    runs,
)
from backfill_core.store.records import BatchSizes, Delta, KeyRange

ENDED = (DONE, FAILED)


@dataclass(frozen=True)
class Taken:
    """A part a job has taken up: its run's ledger row, the part's, the key ranges of the part
    still to process (in key order), the run's low-water mark, and which taking-up of the part
    this is (the part's ``attempts``: a later one fences this one off)."""

    run: Any
    part: Any
    todo: list[KeyRange]
    low: Any
    attempt: int


class PartTakenOver(EnvironmentProblem):
    """Another job took the part up since this one did: this one's worker was thought dead."""


def within(r: KeyRange, span: KeyRange) -> KeyRange | None:
    """The keys of ``r`` that are also in ``span`` (None when there are none)."""
    after = r.after if span.after is None or (r.after is not None and r.after > span.after) else span.after
    upto = r.upto if span.upto is None or (r.upto is not None and r.upto < span.upto) else span.upto
    if after is not None and upto is not None and after >= upto:
        return None
    return KeyRange(after, upto)


class Parts:
    """The parts of the distributed runs of one database."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.db: Database = ledger.db

    async def _locked_run(self, conn: AsyncConnection, run_id: int) -> Any:
        query = self.ledger.select_runs().where(runs.c.id == run_id).with_for_update()
        return (await conn.execute(query)).first()

    async def take(self, run_id: int, part: int, job_id: int, host: str) -> Taken | None:
        """Mark the part running in this process and say what is left of it; None when the job
        is not the part's (the part was cut again) or the part or its run has ended."""
        async with self.db.sqlalchemy(write=True) as conn:
            run = await self._locked_run(conn, run_id)
            if run is None or run.status != RUNNING:
                return None
            this = (run_parts.c.run_id == run_id) & (run_parts.c.part == part)
            row = (await conn.execute(select(run_parts).where(this))).first()
            if row is None or row.job_id != job_id or row.status in ENDED:
                return None
            await conn.execute(
                update(run_parts)
                .where(this)
                .values(
                    status=RUNNING,
                    attempts=run_parts.c.attempts + 1,
                    host=host,
                    pid=os.getpid(),
                    started_at=func.coalesce(run_parts.c.started_at, now()),
                    message=None,
                )
            )
            low, done, _ = await self.ledger.committed(conn, run_id, decode_key(run.last_key))
            span = KeyRange(decode_key(row.after), decode_key(row.upto))
            todo = [r for r in (within(t, span) for t in complement(low, done)) if r is not None]
            return Taken(run, row, todo, low, row.attempts + 1)

    async def end(
        self,
        run_id: int,
        part: int,
        attempt: int,
        status: str,
        message: str | None,
        batches: BatchSizes,
        lock_retries: int,
    ) -> str | None:
        """Record how the ``attempt`` at the part ended (a run status: an interrupted part goes
        back to the queue), adding its ``batches`` and ``lock_retries`` to the run's, unless a
        later attempt took the part over; the run's new status when this part was the last to end
        (succeeded when every part is done), else None."""
        async with self.db.sqlalchemy(write=True) as conn:
            run = await self._locked_run(conn, run_id)
            ending = {SUCCEEDED: DONE, INTERRUPTED: QUEUED}.get(status, FAILED)
            owned = await conn.execute(
                update(run_parts)
                .where(
                    (run_parts.c.run_id == run_id)
                    & (run_parts.c.part == part)
                    & (run_parts.c.attempts == attempt)
                )
                .values(
                    status=ending,
                    message=message if ending != DONE else None,
                    finished_at=now() if ending in ENDED else None,
                )
            )
            if not owned.rowcount:
                return None
            merged = BatchSizes.decode(run.batch_sizes, run.slowest_write).plus(batches)
            values: dict[str, Any] = {
                "heartbeat_at": now(),
                "batch_sizes": merged.encode(),
                "slowest_write": merged.slowest,
            }
            if lock_retries:
                values["lock_retries"] = runs.c.lock_retries + lock_retries
            rows = (
                await conn.execute(
                    select(run_parts.c.part, run_parts.c.status, run_parts.c.message)
                    .where(run_parts.c.run_id == run_id)
                    .order_by(run_parts.c.part)
                )
            ).all()
            ended = None
            if run.status == RUNNING and all(r.status in ENDED for r in rows):
                failed = [r for r in rows if r.status == FAILED]
                ended = FAILED if failed else SUCCEEDED
                values.update(status=ended, finished_at=now(), message=None)
                if failed:
                    values["message"] = (
                        f"{len(failed)} of its {len(rows)} parts failed, the first (part {failed[0].part}) "
                        f"with: {failed[0].message}; run the same `backfill enqueue` command to "
                        "process what they left"
                    )
            await conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            return ended

    async def abandon(self, run_id: int, message: str) -> None:
        """Mark the run failed with ``message`` if it is still running: its unfinished parts have
        no job left to end it (see ``queue.stuck``)."""
        async with self.db.sqlalchemy(write=True) as conn:
            await conn.execute(
                update(runs)
                .where((runs.c.id == run_id) & (runs.c.status == RUNNING))
                .values(status=FAILED, message=message)
            )

    async def counts(self, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """How many parts of each of the runs (those with parts) are in each status."""
        if not run_ids:
            return {}
        async with self.db.sqlalchemy() as conn:
            rows = await conn.execute(
                select(run_parts.c.run_id, run_parts.c.status, func.count())
                .where(run_parts.c.run_id.in_(run_ids))
                .group_by(run_parts.c.run_id, run_parts.c.status)
            )
            out: dict[int, dict[str, int]] = {}
            for run_id, status, n in rows:
                out.setdefault(run_id, dict.fromkeys(PART_STATUSES, 0))[status] = n
            return out


FENCE = (
    "UPDATE backfill_parts SET attempts = attempts WHERE run_id = $1 AND part = $2 AND attempts = $3 "
    "RETURNING part"
)
"""Holds the part's row until the batch commits, if the attempt still owns the part (PostgreSQL:
distributed runs need it)."""


class PartLedger(Ledger):
    """The ledger as the batch loop of one attempt at a part sees it: checkpoints go to the run,
    but the run's total and batch sizes are the run's own (set when it was cut into parts, and
    added to when each part ends), and the loop's end ends the part, not the run (see
    :meth:`Parts.end`). A batch of an attempt that another has taken over since is rolled back."""

    def __init__(self, parts: Parts, part: int, attempt: int) -> None:
        super().__init__(parts.db)
        self.parts = parts
        self.part = part
        self.attempt = attempt
        self.ended: str | None = None
        """The run's status if this part's end ended it."""

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
        run.ranged = True  # other parts' jobs commit ranges of the run too: always merge with them
        await super().checkpoint(conn, run, done, delta, clear=clear)
        # After the run's row, as taking a part up locks them: no deadlock.
        if not await conn.fetch(FENCE, [run.id, self.part, self.attempt]):
            raise PartTakenOver(
                f"part {self.part} of run {run.id} was taken up again by another worker, which found "
                f"this one silent for longer than {STALE_AFTER_ENV}; this batch is rolled back and "
                "the other worker carries the part on"
            )

    async def finish(
        self, run: RunState, status: str, message: str | None = None, *, lock_retries: int = 0
    ) -> bool:
        """End the part (best effort, as :meth:`Ledger.finish`): True if it was recorded."""
        try:
            self.ended = await self.parts.end(
                run.id, self.part, self.attempt, status, message, run.batches, lock_retries
            )
        except LockConflict:
            raise
        except (RowsRefused, BackfillError):
            return False  # the part stays 'running': its job is retried once its worker is gone
        return True
