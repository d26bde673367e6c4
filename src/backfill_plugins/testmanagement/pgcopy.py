"""The synthetic database on PostgreSQL: the application's tables with PostgreSQL's types
(``SCHEMA``), and a synthetic SQLite file's rows copied into them (``copy_from_sqlite``).

The PostgreSQL tests' scratch databases and the benchmark's template databases are made this way,
so that both hold the same tables. It needs asyncpg (the ``postgres`` extra).
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

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


async def copy_from_sqlite(url: str, source: Path) -> None:
    """Create SCHEMA in the empty database at ``url`` and copy ``source``'s tables (COPIED) into it."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA)
        with contextlib.closing(sqlite3.connect(source)) as lite:
            for table in COPIED:
                types = dict(
                    await conn.fetch(
                        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1",
                        table,
                    )
                )
                columns = [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
                convert = [types[c] for c in columns]
                records = (
                    tuple(_to_postgres(v, t) for v, t in zip(row, convert, strict=True))
                    for row in lite.execute(f"SELECT {', '.join(columns)} FROM {table}")
                )
                await conn.copy_records_to_table(table, records=records, columns=columns)
    finally:
        await conn.close()
