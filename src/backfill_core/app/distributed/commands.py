"""``backfill enqueue`` and ``backfill worker``: a distributed run, queued and served."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

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
    checked,
    plugin_label,
    recorded_options,
    resumed,
    skipper,
)
from backfill_core.engine.batch import Converter
from backfill_core.engine.options import RunOptions
from backfill_core.errors import DatabaseUnavailable
from backfill_core.plugins import Registry
from backfill_core.store.controls import Controls
from backfill_core.store.database import Database
from backfill_core.store.ledger import RUNNING, STALE_AFTER_ENV, Ledger, stale_after
from backfill_core.store.parts import Parts

TASKS = ((PART_TASK, part_job), (VALIDATE_TASK, validate_job))
SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        return asdict(self)


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
        converters, _, _ = await checked(
            db,
            registry,
            converters,
            left_out,
            skip,
            explicit=explicit,
            validate=validate,
            thresholds=thresholds,
        )
        ran = [x.name for x in converters]
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
                serving, first, invocation=invocation, plan=",".join(ran), options=stored
            )
            return Enqueued(invocation, state.id, first.name, cut, rows, [x.name for x in todo[1:]], done)


async def _unstick(db: Database, ledger: Ledger, extractor: str, announce: Callable[[str], object]) -> None:
    """Mark failed the extractor's distributed run whose unfinished parts have no job left
    waiting or running (their jobs failed, or were deleted), so that it can be resumed."""
    latest = await ledger.latest(extractor)
    if latest is None or latest.status != RUNNING or not latest.parts or not await stuck(db, latest.id):
        return
    message = "none of its unfinished parts had a job left in the queue; resumed by a new `backfill enqueue`"
    await Parts(ledger).abandon(latest.id, message)
    announce(f"run {latest.id} of {extractor}: {message}")


async def serve(registry: Registry, url: URL, concurrency: int, announce: Callable[[str], object]) -> None:
    """Process the jobs of distributed runs on ``url``'s database until SIGINT or SIGTERM, which
    cancel the jobs running (each after its batch in flight) and put them back in the queue."""
    require_postgres(url, "worker")
    stale = stale_after()
    app = make_app(url, TASKS, timeout=stale)  # silent longer, it would count as dead anyway
    name = f"backfill@{socket.gethostname()}:{os.getpid()}"
    async with app.open_async(), Database(url) as db:
        await Ledger(db).ensure()
        await Controls(db).ensure()
        await ensure_schema(app, db, announce)
        announce(
            f"worker {name} serving {db.display_url} with {concurrency} job{'s' * (concurrency > 1)} at "
            "a time; SIGINT or SIGTERM stops it after the batches in flight"
        )
        from procrastinate.exceptions import ProcrastinateException
        from procrastinate.worker import Worker

        worker = Worker(
            app=app,
            queues=[QUEUE],
            name=name,
            concurrency=concurrency,
            shutdown_graceful_timeout=0,
            update_heartbeat_interval=stale / 6,
            stalled_worker_timeout=stale,
            additional_context={CONTEXT_KEY: Serving(registry, db, app, announce)},
            install_signal_handlers=False,
        )
        reaper = asyncio.create_task(retry_stalled(app, stale, announce))
        lost: Exception | None = None
        try:
            with _stopped_by_signals(worker) as signalled:
                await worker.run()  # type: ignore[no-untyped-call]
        except ProcrastinateException as e:  # its queue could not be reached
            lost = e
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        if not signalled:
            raise DatabaseUnavailable(
                f"worker {name} stopped without being asked: it lost its connection to {db.display_url} "
                "(see the lines above); start it again once the database answers"
            ) from lost
        if lost is not None:
            raise DatabaseUnavailable(
                f"worker {name} could not reach {db.display_url} while it stopped (see the lines above); "
                f"the jobs it had go back in the queue once it has been silent for {STALE_AFTER_ENV} seconds"
            ) from lost
    announce(f"worker {name} stopped")


@contextlib.contextmanager
def _stopped_by_signals(worker: Any) -> Iterator[list[int]]:
    """Within the block, SIGINT or SIGTERM stops ``worker`` (its jobs' batches in flight are
    committed first, see serve) and is listed in what the block gets; a second signal has its
    default effect."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
        worker.stop()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        yield received
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
