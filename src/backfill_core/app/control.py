"""``backfill pause``, ``resume`` and ``throttle``: controls of running runs, from any process on
any host, through the ledger's ``backfill_controls`` table (see store/controls.py); and how
``backfill status`` shows a paused run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

from backfill_core.errors import UsageError
from backfill_core.plugins import Registry
from backfill_core.store.controls import Control, Controls, extractor_target, run_target
from backfill_core.store.ledger import RUNNING, SUCCEEDED, Ledger
from backfill_core.store.parts import Parts


class NonNegative(click.FloatRange):
    """A finite number of at least 0 (or above 0 with ``above_zero``); never NaN."""

    def __init__(self, *, above_zero: bool = False) -> None:
        super().__init__(0, min_open=above_zero)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number) or math.isinf(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


@dataclass(frozen=True)
class Target:
    """What ``RUN|NAME`` names: one run, or every run of an extractor."""

    key: str
    """Its row in backfill_controls: ``run:17`` or ``extractor:name``."""
    spec: str
    """As the operator wrote it (``17``, ``test_features``)."""
    label: str
    """``run 17 of test_features (running, pid 4242 on db1)`` or ``test_features``."""
    extractor: str
    run: Any = None
    """The run's ledger row, for a run."""


async def target(ledger: Ledger, registry: Registry, spec: str) -> Target:
    """The run (a number) or extractor (a name) that ``spec`` names; an unknown one is a usage error."""
    if spec.isdigit():
        row = await ledger.run(int(spec))
        if row is None:
            raise UsageError(f"no run {spec} is recorded in {ledger.db.display_url}; see `backfill status`")
        how = row.status
        if row.status == RUNNING:
            how = (
                f"running, distributed in {row.parts} parts"
                if row.parts
                else f"running, pid {row.pid} on {row.host}"
            )
        return Target(
            run_target(row.id), spec, f"run {row.id} of {row.extractor} ({how})", row.extractor, row
        )
    if spec not in registry.extractors and await ledger.latest(spec) is None:
        known = ", ".join(sorted(registry.extractors)) or "none"
        raise UsageError(
            f"{spec!r} is neither a run recorded in {ledger.db.display_url} nor a registered extractor "
            f"(extractors: {known}); name a run id or an extractor, see `backfill status`"
        )
    return Target(extractor_target(spec), spec, spec, spec)


def _finished(found: Target, command: str) -> str | None:
    """What to say instead of controlling a run that has succeeded, and so never runs again."""
    if found.run is None or found.run.status != SUCCEEDED:
        return None
    return (
        f"{found.label} has finished; nothing changed (`backfill {command} {found.extractor}` "
        f"acts on the running and next runs of {found.extractor})"
    )


async def pause(ledger: Ledger, registry: Registry, spec: str) -> str:
    found = await target(ledger, registry, spec)
    finished = _finished(found, "pause")
    if finished is not None:
        return finished
    before, _ = await Controls(ledger.db).change(found.key, paused=True)
    if before.paused:
        return f"{found.label} was already paused ({_since(before)}); nothing changed"
    resume = f"`backfill resume {found.spec}`"
    if found.run is None:
        return (
            f"paused {found.label}: its running run finishes the batch in flight, then it and every "
            f"run of {found.extractor} started from now on wait until {resume}"
        )
    if found.run.status == RUNNING:
        return f"paused {found.label}: it finishes the batch in flight, then waits until {resume}"
    return f"paused {found.label}: when `backfill run` resumes it, it waits until {resume}"


async def resume(ledger: Ledger, registry: Registry, spec: str) -> str:
    found = await target(ledger, registry, spec)
    controls = Controls(ledger.db)
    before = (await controls.of([found.key])).get(found.key) if await controls.exists() else None
    if before is None or not before.paused:
        said = f"{found.label} was not paused; nothing changed"
    else:
        await controls.change(found.key, paused=False)
        said = f"resumed {found.label} (paused {_since(before)})"
        if found.run is not None and found.run.status != RUNNING:
            said += f"; it is {found.run.status}: run the same `backfill run` command to resume it"
    if found.run is not None:
        other = (await controls.of([extractor_target(found.extractor)])).get(
            extractor_target(found.extractor)
        )
        if other is not None and other.paused:
            said += (
                f"; it is still paused by `backfill pause {found.extractor}`, which "
                f"`backfill resume {found.extractor}` lifts"
            )
    return said


async def throttle(
    ledger: Ledger,
    registry: Registry,
    spec: str,
    *,
    max_rows_per_second: float | None,
    sleep_between_batches: float | None,
    clear: bool,
) -> str:
    found = await target(ledger, registry, spec)
    finished = _finished(found, "throttle")
    if finished is not None and not clear:
        return finished
    if clear:
        fields: dict[str, float | None] = {"max_rows_per_second": None, "sleep_between_batches": None}
    else:
        fields = {
            name: value
            for name, value in (
                ("max_rows_per_second", max_rows_per_second),
                ("sleep_between_batches", sleep_between_batches),
            )
            if value is not None
        }
    before, after = await Controls(ledger.db).change(found.key, **fields)
    changes = [
        f"{_option(name)} {_setting(name, getattr(before, name))} -> {_setting(name, getattr(after, name))}"
        for name in ("max_rows_per_second", "sleep_between_batches")
        if getattr(before, name) != getattr(after, name)
    ]
    if not changes:
        return f"{found.label}: nothing changed ({_settings(after)})"
    return f"throttled {found.label}: {'; '.join(changes)}; a running run follows within a second or a batch"


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _setting(name: str, value: float | None) -> str:
    if value is None:
        return "its command line's"
    if name == "max_rows_per_second":
        return "no limit" if value == 0 else f"{value:g} rows/s"
    return f"{value:g}s"


def _settings(control: Control) -> str:
    return ", ".join(
        f"{_option(name)} {_setting(name, getattr(control, name))}"
        for name in ("max_rows_per_second", "sleep_between_batches")
    )


def _since(control: Control) -> str:
    return f"since {str(control.changed_at)[:19]} by {control.changed_by}"


async def recent(ledger: Ledger, limit: int) -> tuple[list[Any], list[Control], dict[int, dict[str, int]]]:
    """The runs ``backfill status`` shows, every control set, and the parts of the distributed
    runs among them by status."""
    rows = await ledger.recent(limit)
    parts = await Parts(ledger).counts([r.id for r in rows if r.parts])
    return rows, await Controls(ledger.db).all(), parts


def lines(summary: dict[str, Any]) -> list[str]:
    """What ``status`` prints under its table about a run shown by :func:`shown`: its controls,
    its parts and its time to go."""
    out = []
    for c in summary["controls"]:
        settings = [
            f"{_option(name)} {_setting(name, value)}"
            for name in ("max_rows_per_second", "sleep_between_batches")
            if (value := c[name]) is not None
        ]
        if settings:
            how = f"`backfill throttle {c['target'].partition(':')[2]}`"
            out.append(f"run {summary['id']}: {', '.join(settings)} set by {how}")
    progress = []
    if summary["parts"]:
        counts = [f"{n} {status}" for status, n in summary["parts"].items() if n]
        progress.append(f"parts {', '.join(counts)}")
    if summary["eta_seconds"] is not None:
        progress.append(
            f"about {_duration(summary['eta_seconds'])} to go at {summary['rows_per_second']:.0f} rows/s"
        )
    if progress:
        out.append(f"run {summary['id']}: {'; '.join(progress)}")
    return out


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def shown(
    summary: dict[str, Any], controls: list[Control], parts: dict[str, int] | None = None
) -> dict[str, Any]:
    """A run as ``status`` shows it: a running run that a pause holds is ``paused``; its controls
    are listed under ``controls``, a distributed run's parts by status under ``parts``, and a
    running run's estimated seconds to go under ``eta_seconds``."""
    summary["parts"] = parts
    rate, left = summary["rows_per_second"], (summary["total"] or 0) - summary["processed"]
    running = summary["status"] == RUNNING and summary["total"] is not None
    summary["eta_seconds"] = left / rate if running and rate > 0 and left >= 0 else None
    by_target: Mapping[str, Control] = {c.target: c for c in controls}
    mine = [
        c
        for c in (
            by_target.get(run_target(summary["id"])),
            by_target.get(extractor_target(summary["extractor"])),
        )
        if c is not None
    ]
    if summary["status"] == RUNNING and any(c.paused for c in mine):
        summary["status"] = "paused"
    summary["controls"] = [
        {
            "target": c.target,
            "paused": c.paused,
            "max_rows_per_second": c.max_rows_per_second,
            "sleep_between_batches": c.sleep_between_batches,
            "changed_at": c.changed_at,
            "changed_by": c.changed_by,
        }
        for c in mine
    ]
    return summary
