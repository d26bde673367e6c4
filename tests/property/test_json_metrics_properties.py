"""The coverage validator's JSON metrics count the same on PostgreSQL as on SQLite, on the same
generated rows: valid JSON, malformed text, JSON that is not an object, ids and keys of every JSON
type, missing keys. Per row (which bugs name a feature, which features a test lists and with what
id) and per metric, through the real engine on both databases.

On a PostgreSQL server of 16 or later, the same also holds for the way servers before 16 read JSON
text (the temporary function, ``SAFE_JSONB``) against ``pg_input_is_valid``.

Left out of the generated text, because the two databases differ on them on every version (see
docs/architecture.md): the escape ``\\u0000`` and lone surrogates, which PostgreSQL's jsonb
refuses and SQLite accepts, and duplicate keys, of which SQLite reads the first and PostgreSQL the
last.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import sqlite3
from collections.abc import Awaitable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import event, given, settings, strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Dialect

from backfill_core import Database, resolve_url
from backfill_core.app.validation import run_validators
from backfill_core.sql import SAFE_JSONB_FUNCTION, json_value, needs_safe_jsonb
from backfill_plugins.testmanagement.validators import CoverageValidator, bugs, listed
from support.backends import SCHEMA
from support.postgres import empty_database, execute, needs_server

pytestmark = needs_server

text = st.text(st.characters(codec="utf-8", max_codepoint=0xFFFF, exclude_characters="\x00"), max_size=8)
numbers = (
    st.sampled_from(
        [0, 1, 2, 3, 5, 8, -1, 0.0, -0.0, 1.0, 2.5, 3.99, -1.5, 5e-324, 2**63 - 1, 2**63, -(2**63) - 1]
    )
    | st.integers(0, 13)
    | st.integers(0, 13)
    | st.integers()
    | st.floats(-(2.0**53), 2.0**53, allow_nan=False)
)
"""Integers of any size; floats below 2**53 (beyond, SQLite reads a number with a fraction or
an exponent as the nearest double, PostgreSQL reads it exactly: the ids differ in their last
digits, too large to name a row either way)."""
ids = (
    numbers
    | st.sampled_from(
        [True, False, None, "", "0", "1", " 2", "\t3x", "+5", "-1", "5.9", "1e3", "0x10", "abc", "-"]
    )
    | st.sampled_from(["08", "99999999999999999999", "-99999999999999999999"])
    | text
    | st.lists(st.integers(0, 3), max_size=2)
    | st.dictionaries(st.sampled_from(["id", "x"]), st.integers(0, 3), max_size=2)
)
scalars = st.none() | st.booleans() | numbers | text
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
listing = st.fixed_dictionaries({"id": ids, "feature_id": ids}, optional={"title": text})
feature = listing | st.fixed_dictionaries({}, optional={"id": ids, "feature_id": ids}) | anything
test_data = (
    st.fixed_dictionaries({"features": st.lists(listing, min_size=1, max_size=4)})
    | st.fixed_dictionaries(
        {}, optional={"features": st.lists(feature, max_size=4) | anything, "x": anything}
    )
    | anything
)
bug_data = (
    st.fixed_dictionaries({"test_feature": st.fixed_dictionaries({"id": ids}, optional={"title": text})})
    | st.fixed_dictionaries(
        {},
        optional={"test_feature": st.fixed_dictionaries({}, optional={"id": ids}) | anything, "id": ids},
    )
    | anything
)


def _texts(values: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """JSON text of ``values``, compact or indented, ASCII-escaped or not; or that text broken
    (cut short, or with a character dropped or added); or any text at all."""
    dumped = st.builds(
        lambda v, indent, ascii: json.dumps(v, indent=indent, ensure_ascii=ascii),
        values,
        st.sampled_from([None, 1]),
        st.booleans(),
    )
    broken = st.builds(
        lambda t, i, c: t[:i] + c + t[i + 1 :] if c else t[:i],
        dumped,
        st.integers(0, 40),
        st.sampled_from(["", ",", "}", "]", '"', "x", " "]),
    )
    # A character dropped from an escaped surrogate pair leaves a lone surrogate, which the two
    # databases read differently (see above): text with any surrogate escape, or \\u0000, is
    # left out (astral characters still come, unescaped).
    return st.one_of(dumped, dumped, dumped, broken, text).filter(lambda t: not LONE_OR_NUL.search(t))


Rows = tuple[list[str], list[tuple[str, bool]], list[int]]
rows = st.tuples(
    st.lists(_texts(test_data), min_size=1, max_size=6),
    st.lists(st.tuples(_texts(bug_data), st.booleans()), max_size=6),
    st.lists(st.sampled_from([0, 1, 2, 3, 5, 8, 13]), unique=True, min_size=1, max_size=4),
)
"""tests.data of tests 1, 2, ...; (raw_data, attributed) of bugs 1, 2, ...; the test_features ids
(all of test 1), which features' ids, cast as SQLite casts them, may or may not name."""

T = TypeVar("T")
LONE_OR_NUL = re.compile(r"\\u(0000|d[89a-f])", re.IGNORECASE)
DELETE = ["DELETE FROM bugs", "DELETE FROM test_features", "DELETE FROM tests", "DELETE FROM features"]


def _inserts(data: Rows) -> list[tuple[str, list[tuple[Any, ...]]]]:
    tests, bug_rows, written = data
    return [
        ("INSERT INTO tests (id, customer_id, data) VALUES (?, 7, ?)", list(enumerate(tests, 1))),
        ("INSERT INTO test_features (id, customer_id, test_id) VALUES (?, 7, 1)", [(i,) for i in written]),
        (
            "INSERT INTO bugs (id, customer_id, test_id, raw_data, test_feature_id) VALUES (?, 7, 1, ?, ?)",
            [
                (i, raw, written[0] if attributed and written else None)
                for i, (raw, attributed) in enumerate(bug_rows, 1)
            ],
        ),
    ]


class Both:
    """The SQLite file and the PostgreSQL database, open (for the engine, and for filling) on
    one event loop for the whole module, so that an example costs its queries only."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.stack = AsyncExitStack()
        self.lite = self.run(self.stack.enter_async_context(Database(resolve_url(str(path)))))
        self.pg = self.run(self.stack.enter_async_context(Database(resolve_url(url))))
        self.filler: asyncpg.Connection = self.run(asyncpg.connect(url))
        self.run(self.pg.schema_gap({"tests": ("id",)}))  # connected: the dialect knows the version

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def close(self) -> None:
        self.run(self.filler.close())
        self.run(self.stack.aclose())
        self.loop.close()

    def fill(self, data: Rows) -> None:
        """Both databases hold exactly ``data``."""
        with sqlite3.connect(self.path) as conn:
            for sql in DELETE:
                conn.execute(sql)
            for sql, values in _inserts(data):
                conn.executemany(sql, values)
        self.run(self._fill_postgres(data))

    async def _fill_postgres(self, data: Rows) -> None:
        async with self.filler.transaction():
            for sql in DELETE:
                await self.filler.execute(sql)
            for sql, values in _inserts(data):
                numbered = sql
                for n in range(1, sql.count("?") + 1):
                    numbered = numbered.replace("?", f"${n}", 1)
                await self.filler.executemany(numbered, values)

    def observe(self, db: Database, dialect: Dialect | None = None) -> dict[str, Any]:
        return self.run(_observe(db, dialect))


async def _observe(db: Database, dialect: Dialect | None) -> dict[str, Any]:
    """Per bug whether it names a feature, the listed features (test, id) and, unless
    ``dialect`` is given, every metric's counts.

    The per-row queries are compiled for ``dialect`` (default: the database's own) and run as
    SQL, with what they need created first."""
    names = select(bugs.c.id, json_value(bugs.c.raw_data, "test_feature", "id").is_not(None))
    features = select(listed.c.test_id, listed.c.id)
    out: dict[str, Any] = {}
    for name, query in (("names", names), ("listed", features)):
        sql = str(query.compile(dialect=dialect or db.sa_dialect))
        async with db.sqlalchemy() as conn:
            if needs_safe_jsonb(sql):
                await conn.exec_driver_sql(SAFE_JSONB_FUNCTION)
            found: list[tuple[Any, ...]] = [tuple(r) for r in await conn.exec_driver_sql(sql)]
            out[name] = sorted((key, int(value)) for key, value in found)
    if dialect is None:
        results = await run_validators(db, [CoverageValidator()])
        out["metrics"] = {r.name: (r.numerator, r.denominator) for r in results}
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Both]:
    """An empty SQLite file and an empty PostgreSQL database, both with backends.SCHEMA."""
    path = tmp_path_factory.mktemp("json-metrics") / "lite.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    with empty_database() as url:
        asyncio.run(execute(url, SCHEMA))
        opened = Both(path, url)
        try:
            yield opened
        finally:
            opened.close()


@settings(max_examples=100)
@given(data=rows)
def test_postgresql_counts_json_as_sqlite_does(both: Both, data: Rows) -> None:
    both.fill(data)

    on_sqlite = both.observe(both.lite)
    on_postgres = both.observe(both.pg)

    event(f"bugs naming a feature: {min(sum(n for _, n in on_sqlite['names']), 2)}+")
    event(f"features listed: {min(len(on_sqlite['listed']), 2)}+")
    event(f"listed features written: {min(on_sqlite['metrics']['features_accounted'][0], 1)}+")
    assert on_postgres["names"] == on_sqlite["names"]
    assert on_postgres["listed"] == on_sqlite["listed"]
    assert on_postgres["metrics"] == on_sqlite["metrics"]


@pytest.fixture(scope="module")
def postgresql_16(both: Both) -> Dialect:
    """The test server's dialect; the test is skipped on a server older than 16."""
    dialect = both.pg.sa_dialect
    if (dialect.server_version_info or (0,)) < (16,):
        pytest.skip("one way only on this server: pg_input_is_valid needs PostgreSQL 16 or later")
    return dialect


@settings(max_examples=100)
@given(data=rows)
def test_on_postgresql_16_both_ways_of_reading_json_agree(
    both: Both, postgresql_16: Dialect, data: Rows
) -> None:
    before_16 = copy.copy(postgresql_16)
    before_16.server_version_info = (15, 0)
    both.fill(data)

    assert both.observe(both.pg, before_16) == both.observe(both.pg, postgresql_16)
