"""The jobs of a distributed run, as ``backfill worker`` runs them.

A run of one extractor is cut into parts (key ranges holding about as many source rows each), one
job each. A part's job runs the batch loop of ``backfill run`` over the keys of its part that the
run's ledger does not yet record as committed, on its own connection: a job retried after its
worker died carries on from the part's last checkpoint. The job that ends a run's last part ends
the run; when the run succeeded it cuts the next extractor of the command into parts, or, after
the last, defers the validation job.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from typing import TYPE_CHECKING, Any

from backfill_core.app.distributed.queue import VALIDATE_TASK, defer_parts
from backfill_core.app.report import metric_figures
from backfill_core.app.run import plugin_label, skipper, usable_validators, version_of, writer_for
from backfill_core.app.validation import run_validators
from backfill_core.engine.batch import Converter
from backfill_core.engine.loop import BatchLoop
from backfill_core.engine.options import RunOptions
from backfill_core.engine.retry import retried
from backfill_core.engine.sources import Pages, split
from backfill_core.engine.stats import ErrorLog, ExtractorStats
from backfill_core.engine.throttle import Brakes
from backfill_core.errors import BackfillError
from backfill_core.plugins import Registry
from backfill_core.store.controls import Controls
from backfill_core.store.database import Database
from backfill_core.store.ledger import FAILED, SUCCEEDED, Ledger, RunState
from backfill_core.store.parts import PartLedger, Parts
from backfill_core.store.records import BatchSizes

if TYPE_CHECKING:
    from procrastinate import App
    from procrastinate.job_context import JobContext

CONTEXT_KEY = "backfill"
"""Where a job finds its worker's :class:`Serving` in procrastinate's job context."""


@dataclass
class Serving:
    """What a worker's jobs share: the plugins, the database (its connection pool), the queue,
    the log, and the extractors whose tables were found as they need them."""

    registry: Registry
    db: Database
    app: App
    announce: Callable[[str], object]
    host: str = field(default_factory=socket.gethostname)
    checked: set[str] = field(default_factory=set)

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.db)


def stored_options(run: Any) -> dict[str, Any]:
    """What a distributed run recorded of its command (its RunOptions, and ``parts``,
    ``validate``, ``thresholds``, ``restart``), from its ledger row."""
    stored: dict[str, Any] = json.loads(run.options or "{}")
    return stored


def run_options(stored: dict[str, Any]) -> RunOptions:
    """The RunOptions among what a distributed run recorded (see :func:`stored_options`)."""
    names = {f.name for f in fields(RunOptions)}
    return RunOptions(**{k: v for k, v in stored.items() if k in names})


async def start(
    serving: Serving,
    converter: Converter,
    *,
    invocation: str,
    plan: str,
    options: dict[str, Any],
) -> tuple[RunState, int, int]:
    """Begin (or resume) the extractor's run, cut what it has left into parts and queue a job per
    part: the run, its parts and rows."""
    x, ledger = converter.extractor, serving.ledger
    state = await retried(
        partial(
            ledger.begin,
            x.name,
            plugin=converter.plugin,
            version=version_of(serving.registry, x.name),
            invocation=invocation,
            plan=plan,
            options=options,
            restart=bool(options.get("restart")),
            depends_on=x.depends_on,
        ),
        int(options.get("lock_retries", 0)),
        what=f"{x.name}: starting its run in the ledger",
        announce=serving.announce,
    )
    if state.note:
        serving.announce(state.note)
    try:
        parts, rows = await split(serving.db, converter, state.todo, int(options["parts"]))
        await defer_parts(serving.app, state.id, parts, rows)
    except BackfillError as e:
        await ledger.finish(state, FAILED, f"its parts could not be queued: {e}")
        raise
    serving.announce(f"{x.name}: run {state.id} queued as {len(parts)} parts of {rows} rows in all")
    return state, len(parts), rows


async def part_job(context: JobContext, run_id: int, part: int) -> None:
    """Process one part of a run (see the module's docstring)."""
    serving: Serving = context.additional_context[CONTEXT_KEY]
    assert context.job.id is not None
    await process_part(serving, run_id, part, context.job.id)


async def process_part(serving: Serving, run_id: int, part: int, job_id: int) -> None:
    say, db, ledger = serving.announce, serving.db, serving.ledger
    parts = Parts(ledger)
    taken = await parts.take(run_id, part, job_id, serving.host)
    if taken is None:
        say(f"run {run_id} part {part}: nothing to do (the part or its run has ended, or it was cut again)")
        return
    run, name = taken.run, taken.run.extractor
    options = run_options(stored_options(run))
    where = f"run {run_id} of {name}, part {part}"
    try:
        converter = Converter(serving.registry.extractor(name), plugin_label(serving.registry, name))
        if name not in serving.checked:
            await db.check_schema({converter.extractor.source_table: converter.cols, **converter.written})
            serving.checked.add(name)
        writer = await writer_for(db, converter, options)
    except BackfillError as e:
        message = f"the worker on {serving.host} cannot process it: {e}"
        say(f"{where}: {message}")
        ended = await parts.end(run_id, part, taken.attempt, FAILED, message, BatchSizes(), 0)
        if ended:
            say(f"run {run_id} of {name} ended: {ended}")
        return
    state = RunState(run_id, name, taken.low, run.processed, ranged=True, todo=taken.todo)
    brakes = Brakes(db, options, serving.registry.throttles(), say, Controls(db))
    part_ledger = PartLedger(parts, part, taken.attempt)
    loop = BatchLoop(db, writer, options, ErrorLog(), None, part_ledger, say, brakes)
    stats = ExtractorStats(name, plugin=converter.plugin)
    began = time.perf_counter()
    outcome = "done"
    try:
        await loop.run(Pages(db, converter, taken.todo, options.batch_size), stats, state)
        if stats.stopped:
            outcome = f"failed: {stats.stopped}"
    except BackfillError as e:
        outcome = f"failed: {e}"
    say(
        f"{where}: {outcome}; {stats.processed} rows, {stats.error_count} errors in "
        f"{time.perf_counter() - began:.1f}s"
    )
    if part_ledger.ended:
        say(f"run {run_id} of {name} ended: {part_ledger.ended}")
    if part_ledger.ended == SUCCEEDED:
        await advance(serving, run)


async def advance(serving: Serving, run: Any) -> None:
    """After the succeeded ``run``: start the next extractor of its command, or validate."""
    plan = run.plan.split(",")
    stored = stored_options(run)
    following = plan[plan.index(run.extractor) + 1 :]
    if following:
        name = following[0]
        try:
            converter = Converter(serving.registry.extractor(name), plugin_label(serving.registry, name))
            await start(serving, converter, invocation=run.invocation, plan=run.plan, options=stored)
        except BackfillError as e:
            message = (
                f"{name}, which follows it, could not start: {e}; run the same `backfill enqueue` "
                "command to go on"
            )
            serving.announce(f"run {run.id} of {run.extractor}: {message}")
            await serving.ledger.note(run.id, message)
    elif stored.get("validate", True):
        await serving.app.configure_task(VALIDATE_TASK).defer_async(run_id=run.id)


async def validate_job(context: JobContext, run_id: int) -> None:
    """Validate what the command of the distributed run ``run_id`` (its last) filled, and record
    the verdict as the run's message."""
    serving: Serving = context.additional_context[CONTEXT_KEY]
    db, ledger = serving.db, serving.ledger
    run = await ledger.run(run_id)
    plan = run.plan.split(",")
    stored = stored_options(run)
    try:
        chosen = serving.registry.validators_for(plan)
        skip = skipper([], None, serving.announce)
        validators = await usable_validators(db, serving.registry, chosen, False, "validating", skip)
        results = await run_validators(db, validators, stored.get("thresholds"), plan)
    except BackfillError as e:
        verdict = f"validation could not run: {e}"
    else:
        failed = [m for m in results if not m.passed]
        shown = [f"{m.validator}.{m.name} {''.join(metric_figures(m))}" for m in (failed or results)]
        verdict = (
            f"validation FAILED: {'; '.join(shown)}"
            if failed
            else f"validation passed: {'; '.join(shown) or 'no validator covers these extractors'}"
        )
    serving.announce(f"run {run_id} of {run.extractor}: {verdict}")
    await ledger.note(run_id, verdict)
