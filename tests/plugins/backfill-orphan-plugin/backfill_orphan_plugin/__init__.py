"""A plugin whose extractor depends on an extractor that no plugin provides (``nosuch``).

It loads; ``list-plugins`` must say that ``orphan_totals`` cannot run, and running it must say
whose dependency is missing.
"""

from __future__ import annotations

from collections.abc import Callable

from backfill_core import Extractor, Row, Update, hookimpl


class OrphanTotals(Extractor):
    name = "orphan_totals"
    description = "never runs: it depends on an extractor nobody registers"
    source = "orders"
    columns = ("id",)
    writes = {"orders": ("id",)}
    depends_on = ("nosuch",)

    def extract(self, row: Row) -> list[Update]:
        return []


@hookimpl
def register_extractors(register: Callable[[Extractor], None]) -> None:
    register(OrphanTotals())
