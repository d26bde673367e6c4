"""A run's key ranges processed by several sources at once: the source of ``--workers N``.

The run's key ranges are cut into more parts than there are lanes (``sources.split``), so that a
lane that finishes early takes another part. Each lane is a source of its own (an extraction
worker's pages, see pool.py) reading the parts it takes in key order; the batch loop writes the
lanes' batches as they come, and its checkpoints record each lane's key ranges, in any order
(the ledger keeps ranges committed out of order).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence

from backfill_core.engine.sources import Source, Work
from backfill_core.store.records import KeyRange

PARTS_PER_LANE = 4
"""Parts a run's key ranges are cut into, per lane."""


def taking(parts: deque[KeyRange]) -> Iterator[KeyRange]:
    """The key ranges of ``parts``, each taken from the shared queue as it is needed."""
    while parts:
        yield parts.popleft()


class Lanes:
    """A source (see sources.py) whose batches are those of the sources ``make`` builds, one per
    lane (``make[i](todo)``, over the parts it takes from the shared ``parts``), as each is ready;
    ``rows`` is how many source rows the parts hold (as ``split`` counted them)."""

    ranged = True

    def __init__(
        self,
        make: Sequence[Callable[[Iterator[KeyRange]], Source]],
        parts: Sequence[KeyRange],
        rows: int,
        size: int,
    ) -> None:
        queue = deque(parts)
        self.sources = [lane(taking(queue)) for lane in make]
        self.lanes = len(self.sources)
        self.rows = rows
        self.size = size

    @property
    def size(self) -> int:
        return self._size

    @size.setter
    def size(self, size: int) -> None:
        self._size = size
        for source in self.sources:
            source.size = size

    async def count(self) -> int:
        return self.rows

    async def batches(self) -> AsyncGenerator[Work, None]:
        streams = [source.batches() for source in self.sources]
        pending = {asyncio.ensure_future(anext(s, None)): i for i, s in enumerate(streams)}
        try:
            while pending:
                ready, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                first = min(ready, key=lambda f: pending[f])
                lane = pending.pop(first)
                work = first.result()
                if work is not None:
                    pending[asyncio.ensure_future(anext(streams[lane], None))] = lane
                    yield work._replace(lane=lane)
        finally:
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for stream in streams:
                await stream.aclose()
