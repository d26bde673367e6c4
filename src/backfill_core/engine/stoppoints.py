"""Stop points: a run stops its own process (SIGSTOP) at a named moment, for crash tests.

``BACKFILL_STOP_AT=EXTRACTOR:POINT[:N]`` makes the process stop itself once, when the run of
``EXTRACTOR`` reaches ``POINT`` in its ``N``-th batch in this process (``N`` defaults to 1):

* ``started``: the run is recorded in the ledger and its rows counted; no batch is written yet
  (``N`` is ignored);
* ``written``: batch ``N``'s writes and checkpoint are in its transaction, not yet committed;
* ``committed``: batch ``N`` and its checkpoint are committed;
* ``retrying``: batch ``N``'s transaction gave way to another's lock and was rolled back; the
  batch is about to wait and be tried again (the first time only).

A test waits for the process to be stopped, then kills or signals it and sends SIGCONT: the
moment is chosen by what the run has done, not by how fast the machine is. Nothing else reads
the variable; without it a run never stops itself.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from backfill_core.errors import UsageError

STOP_AT_ENV = "BACKFILL_STOP_AT"
POINTS = ("started", "written", "committed", "retrying")


@dataclass(frozen=True)
class StopPoint:
    point: str
    batch: int


def stop_point(extractor: str) -> StopPoint | None:
    """Where ``BACKFILL_STOP_AT`` asks a run of ``extractor`` to stop, if anywhere."""
    spec = os.environ.get(STOP_AT_ENV)
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    point, _, batch = rest.partition(":")
    if point not in POINTS or not (batch or "1").isdigit() or int(batch or "1") < 1:
        raise UsageError(f"{STOP_AT_ENV}={spec!r}: expected EXTRACTOR:{'|'.join(POINTS)}[:N] with N >= 1")
    return StopPoint(point, int(batch or "1")) if name == extractor else None


def stop_here() -> None:
    """Stop this process until it is sent SIGCONT (or killed)."""
    os.kill(os.getpid(), signal.SIGSTOP)
