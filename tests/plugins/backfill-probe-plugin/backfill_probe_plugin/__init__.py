"""Probes for the extraction worker, installed by the end-to-end tests.

Both write ``probe(id INTEGER PRIMARY KEY, pid INTEGER, note TEXT)``, which the tests create.
``probe_pid`` records the process that extracted each test: impure on purpose, so a test can
see whether extraction ran in the ``backfill`` process or in its worker. ``probe_unsendable``
returns, for every tenth test, a value that cannot be pickled (a lock).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from backfill_core import Extractor, Row, Upsert, hookimpl


class ProbePid(Extractor):
    name = "probe_pid"
    description = "the pid of the process that extracted each test"
    source = "tests"
    columns = ("id",)
    writes = {"probe": ("id", "pid")}

    def extract(self, row: Row) -> list[Upsert]:
        return [Upsert("probe", {"id": row["id"]}, {"pid": os.getpid()})]


class ProbeUnsendable(Extractor):
    name = "probe_unsendable"
    description = "a value that cannot be pickled for every tenth test"
    source = "tests"
    columns = ("id",)
    writes = {"probe": ("id", "note")}

    def extract(self, row: Row) -> list[Upsert]:
        note = threading.Lock() if row["id"] % 10 == 0 else f"test {row['id']}"
        return [Upsert("probe", {"id": row["id"]}, {"note": note})]


@hookimpl
def register_extractors(register: Callable[[Extractor], None]) -> None:
    register(ProbePid())
    register(ProbeUnsendable())
