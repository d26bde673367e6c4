"""Scratch PostgreSQL databases for the tests, on the server named by BACKFILL_TEST_POSTGRES_URL.

Each scratch database is created with the built-in job's tables (the application's real schema,
see ``SCHEMA``), filled from a synthetic SQLite file (or copied from a template database filled
from it once), and dropped afterwards. Tests that use it are marked ``postgres`` and skipped
(reported as such) when the variable is not set.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

SERVER = os.environ.get("BACKFILL_TEST_POSTGRES_URL")
needs_server = [
    pytest.mark.postgres,
    pytest.mark.skipif(not SERVER, reason="set BACKFILL_TEST_POSTGRES_URL to run the PostgreSQL tests"),
]
SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, username VARCHAR(255) NOT NULL,
    user_type VARCHAR(50) NOT NULL, raw_data VARCHAR NOT NULL, last_seen TIMESTAMP WITH TIME ZONE NOT NULL,
    first_seen TIMESTAMP WITH TIME ZONE NOT NULL);
CREATE TABLE products (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, data VARCHAR NOT NULL,
    last_synced TIMESTAMP WITH TIME ZONE, title VARCHAR NOT NULL, product_type VARCHAR(50));
CREATE TABLE features (
    id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL REFERENCES products (id),
    title VARCHAR NOT NULL, description VARCHAR, howtofind VARCHAR, user_stories VARCHAR NOT NULL,
    section_ids VARCHAR NOT NULL, raw_data VARCHAR NOT NULL, last_synced TIMESTAMP WITH TIME ZONE NOT NULL);
CREATE TABLE tests (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, product_id INTEGER NOT NULL,
    data VARCHAR NOT NULL, status VARCHAR NOT NULL,
    start_at TIMESTAMP WITH TIME ZONE, end_at TIMESTAMP WITH TIME ZONE,
    synced_at TIMESTAMP WITH TIME ZONE, bugs_synced_at TIMESTAMP WITH TIME ZONE,
    created_by VARCHAR(255), submitted_by VARCHAR(255),
    created_by_user_id INTEGER REFERENCES users (id), submitted_by_user_id INTEGER REFERENCES users (id),
    title VARCHAR(500), testing_type VARCHAR(50), goal TEXT, instructions TEXT, out_of_scope TEXT,
    enable_low BOOLEAN, enable_high BOOLEAN, enable_critical BOOLEAN, test_environment JSON);
CREATE TABLE test_features (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
    test_id INTEGER NOT NULL REFERENCES tests (id), feature_id INTEGER NOT NULL REFERENCES features (id),
    title VARCHAR NOT NULL, description VARCHAR, howtofind VARCHAR,
    user_stories VARCHAR NOT NULL DEFAULT '[]', enable_default BOOLEAN NOT NULL DEFAULT false,
    enable_content BOOLEAN NOT NULL DEFAULT false, enable_visual BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE bugs (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, test_id INTEGER NOT NULL REFERENCES tests (id),
    title VARCHAR NOT NULL, severity VARCHAR, status VARCHAR, raw_data VARCHAR NOT NULL,
    synced_at TIMESTAMP WITH TIME ZONE, reported_by_user_id INTEGER REFERENCES users (id),
    test_feature_id INTEGER CONSTRAINT fk_bugs_test_feature_id REFERENCES test_features (id),
    actual_result TEXT, expected_result TEXT, steps TEXT, reported_at TIMESTAMP WITH TIME ZONE,
    rejection_reason TEXT, known BOOLEAN NOT NULL DEFAULT false);
CREATE INDEX ix_users_customer_id ON users (customer_id);
CREATE INDEX ix_users_user_type ON users (user_type);
CREATE INDEX ix_users_username ON users (username);
CREATE INDEX ix_products_customer_id ON products (customer_id);
CREATE INDEX ix_products_product_type ON products (product_type);
CREATE INDEX ix_features_product_id ON features (product_id);
CREATE INDEX ix_tests_created_by ON tests (created_by);
CREATE INDEX ix_tests_created_by_user_id ON tests (created_by_user_id);
CREATE INDEX ix_tests_customer_id ON tests (customer_id);
CREATE INDEX ix_tests_end_at ON tests (end_at);
CREATE INDEX ix_tests_product_id ON tests (product_id);
CREATE INDEX ix_tests_start_at ON tests (start_at);
CREATE INDEX ix_tests_status ON tests (status);
CREATE INDEX ix_tests_submitted_by ON tests (submitted_by);
CREATE INDEX ix_tests_submitted_by_user_id ON tests (submitted_by_user_id);
CREATE INDEX ix_tests_testing_type ON tests (testing_type);
CREATE INDEX ix_tests_title ON tests (title);
CREATE INDEX ix_test_features_customer_id ON test_features (customer_id);
CREATE INDEX ix_test_features_feature_id ON test_features (feature_id);
CREATE INDEX ix_test_features_test_id ON test_features (test_id);
CREATE INDEX ix_bugs_customer_id ON bugs (customer_id);
CREATE INDEX ix_bugs_reported_by_user_id ON bugs (reported_by_user_id);
CREATE INDEX ix_bugs_test_feature_id ON bugs (test_feature_id);
CREATE INDEX ix_bugs_test_id ON bugs (test_id);
"""
"""The built-in job's tables as the application's models (testio-mcp 0.4.0, mirrored by
``backfill_plugins.testmanagement.models``) give them on PostgreSQL: the same columns, NOT NULL,
defaults, foreign keys and indexes as tests/data/testio_mcp_0_4_0.sql, with PostgreSQL's types.
Two departures from what ``create_all`` would compile: the ids are plain INTEGER rather than
SERIAL (the application always supplies them), and ``bugs.known`` defaults to ``false``, since
``DEFAULT 0`` on a BOOLEAN is refused by PostgreSQL (the application itself only runs on SQLite).
Unlike the application's SQLite file, every foreign key here is enforced."""
COPIED = ("users", "products", "features", "tests", "test_features", "bugs")
"""The tables copied from the SQLite source, referenced tables first."""


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


def _to_postgres(value: Any, pg_type: str) -> Any:
    """A value read from SQLite as asyncpg wants it for a column of ``pg_type``."""
    if value is None:
        return None
    if pg_type == "boolean":
        return bool(value)
    if pg_type.startswith("timestamp"):  # SQLAlchemy stores 'YYYY-MM-DD HH:MM:SS.ffffff' in SQLite
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return value


async def _load(url: str, source: Path) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA)
        with sqlite3.connect(source) as lite:
            for table in COPIED:
                types = dict(
                    await conn.fetch(
                        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1",
                        table,
                    )
                )
                columns = [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
                convert = [types[c] for c in columns]
                records = [
                    tuple(_to_postgres(v, t) for v, t in zip(row, convert, strict=True))
                    for row in lite.execute(f"SELECT {', '.join(columns)} FROM {table}")
                ]
                if records:
                    await conn.copy_records_to_table(table, records=records, columns=columns)
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
            asyncio.run(_load(url, source))
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
        asyncio.run(_load(SERVER.rsplit("/", 1)[0] + "/" + name, source))
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
