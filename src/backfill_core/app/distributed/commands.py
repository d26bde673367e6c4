"""``backfill enqueue`` and ``backfill worker``: a distributed run, queued and served."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import URL

from backfill_core.app.distributed.jobs import CONTEXT_KEY, Serving, part_job, start, validate_job
from backfill_core.app.distributed.queue import (
    PART_TASK,
    QUEUE,
    VALIDATE_TASK,
    ensure_schema,
    make_app,
    require_postgres,
    retry_stalled,
    stuck,
)
from backfill_core.app.run import (
    Skipped,
    plugin_label,
    recorded_options,
    resumed,
    skipper,
    usable_extractors,
    usable_validators,
)
from backfill_core.app.validation import check_compiles, check_thresholds
from backfill_core.engine.batch import Converter
from backfill_core.engine.options import RunOptions
from backfill_core.errors import NothingToDo
from backfill_core.plugins import Registry
from backfill_core.store.controls import Controls
from backfill_core.store.database import Database
from backfill_core.store.ledger import FAILED, RUNNING, Ledger, runs, stale_after

TASKS = ((PART_TASK, part_job), (VALIDATE_TASK, validate_job))


@dataclass
class Enqueued:
    """What ``backfill enqueue`` queued: the first extractor's run (the others follow it)."""

    invocation: str
    run_id: int | None
    extractor: str | None
    parts: int
    rows: int
    following: list[str]
    completed: dict[str, int]
    """Extractors of the command that an earlier attempt completed, with their runs."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "invocation": self.invocation,
            "run_id": self.run_id,
            "extractor": self.extractor,
            "parts": self.parts,
            "rows": self.rows,
            "following": self.following,
            "completed": self.completed,
        }


async def enqueue(
    registry: Registry,
    names: Sequence[str],
    url: URL,
    options: RunOptions,
    *,
    parts: int,
    validate: bool,
    thresholds: Mapping[str, float],
    restart: bool,
    announce: Callable[[str], object],
    explicit: bool = True,
    skipped: list[Skipped] | None = None,
) -> Enqueued:
    """Record the run of the first of ``names`` (in dependency order) not yet completed, cut it
    into ``parts`` and queue their jobs; each following extractor is queued when the one before
    it succeeds, and validation after the last. An unfinished command is resumed, as by
    ``backfill run``."""
    require_postgres(url, "enqueue")
    converters = [Converter(x, plugin_label(registry, x.name)) for x in registry.ordered(names)]
    app = make_app(url, TASKS)
    left_out: list[Skipped] = []
    skip = skipper(left_out, skipped, announce)
    async with Database(url) as db:
        converters = await usable_extractors(db, registry, converters, explicit, skip)
        if not converters:
            raise NothingToDo(
                f"nothing to enqueue: every extractor was skipped, since {db.display_url} lacks tables "
                "they need (see the lines above)",
                [s.to_dict() for s in left_out],
            )
        ran = [x.name for x in converters]
        chosen = registry.validators_for(ran) if validate else []
        validators = await usable_validators(db, registry, chosen, False, "backfilling", skip)
        for x in converters:
            await db.check_schema({x.extractor.source_table: x.cols, **x.written})
        missing = {s.name: s.reason for s in left_out if s.kind == "validator"}
        check_thresholds(validators, thresholds, ran, missing)
        await check_compiles(db, validators, ran)
        ledger = Ledger(db)
        await ledger.ensure()
        await Controls(db).ensure()
        async with app.open_async():
            await ensure_schema(app, db, announce)
            invocation, done = uuid.uuid4().hex, dict[str, int]()
            if not restart:
                invocation, done = await resumed(ledger, ran) or (invocation, done)
            todo = [x for x in converters if x.name not in done]
            for name, run_id in done.items():
                announce(f"{name}: already completed in run {run_id} of this command")
            if not todo:
                return Enqueued(invocation, None, None, 0, 0, [], done)
            first = todo[0]
            await _unstick(db, ledger, first.name, announce)
            stored = {
                **recorded_options(options),
                "parts": parts,
                "validate": validate,
                "thresholds": dict(thresholds),
                "restart": restart,
            }
            serving = Serving(registry, db, app, announce)
            state, cut, rows = await start(
                serving, db, ledger, first, invocation=invocation, plan=",".join(ran), options=stored
            )
            return Enqueued(invocation, state.id, first.name, cut, rows, [x.name for x in todo[1:]], done)


async def _unstick(db: Database, ledger: Ledger, extractor: str, announce: Callable[[str], object]) -> None:
    """Mark failed the extractor's distributed run whose unfinished parts have no job left
    waiting or running (their jobs failed, or were deleted), so that it can be resumed."""
    latest = await ledger.latest(extractor)
    if latest is None or latest.status != RUNNING or not latest.parts or not await stuck(db, latest.id):
        return
    message = "none of its unfinished parts had a job left in the queue; resumed by a new `backfill enqueue`"
    async with db.sqlalchemy(write=True) as conn:
        await conn.execute(
            update(runs)
            .where((runs.c.id == latest.id) & (runs.c.status == RUNNING))
            .values(status=FAILED, message=message)
        )
    announce(f"run {latest.id} of {extractor}: {message}")


async def serve(registry: Registry, url: URL, concurrency: int, announce: Callable[[str], object]) -> None:
    """Process the jobs of distributed runs on ``url``'s database until SIGINT or SIGTERM, which
    cancel the jobs running (each after its batch in flight) and put them back in the queue."""
    require_postgres(url, "worker")
    app = make_app(url, TASKS)
    stale = stale_after()
    name = f"backfill@{socket.gethostname()}:{os.getpid()}"
    async with app.open_async(), Database(url) as db:
        await Ledger(db).ensure()
        await Controls(db).ensure()
        await ensure_schema(app, db, announce)
        announce(
            f"worker {name} serving {db.display_url} with {concurrency} job{'s' * (concurrency > 1)} at "
            "a time; SIGINT or SIGTERM stops it after the batches in flight"
        )
        reaper = asyncio.create_task(retry_stalled(app, stale, announce))
        try:
            await app.run_worker_async(
                queues=[QUEUE],
                name=name,
                concurrency=concurrency,
                shutdown_graceful_timeout=0,
                update_heartbeat_interval=stale / 6,
                stalled_worker_timeout=stale,
                additional_context={CONTEXT_KEY: Serving(registry, db, app, announce)},
            )
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
    announce(f"worker {name} stopped")
