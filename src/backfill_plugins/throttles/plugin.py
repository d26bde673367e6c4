"""Entry point of the built-in throttles."""

from __future__ import annotations

from collections.abc import Callable

from backfill_core import hookimpl
from backfill_core.throttle import Throttle
from backfill_plugins.throttles.replicalag import ReplicaLag


@hookimpl
def register_throttles(register: Callable[[Throttle], None]) -> None:
    register(ReplicaLag())
