"""The test-management cache's tables, as SQLModel models: the real schema of testio-mcp 0.4.0.

The cache (``~/.testio-mcp/cache.db``) is created by the application's Alembic migrations. These
models mirror the tables backfill reads, writes or references, with every column, NOT NULL,
server default, foreign key and index as ``alembic upgrade head`` leaves them, in the same column
order: ``products``, ``features``, ``tests``, ``test_features``, ``bugs``, and ``users`` (which
``tests`` and ``bugs`` reference). Where the Alembic schema differs from the application's own
``SQLModel.metadata.create_all``, they follow Alembic: ``test_features.user_stories`` has
``DEFAULT '[]'`` and ``enable_*`` ``DEFAULT '0'``, and the bugs' foreign key to ``test_features`` is
named ``fk_bugs_test_feature_id``. Python-side defaults are the application's too.

``tests/data/testio_mcp_0_4_0.sql`` holds the real DDL, and
``tests/unit/test_testmanagement_schema.py`` fails if these models drift from it. The migrations'
other objects (the FTS5 ``search_index`` and the triggers that keep it up to date, ``sync_events``,
``sync_metadata``, ``test_platforms``, ``alembic_version``) are not modelled: backfill neither reads
nor writes them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Column, ForeignKey, Integer, Text, text
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class User(SQLModel, table=True):
    """People who create tests and report bugs; here only so that foreign keys resolve."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(index=True)
    username: str = Field(max_length=255, index=True)
    user_type: str = Field(max_length=50, index=True)
    raw_data: str = Field(default="{}")
    last_seen: datetime = Field(default_factory=_now)
    first_seen: datetime = Field(default_factory=_now)


class Product(SQLModel, table=True):
    __tablename__ = "products"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(index=True)
    data: str
    """The platform's JSON for the product, as ``json.dumps`` wrote it."""
    last_synced: datetime | None = None
    title: str
    product_type: str | None = Field(default=None, max_length=50, index=True)


class Feature(SQLModel, table=True):
    """A product's feature; ``test_features.feature_id`` references it."""

    __tablename__ = "features"

    id: int = Field(primary_key=True)
    product_id: int = Field(foreign_key="products.id", index=True)
    title: str
    description: str | None = None
    howtofind: str | None = None
    user_stories: str = "[]"
    section_ids: str = "[]"
    raw_data: str
    """The platform's JSON for the feature, as ``json.dumps`` wrote it."""
    last_synced: datetime = Field(default_factory=_now)


class Test(SQLModel, table=True):
    __tablename__ = "tests"
    __test__ = False  # not a pytest test class, despite the name

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(index=True)
    product_id: int = Field(index=True)
    """The product the test belongs to (no foreign key in the real schema)."""
    data: str
    """The platform's JSON for the test, as ``json.dumps`` wrote it; ``data.features`` lists its
    test features."""
    status: str = Field(index=True)
    start_at: datetime | None = Field(default=None, index=True)
    end_at: datetime | None = Field(default=None, index=True)
    synced_at: datetime | None = None
    bugs_synced_at: datetime | None = None
    created_by: str | None = Field(default=None, max_length=255, index=True)
    submitted_by: str | None = Field(default=None, max_length=255, index=True)
    created_by_user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    submitted_by_user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    title: str | None = Field(default=None, max_length=500, index=True)
    testing_type: str | None = Field(default=None, max_length=50, index=True)
    goal: str | None = Field(default=None, sa_type=Text)
    instructions: str | None = Field(default=None, sa_type=Text)
    out_of_scope: str | None = Field(default=None, sa_type=Text)
    enable_low: bool | None = None
    enable_high: bool | None = None
    enable_critical: bool | None = None
    test_environment: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class TestFeature(SQLModel, table=True):
    """A feature as listed in one test (``tests.data.features[i]``): what backfill writes."""

    __tablename__ = "test_features"
    __test__ = False  # not a pytest test class, despite the name

    id: int = Field(primary_key=True)
    customer_id: int = Field(index=True)
    test_id: int = Field(foreign_key="tests.id", index=True)
    feature_id: int = Field(foreign_key="features.id", index=True)
    title: str
    description: str | None = None
    howtofind: str | None = None
    user_stories: str = Field(default="[]", sa_column_kwargs={"server_default": "[]"})
    """``json.dumps`` of the listed user stories (ASCII-escaped, ``", "`` between items)."""
    enable_default: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    enable_content: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    enable_visual: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})


class Bug(SQLModel, table=True):
    __tablename__ = "bugs"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(index=True)
    test_id: int = Field(foreign_key="tests.id", index=True)
    title: str
    severity: str | None = None
    status: str | None = None
    raw_data: str
    """The platform's JSON for the bug, as ``json.dumps`` wrote it; ``raw_data.test_feature.id``
    names its test feature."""
    synced_at: datetime | None = None
    reported_by_user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    test_feature_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("test_features.id", name="fk_bugs_test_feature_id"), nullable=True, index=True
        ),
    )
    actual_result: str | None = Field(default=None, sa_type=Text)
    expected_result: str | None = Field(default=None, sa_type=Text)
    steps: str | None = Field(default=None, sa_type=Text)
    reported_at: datetime | None = None
    rejection_reason: str | None = Field(default=None, sa_type=Text)
    known: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=text("0")))
