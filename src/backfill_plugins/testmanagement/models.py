"""The test-management cache's tables, as SQLModel models (the columns backfill relies on)."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, Text, text
from sqlmodel import Field, SQLModel


class Test(SQLModel, table=True):
    __tablename__ = "tests"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(nullable=False)
    product_id: int | None = None
    status: str | None = Field(default=None, sa_type=Text)
    data: str | None = Field(default=None, sa_type=Text)
    """The platform's JSON for the test; ``data.features`` lists its test features."""


class TestFeature(SQLModel, table=True):
    __tablename__ = "test_features"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(nullable=False)
    test_id: int = Field(sa_column=Column(Integer, ForeignKey("tests.id"), nullable=False))
    feature_id: int | None = None
    title: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=text("''")))
    description: str | None = Field(default=None, sa_type=Text)
    howtofind: str | None = Field(default=None, sa_type=Text)
    user_stories: str = Field(
        default="[]", sa_column=Column(Text, nullable=False, server_default=text("'[]'"))
    )
    enable_default: bool | None = None
    enable_content: bool | None = None
    enable_visual: bool | None = None


class Bug(SQLModel, table=True):
    __tablename__ = "bugs"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(nullable=False)
    test_id: int | None = Field(default=None, foreign_key="tests.id")
    raw_data: str | None = Field(default=None, sa_type=Text)
    """The platform's JSON for the bug; ``raw_data.test_feature.id`` names its test feature."""
    test_feature_id: int | None = Field(default=None, foreign_key="test_features.id")
