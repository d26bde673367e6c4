"""A small working backfill plugin: upper-cases ``tests.status`` in place.

Installed by the end-to-end tests beside a broken plugin, to show that it still loads and
that its extractor runs through real entry-point discovery.
"""

from __future__ import annotations

from collections.abc import Callable

from backfill_core import Extractor, RecordError, Row, Update, hookimpl

EXTRACTOR = "extra_status_upper"


class StatusUpper(Extractor):
    name = EXTRACTOR
    description = "tests.status in upper case"
    source = "tests"
    columns = ("id", "status")
    writes = {"tests": ("id", "status")}

    def extract(self, row: Row) -> list[Update]:
        status = row["status"]
        if status is None:
            return []
        if not isinstance(status, str):
            raise RecordError(f"tests.status is {type(status).__name__}, not text", kind="invalid-type")
        return [Update(table="tests", key={"id": row["id"]}, values={"status": status.upper()})]


@hookimpl
def register_extractors(register: Callable[[Extractor], None]) -> None:
    register(StatusUpper())
