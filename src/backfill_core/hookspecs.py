"""The hooks a backfill plugin can implement."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from backfill_core.extractor import Extractor
    from backfill_core.throttle import Throttle
    from backfill_core.validator import Validator

PROJECT = "backfill"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_extractors(register: Callable[[Extractor], None]) -> None:
    """Register extractors by calling ``register(extractor)`` once for each."""


@hookspec
def register_validators(register: Callable[[Validator], None]) -> None:
    """Register validators by calling ``register(validator)`` once for each."""


@hookspec
def register_throttles(register: Callable[[Throttle], None]) -> None:
    """Register throttles, asked before each batch whether to wait, by calling ``register(throttle)``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``backfill`` command-line group."""
