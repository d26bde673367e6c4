"""The brakes a run applies between batches: ``--sleep-between-batches``, ``--max-rows-per-second``,
the plugins' throttles, and the operators' controls (``backfill pause``/``throttle``, read from
``backfill_controls``).

The batch loop calls :meth:`Brakes.before` once before each batch. It reads the controls at most
once per CONTROL_EVERY seconds (and so at most once per batch), waits while the run is paused,
then waits until the rate, the sleep and every throttle let the batch go. Every wait is cut into
naps of at most CONTROL_EVERY seconds, after each of which the controls are read again, so a
pause, a resume or a new rate takes effect within a second or a batch. A wait is cancellable: a
signal ends it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from types import MappingProxyType
from typing import Any

from sqlalchemy import text

from backfill_core.engine.options import NoProgress, Progress, RunOptions
from backfill_core.errors import BackfillError, EnvironmentProblem
from backfill_core.store.connection import LockConflict, RowsRefused
from backfill_core.store.controls import Control, Controls, extractor_target, run_target
from backfill_core.store.database import Database
from backfill_core.throttle import Throttle, Wait

CONTROL_EVERY = 1.0
"""Seconds between two reads of ``backfill_controls``, and the longest nap of a wait."""
HEARTBEAT_EVERY = 2.0
"""Seconds between two heartbeats of a waiting run (another host must not take it for dead)."""


class ThrottleFailed(EnvironmentProblem):
    """A plugin's throttle raised, or answered something that is not a Wait or None."""


class View:
    """The :class:`~backfill_core.throttle.DatabaseView` a throttle is given."""

    def __init__(self, db: Database, options: Mapping[str, Any], extractor: str, note: Callable[[str], None]):
        self._db, self._options, self._extractor, self._note = db, options, extractor, note

    @property
    def kind(self) -> str:
        return self._db.dialect

    @property
    def options(self) -> Mapping[str, Any]:
        return self._options

    @property
    def extractor(self) -> str:
        return self._extractor

    async def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> Sequence[Sequence[Any]]:
        async with self._db.sqlalchemy() as conn:  # its transaction is rolled back at the end
            if not self._db.is_sqlite:
                await conn.execute(text("SET TRANSACTION READ ONLY"))
            return list((await conn.execute(text(sql), dict(params or {}))).all())

    def note(self, line: str) -> None:
        self._note(line)


class Brakes:
    """When each batch of a command's runs may start (see the module's docstring)."""

    def __init__(
        self,
        db: Database,
        options: RunOptions,
        throttles: Sequence[tuple[str, Throttle]] = (),
        announce: Callable[[str], object] = lambda _line: None,
        controls: Controls | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.db, self.options, self.throttles, self.controls = db, options, throttles, controls
        self._announce, self._clock, self._sleep = announce, clock, sleep
        self._options = MappingProxyType(asdict(options))
        self._noted: set[str] = set()
        self.begin("", None)

    def begin(self, extractor: str, run_id: int | None, bar: Progress | None = None) -> None:
        """Start braking the batches of ``extractor``'s run ``run_id`` (None: a dry run)."""
        self.extractor, self.run_id, self.bar = extractor, run_id, bar or NoProgress()
        self._view = View(self.db, self._options, extractor, self._note)
        self._first = True
        self._rate: float | None = None
        self._origin, self._paced = self._clock(), 0
        self._polled_at = -math.inf
        self._set: dict[str, Control] = {}
        self._said: str | None = None
        self._asking: set[str] = set()
        self._held: tuple[float, str] | None = None
        """Until when (clock) and why the throttles last asked the run to wait."""
        self._touched_at = -math.inf
        self._message: str | None = None

    # -- what applies now ----------------------------------------------------------------------

    def _targets(self) -> list[str]:
        return [run_target(self.run_id), extractor_target(self.extractor)] if self.run_id is not None else []

    def _override(self, name: str) -> tuple[float | None, str] | None:
        """A setting that ``backfill throttle`` changed: its value and where it was set."""
        for target in self._targets():
            control = self._set.get(target)
            if control is not None and getattr(control, name) is not None:
                return getattr(control, name), f"set by `backfill throttle {target.partition(':')[2]}`"
        return None

    def rate(self) -> tuple[float | None, str]:
        """Source rows per second at most (None: no limit), and where that was set."""
        found = self._override("max_rows_per_second")
        if found is not None:
            value, where = found
            return (value or None), where
        return self.options.max_rows_per_second, "--max-rows-per-second"

    def pause_between(self) -> tuple[float, str]:
        found = self._override("sleep_between_batches")
        if found is not None:
            return found[0] or 0.0, found[1]
        return self.options.sleep_between_batches, "--sleep-between-batches"

    def paused_by(self) -> str | None:
        """The target (``run:17``, ``extractor:name``) whose pause holds this run, if one does."""
        return next((t for t in self._targets() if t in self._set and self._set[t].paused), None)

    # -- the wait before a batch -----------------------------------------------------------------

    async def before(self, rows: int) -> None:
        """Wait until the next batch, of ``rows`` source rows, may start."""
        entered = self._clock()
        first, self._first = self._first, False
        while True:
            await self._poll()
            rate, rate_from = self.rate()
            if rate != self._rate:  # a new rate counts from now, without the old one's debt
                self._rate, self._origin, self._paced = rate, self._clock(), 0
            pause, pause_from = self.pause_between()
            due, reason = entered + (0.0 if first else pause), f"{pause:g}s between batches ({pause_from})"
            if rate is not None:
                # Time not used since the last batch (a throttle's wait, a slow batch) earns at
                # most one batch's credit: no burst once the wait is over.
                self._origin = max(self._origin, self._clock() - (self._paced + rows) / rate)
                paced = self._origin + (self._paced + rows) / rate
                if paced > due:
                    due, reason = paced, f"at most {rate:g} rows/s ({rate_from})"
            if self._held is None or self._held[0] <= self._clock():  # asked again once a wait is over
                asked = await self._ask()
                self._held = None if asked is None else (self._clock() + asked.seconds, asked.reason)
            now = self._clock()
            if self._held is not None and self._held[0] > due:
                due, reason = self._held
            if due <= now:
                break
            self._show(reason)
            await self._nap(min(due - now, CONTROL_EVERY), f"waiting: {reason}", since=entered)
        self._paced += rows
        await self._going_on()

    async def _ask(self) -> Wait | None:
        """The longest wait the throttles ask for (each is asked once), or None."""
        longest: Wait | None = None
        for plugin, throttle in self.throttles:
            label = f"throttle {throttle.name!r} (plugin {plugin})"
            try:
                wait = await throttle.check(self._view)
            except (BackfillError, asyncio.CancelledError):
                raise
            except Exception as e:
                raise ThrottleFailed(
                    f"{label} failed before a batch of {self.extractor}: {type(e).__name__}: {e}. "
                    f"Fix or disable the plugin (--disable-plugin {plugin}), then run the same "
                    "command to resume"
                ) from e
            if wait is not None and not (
                isinstance(wait, Wait)
                and isinstance(wait.seconds, int | float)
                and 0 <= wait.seconds < math.inf
            ):
                raise ThrottleFailed(
                    f"{label} answered {wait!r}; a throttle returns None or "
                    "Wait(seconds >= 0, reason), the seconds finite. Fix or disable the plugin "
                    f"(--disable-plugin {plugin}), then run the same command to resume"
                )
            if wait is None or wait.seconds == 0:
                if throttle.name in self._asking:
                    self._asking.discard(throttle.name)
                    self._said = None
                    self._announce(f"{self.extractor}: throttle {throttle.name!r} lets the run go on")
                continue
            self._asking.add(throttle.name)
            wait = Wait(float(wait.seconds), f"{wait.reason} (throttle {throttle.name!r})")
            if longest is None or wait.seconds > longest.seconds:
                longest = wait
        return longest

    async def _poll(self) -> None:
        """Read the controls if CONTROL_EVERY has passed; wait here while the run is paused."""
        if self.controls is None or self.run_id is None:
            return
        if self._clock() - self._polled_at >= CONTROL_EVERY:
            await self._read()
        held = self.paused_by()  # also as a nap of a wait read it
        if held is None:
            return
        name = held.partition(":")[2]
        what = f"run {self.run_id}" if held.startswith("run:") else f"every run of {self.extractor}"
        self._announce(
            f"{self.extractor}: paused (`backfill pause {name}` holds {what}); waiting until "
            f"`backfill resume {name}`. Ctrl-C still interrupts"
        )
        self._show("paused")
        while held is not None:  # acknowledged in the ledger at once
            message = f"paused by `backfill pause {name}`; `backfill resume {name}` lifts it"
            await self._nap(CONTROL_EVERY, message, since=-math.inf)
            held = self.paused_by()
        self._announce(f"{self.extractor}: resumed")
        self._said = None
        self._origin, self._paced = self._clock(), 0  # no burst to catch up on the pause

    async def _read(self) -> None:
        assert self.controls is not None
        with contextlib.suppress(LockConflict):  # the last settings hold until the next poll
            self._set = await self.controls.of(self._targets())
        self._polled_at = self._clock()

    async def _nap(self, seconds: float, message: str, *, since: float) -> None:
        """Sleep, then read the controls again. A wait that began at ``since`` and has lasted
        HEARTBEAT_EVERY keeps the run's heartbeat fresh and its message saying why it waits
        (short waits write nothing)."""
        now = self._clock()
        recorded = self.controls is not None and self.run_id is not None
        stale = now - self._touched_at >= HEARTBEAT_EVERY or message != self._message
        if recorded and now - since >= HEARTBEAT_EVERY and stale:
            await self._touch(message)
        await self._sleep(seconds)
        if self.controls is not None and self.run_id is not None:
            await self._read()

    async def _going_on(self) -> None:
        self._show(None)
        if self._message is not None:
            await self._touch(None)

    async def _touch(self, message: str | None) -> None:
        assert self.controls is not None and self.run_id is not None
        try:
            await self.controls.touch(self.run_id, message)
        except (RowsRefused, BackfillError):
            return  # best effort: the next nap tries again, and the batch will checkpoint anyway
        self._touched_at, self._message = self._clock(), message

    # -- telling people --------------------------------------------------------------------------

    def _show(self, reason: str | None) -> None:
        """Show why the run waits on its progress bar (None: it does not), and log each new reason once."""
        postfix = getattr(self.bar, "set_postfix_str", None)
        if postfix is not None:
            postfix("" if reason is None else ("paused" if reason == "paused" else f"waiting: {reason}"))
        if reason is not None and reason != "paused" and reason != self._said:
            self._said = reason
            self._announce(f"{self.extractor}: waiting: {reason}")

    def _note(self, line: str) -> None:
        if line not in self._noted:
            self._noted.add(line)
            self._announce(line)
