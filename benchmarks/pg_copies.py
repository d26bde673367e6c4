"""Fresh PostgreSQL databases for the benchmark: a template per size, copied for every run.

The template is made once from the synthetic SQLite file (``pgcopy``: the application's tables with
PostgreSQL's types), vacuumed and analyzed, then closed to connections so that nothing (autovacuum
included) holds it while it is copied. Each measured run gets ``CREATE DATABASE … TEMPLATE``, and a
checkpoint, so that no run pays for writing out the pages of the copy or of the run before it.
Every database made here is dropped by ``close`` (the ``server`` context manager's exit).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import asyncpg
import pg_baselines

from backfill_plugins.testmanagement.pgcopy import copy_from_sqlite

PREFIX = "backfill_bench"


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class Server:
    """The PostgreSQL server the benchmark makes its databases on, and the databases it made."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[str] = []
        self.run_id = uuid.uuid4().hex[:8]

    def database_url(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + name

    def version(self) -> str:
        return str(pg_baselines.rows(self.url, "SHOW server_version")[0][0])

    def create(self, name: str, template: str | None = None) -> str:
        clause = f' TEMPLATE "{template}"' if template else ""
        asyncio.run(_execute(self.url, f'CREATE DATABASE "{name}"{clause}'))
        self.made.append(name)
        return self.database_url(name)

    def drop(self, name: str) -> None:
        asyncio.run(
            _execute(
                self.url,
                f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false',
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            )
        )
        self.made.remove(name)

    def checkpoint(self) -> None:
        """Write every dirty page out; needs a superuser or pg_checkpoint, else it is left out."""
        with suppress(asyncpg.InsufficientPrivilegeError):
            asyncio.run(_execute(self.url, "CHECKPOINT"))

    def template(self, source: Path, tests: int) -> Copies:
        """A template database holding ``source``'s tables, and the means to copy it."""
        name = f"{PREFIX}_{self.run_id}_{tests}"
        url = self.create(name)
        asyncio.run(copy_from_sqlite(url, source))
        asyncio.run(_execute(url, "VACUUM ANALYZE"))
        pristine = pg_baselines.snapshot_digest(url)
        asyncio.run(
            _execute(self.url, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true')
        )
        return Copies(self, name, pristine)

    def close(self) -> None:
        for name in reversed(self.made):
            self.drop(name)


class Copies:
    """Fresh copies of one template database (``run.Copies``' counterpart on PostgreSQL)."""

    kind = "PostgreSQL"

    def __init__(self, server: Server, template: str, pristine: dict[str, tuple[int, str]]) -> None:
        self.server = server
        self.template = template
        self.pristine = pristine
        """The template's snapshot digest (it takes no connection once it is a template)."""

    def fresh(self, name: str) -> str:
        url = self.server.create(f"{self.template}_{name.replace('-', '_')}", template=self.template)
        self.server.checkpoint()
        return url

    def drop(self, url: str) -> None:
        self.server.drop(url.rsplit("/", 1)[1])

    def digest(self, url: str) -> object:
        return pg_baselines.snapshot_digest(url)

    def first_difference(self, a: str, b: str) -> str | None:
        return pg_baselines.first_difference(a, b)

    @staticmethod
    def baseline_cmd(python: str, mode: str, url: str) -> list[str]:
        return [python, str(Path(pg_baselines.__file__)), mode, url]


@contextmanager
def server(url: str) -> Iterator[Server]:
    """The server at ``url``; every database made on it is dropped on exit."""
    made = Server(url)
    try:
        yield made
    finally:
        made.close()
