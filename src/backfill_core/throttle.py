"""Throttles: asked by the engine before each batch whether the run should wait first.

A plugin registers instances of :class:`Throttle` through the ``register_throttles`` hook. Before
every batch the engine calls each throttle's :meth:`Throttle.check` with a :class:`DatabaseView`;
a throttle that returns a :class:`Wait` makes the run sleep that long (the reason is shown on the
progress bar and logged once per change) and is then asked again, until every throttle returns
None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol


class Wait(NamedTuple):
    """How long the run should wait before its next batch, and why (one line, for people)."""

    seconds: float
    reason: str


class DatabaseView(Protocol):
    """What a throttle sees of the run: the database, read only, and the run's options."""

    @property
    def kind(self) -> str:
        """``sqlite`` or ``postgresql``."""
        ...

    @property
    def options(self) -> Mapping[str, Any]:
        """The run's options by name (``batch_size``, ``max_rows_per_second``, ``max_replica_lag``, ...)."""
        ...

    @property
    def extractor(self) -> str:
        """The extractor whose next batch waits."""
        ...

    async def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> Sequence[Sequence[Any]]:
        """The rows of a read query (SQLAlchemy ``text()``: parameters as ``:name``), run in a
        transaction of its own that is rolled back (read only on PostgreSQL)."""
        ...

    def note(self, line: str) -> None:
        """Tell the operator something once (a line on stderr; the same line is not repeated)."""
        ...


class Throttle:
    """Base class of a throttle; subclasses set ``name`` and implement :meth:`check`."""

    name: ClassVar[str] = ""

    async def check(self, db: DatabaseView) -> Wait | None:
        """Whether the next batch should wait (a Wait), or may go now (None)."""
        raise NotImplementedError
