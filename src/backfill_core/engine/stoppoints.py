"""Stop points: a run stops its own process (SIGSTOP) at a named moment, for crash tests.

``BACKFILL_STOP_AT=EXTRACTOR:POINT[:N]`` makes the process stop itself once, when the run of
``EXTRACTOR`` reaches ``POINT`` in its ``N``-th batch in this process (``N`` defaults to 1):

* ``started``: the run is recorded in the ledger and its rows counted; no batch is written yet
  (``N`` is ignored);
* ``written``: batch ``N``'s writes and checkpoint are in its transaction, not yet committed;
* ``committed``: batch ``N`` and its checkpoint are committed;
* ``retrying``: batch ``N``'s transaction gave way to another's lock and was rolled back; the
  batch is about to wait and be tried again (the first time only);
* ``exit``: the command (any command, whatever ``EXTRACTOR`` says; ``N`` is ignored) has closed
  every connection and file and is about to exit with its exit code.

The value may list several of these, separated by commas (``a:written:2,a:exit``); each stops
the process once. A test waits for the process to be stopped, then inspects, kills or signals it
and sends SIGCONT: the moment is chosen by what the run has done, not by how fast the machine
is. Nothing else reads the variable; without it a process never stops itself.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

from backfill_core.errors import UsageError

STOP_AT_ENV = "BACKFILL_STOP_AT"
POINTS = ("started", "written", "committed", "retrying")
EXIT = "exit"
"""The point every command reaches just before its process exits."""


@dataclass(frozen=True)
class StopPoint:
    point: str
    batch: int


def stop_points(extractor: str) -> list[StopPoint]:
    """Where ``BACKFILL_STOP_AT`` asks a run of ``extractor`` to stop, in the order given
    (UsageError when the value is malformed)."""
    return [stop for name, stop in _specs() if name == extractor and stop.point != EXIT]


def stops_at_exit() -> bool:
    """Whether ``BACKFILL_STOP_AT`` asks the process to stop just before it exits; a malformed
    value asks nothing here (a run refuses it)."""
    try:
        return any(stop.point == EXIT for _name, stop in _specs())
    except UsageError:
        return False


class StopPoints:
    """The stop points of one extractor's run, each taken once (see the module's docstring)."""

    def __init__(self, extractor: str) -> None:
        self._left = stop_points(extractor)

    def reached(self, point: str, batch: int) -> None:
        """Stop the process if a stop point asks for ``point`` in batch ``batch`` (``started``
        matches any batch)."""
        for stop in self._left:
            if stop.point == point and (point == "started" or stop.batch == batch):
                self._left.remove(stop)
                stop_here()
                return


def _specs() -> list[tuple[str, StopPoint]]:
    value = os.environ.get(STOP_AT_ENV)
    return [_parse(spec, value) for spec in value.split(",")] if value else []


def _parse(spec: str, value: str) -> tuple[str, StopPoint]:
    name, _, rest = spec.strip().partition(":")
    point, _, batch = rest.partition(":")
    if point not in (*POINTS, EXIT) or not (batch or "1").isdigit() or int(batch or "1") < 1:
        raise UsageError(
            f"{STOP_AT_ENV}={value!r}: expected EXTRACTOR:{'|'.join((*POINTS, EXIT))}[:N] with N >= 1, "
            "or several of these separated by commas"
        )
    return name, StopPoint(point, int(batch or "1"))


def stop_here() -> None:
    """Stop this process until it is sent SIGCONT (or killed); what it printed is flushed first."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
