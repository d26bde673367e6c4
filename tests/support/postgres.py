"""Scratch PostgreSQL databases for the tests, on the server named by BACKFILL_TEST_POSTGRES_URL.

Each scratch database is created with the built-in job's tables (the application's real schema,
``backfill_plugins.testmanagement.pgcopy.SCHEMA``), filled from a synthetic SQLite file (or
copied from a template database filled from it once), and dropped afterwards. Tests that use it
are marked ``postgres`` and skipped (reported as such) when the variable is not set.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from backfill_plugins.testmanagement.pgcopy import copy_from_sqlite

SERVER = os.environ.get("BACKFILL_TEST_POSTGRES_URL")
needs_server = [
    pytest.mark.postgres,
    pytest.mark.skipif(not SERVER, reason="set BACKFILL_TEST_POSTGRES_URL to run the PostgreSQL tests"),
]


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


@contextmanager
def empty_database(template: str = "template1") -> Iterator[str]:
    """The URL of a new database on the test server, a copy of ``template`` (by default empty);
    dropped on exit."""
    assert SERVER, "BACKFILL_TEST_POSTGRES_URL is not set"
    name = f"backfill_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(execute(SERVER, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield SERVER.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(execute(SERVER, f'DROP DATABASE "{name}" WITH (FORCE)'))


@contextmanager
def scratch_database(source: Path) -> Iterator[str]:
    """The URL of a new database holding ``source``'s tables (``COPIED``); dropped on exit.

    A read-only ``source`` (a template no test writes to) is loaded once per test process into a
    template database, which each scratch database then copies (``drop_templates`` ends them)."""
    if source.stat().st_mode & 0o222:
        with empty_database() as url:
            asyncio.run(copy_from_sqlite(url, source))
            yield url
        return
    with empty_database(template=_template_of(source)) as url:
        yield url


_templates: dict[tuple[str, int, int, int], str] = {}
"""A read-only source file (path, inode, size, modification time) -> its template database."""


def _template_of(source: Path) -> str:
    """The name of a template database holding ``source``'s tables, loaded on first use."""
    assert SERVER, "BACKFILL_TEST_POSTGRES_URL is not set"
    info = source.stat()
    key = (str(source.resolve()), info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _templates:
        name = f"backfill_template_{uuid.uuid4().hex[:12]}"
        asyncio.run(execute(SERVER, f'CREATE DATABASE "{name}"'))
        _templates[key] = name
        asyncio.run(copy_from_sqlite(SERVER.rsplit("/", 1)[0] + "/" + name, source))
        # No session may be open on a template while it is copied: forbid them.
        asyncio.run(execute(SERVER, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    return _templates[key]


def drop_templates() -> None:
    """Drop the template databases ``scratch_database`` made in this process."""
    while _templates:
        _, name = _templates.popitem()
        asyncio.run(execute(SERVER or "", f'DROP DATABASE "{name}" WITH (FORCE)'))


@contextmanager
def application_role(url: str, grants: str = "", *, temporary: bool = True) -> Iterator[str]:
    """``url`` as a new login role with only the rights an application's user is given: what
    PUBLIC has (CONNECT, and TEMPORARY unless ``temporary`` is False: then it is revoked from
    PUBLIC on this database), no CREATE on the database or on schema ``public`` (PostgreSQL 15's
    default), and ``grants``, SQL run on that database in which ``{role}`` names the role.
    The role is dropped on exit."""
    role = f"backfill_app_{uuid.uuid4().hex[:12]}"
    setup = f"CREATE ROLE {role} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC; " + grants.format(
        role=role
    )
    if not temporary:
        database = url.rsplit("/", 1)[1]
        setup += f'; REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC'
    asyncio.run(execute(url, setup))
    try:
        yield make_url(url).set(username=role, password=None).render_as_string(hide_password=False)
    finally:
        asyncio.run(execute(url, f"DROP OWNED BY {role}; DROP ROLE {role}"))
