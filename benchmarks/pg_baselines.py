"""The two hand-written alternatives to ``backfill run test_features bug_attribution`` on
PostgreSQL (issue 19), and the snapshot every approach must leave.

- ``set_based``: ``baselines.set_based`` written for PostgreSQL: two set-based statements in one
  transaction through asyncpg, with the plan the issue asks for (no nested-loop joins, no JIT,
  256 MB of ``work_mem``, all ``SET LOCAL``). JSON that does not parse is skipped as SQLite's
  ``json_valid`` skips it: ``pg_input_is_valid`` from PostgreSQL 16, a ``pg_temp`` function that
  catches the cast's error before. ``user_stories`` is the text of the list inside ``tests.data``
  as PostgreSQL's ``json`` type keeps it (verbatim), which is ``json.dumps`` of the list because
  the application stored ``tests.data`` with ``json.dumps``; a falsy value gives ``[]``.
  A bug is updated only where its attribution changes. No validation.
- ``naive_orm``: ``baselines.naive_orm`` on asyncpg, the project's PostgreSQL driver: the same
  OFFSET pages of 500, a ``session.get`` per feature, a commit per page, with SQLModel's
  ``AsyncSession`` (``expire_on_commit=False``, as async sessions must).

Run one in its own process (so its peak memory is its own):
    python benchmarks/pg_baselines.py {set-based|naive-orm} URL
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Callable, Coroutine
from itertools import zip_longest
from typing import Any

import asyncpg
from baselines import SNAPSHOT, _feature_ref, _features_of, feature_values

# --- set-based SQL ---------------------------------------------------------------------------------

PLAN = ("SET LOCAL enable_nestloop = off", "SET LOCAL jit = off", "SET LOCAL work_mem = '256MB'")
"""The issue's plan for the job's transaction. The JSON arrays are still read by nested loops over
their function scans (``LATERAL`` leaves no other way), never a join between tables."""

TRY_JSON = """CREATE FUNCTION pg_temp.try_{kind}(t text) RETURNS {kind}
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN t::{kind};
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END $$"""
"""Before PostgreSQL 16: the text as json or jsonb, NULL where it does not parse."""

INTEGER = "'^-?[0-9]{1,18}$'"
"""The text of an id that is an integer and fits a BIGINT."""

FEATURES = """
INSERT INTO test_features (id, customer_id, test_id, feature_id, title, description, howtofind,
                           user_stories, enable_default, enable_content, enable_visual)
SELECT DISTINCT ON (ids.id) ids.id, t.customer_id, t.id, ids.feature_id,
       coalesce(v.f ->> 'title', ''), v.f ->> 'description', v.f ->> 'howtofind',
       CASE WHEN coalesce(v.f -> 'user_stories', 'null') IN ('null', '[]', '""', '0', 'false', '{{}}')
            THEN '[]' ELSE (e.value -> 'user_stories')::text END,
       coalesce((v.f ->> 'enable_default')::boolean, false),
       coalesce((v.f ->> 'enable_content')::boolean, false),
       coalesce((v.f ->> 'enable_visual')::boolean, false)
FROM tests t
CROSS JOIN LATERAL (SELECT {json} -> 'features' AS features OFFSET 0) d
CROSS JOIN LATERAL json_array_elements(CASE WHEN json_typeof(d.features) = 'array' THEN d.features END)
     WITH ORDINALITY e(value, n)
CROSS JOIN LATERAL (SELECT e.value::jsonb AS f OFFSET 0) v
CROSS JOIN LATERAL (
  SELECT CASE WHEN jsonb_typeof(v.f -> 'id') = 'number' AND v.f ->> 'id' ~ {integer}
              THEN (v.f ->> 'id')::bigint END AS id,
         CASE WHEN jsonb_typeof(v.f -> 'feature_id') IN ('number', 'string')
                   AND v.f ->> 'feature_id' ~ {integer}
              THEN (v.f ->> 'feature_id')::bigint END AS feature_id
  OFFSET 0) ids
WHERE ids.id <> 0 AND ids.feature_id IN (SELECT id FROM features)
ORDER BY ids.id, t.id DESC, e.n DESC
ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, test_id = excluded.test_id,
  feature_id = excluded.feature_id, title = excluded.title, description = excluded.description,
  howtofind = excluded.howtofind, user_stories = excluded.user_stories,
  enable_default = excluded.enable_default, enable_content = excluded.enable_content,
  enable_visual = excluded.enable_visual
"""
"""SQLite's statement: the ``OFFSET 0`` subqueries keep PostgreSQL from parsing the same JSON once
per use, and ``DISTINCT ON`` keeps the last of a repeated id (SQLite's upsert, row by row, lets
the last one win; PostgreSQL's refuses to touch a row twice)."""

BUGS = """
UPDATE bugs b SET test_feature_id = tf.id
FROM (
  SELECT b2.id, b2.customer_id,
         CASE WHEN jsonb_typeof(r.raw -> 'test_feature' -> 'id') IN ('number', 'string')
                   AND r.raw #>> '{{test_feature,id}}' ~ {integer}
              THEN (r.raw #>> '{{test_feature,id}}')::bigint END AS feature_id
  FROM bugs b2 CROSS JOIN LATERAL (SELECT {jsonb} AS raw OFFSET 0) r
  WHERE r.raw IS NOT NULL
) x
LEFT JOIN test_features tf ON tf.id = x.feature_id AND tf.customer_id = x.customer_id
WHERE b.id = x.id AND b.test_feature_id IS DISTINCT FROM tf.id
"""


def _parsed(column: str, kind: str, validates: bool) -> str:
    """SQL for ``column`` as ``kind`` (json or jsonb), NULL where it is not valid JSON."""
    if validates:
        return f"CASE WHEN pg_input_is_valid({column}, '{kind}') THEN {column}::{kind} END"
    return f"pg_temp.try_{kind}({column})"


def statements(server_version: int) -> list[str]:
    """The job's statements, in order, for a server of this ``server_version_num``."""
    validates = server_version >= 160000
    setup = [] if validates else [TRY_JSON.format(kind="json"), TRY_JSON.format(kind="jsonb")]
    return [
        *PLAN,
        *setup,
        FEATURES.format(json=_parsed("t.data", "json", validates), integer=INTEGER),
        BUGS.format(jsonb=_parsed("b2.raw_data", "jsonb", validates), integer=INTEGER),
    ]


async def set_based(url: str) -> None:
    """Both backfills as set-based statements, in one transaction."""
    conn = await asyncpg.connect(url)
    try:
        version = int(await conn.fetchval("SHOW server_version_num"))
        async with conn.transaction():
            for statement in statements(version):
                await conn.execute(statement)
    finally:
        await conn.close()


# --- the naive ORM script --------------------------------------------------------------------------

PAGE = 500


def async_url(url: str) -> str:
    """``url`` with SQLAlchemy's asyncpg driver named."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+')[0]}+asyncpg://{rest}"


async def naive_orm(url: str) -> None:
    """``baselines.naive_orm``, awaited."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlmodel import col, select
    from sqlmodel.ext.asyncio.session import AsyncSession

    from backfill_plugins.testmanagement.models import Bug, Feature, Test, TestFeature

    engine = create_async_engine(async_url(url))
    async with AsyncSession(engine, expire_on_commit=False) as session:
        offset = 0
        while True:
            tests = (await session.exec(select(Test).order_by(col(Test.id)).offset(offset).limit(PAGE))).all()
            if not tests:
                break
            for test in tests:
                if test.customer_id is None:
                    continue
                for f in _features_of(test.data):
                    if await session.get(Feature, f["feature_id"]) is None:
                        continue  # never a dangling feature_id
                    values = feature_values(test, f)
                    feature = await session.get(TestFeature, f["id"])
                    if feature is None:
                        session.add(TestFeature(id=f["id"], **values))
                    else:
                        for k, v in values.items():
                            setattr(feature, k, v)
            await session.commit()
            offset += PAGE

        offset = 0
        while True:
            bugs = (await session.exec(select(Bug).order_by(col(Bug.id)).offset(offset).limit(PAGE))).all()
            if not bugs:
                break
            for bug in bugs:
                usable, fid = _feature_ref(bug.raw_data)
                if not usable:
                    continue
                if fid is not None:
                    feature = await session.get(TestFeature, fid)
                    if feature is None or feature.customer_id != bug.customer_id:
                        continue
                bug.test_feature_id = fid
            await session.commit()
            offset += PAGE
    await engine.dispose()


# --- comparing the results -------------------------------------------------------------------------


def _as_sqlite(value: Any) -> Any:
    """A value as SQLite's snapshot holds it: booleans are the integers 0 and 1 there."""
    return int(value) if isinstance(value, bool) else value


async def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(map(_as_sqlite, r)) for r in await conn.fetch(query)]
    finally:
        await conn.close()


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    """The rows of ``query`` on ``url``, each value as SQLite would hold it."""
    return asyncio.run(_rows(url, query))


def snapshot_digest(url: str) -> dict[str, tuple[int, str]]:
    """``baselines.snapshot_digest`` of a PostgreSQL database: equal to a SQLite file's when
    both hold the same rows."""
    out = {}
    for table, query in SNAPSHOT.items():
        h = hashlib.sha256()
        found = rows(url, query)
        for row in found:
            h.update(repr(row).encode())
            h.update(b"\n")
        out[table] = (len(found), h.hexdigest())
    return out


def first_difference(
    a: str, b: str, read_a: Callable[[str, str], Any] = rows, read_b: Callable[[str, str], Any] = rows
) -> str | None:
    """The first snapshot row that differs between databases ``a`` and ``b``, or None; each is
    read with its own reader (``rows`` here, or ``baselines._rows`` for a SQLite file)."""
    for table, query in SNAPSHOT.items():
        for i, (ra, rb) in enumerate(zip_longest(read_a(a, query), read_b(b, query))):
            if ra != rb or repr(ra) != repr(rb):
                return f"{table}, row {i} in id order:\n    {a}: {ra!r}\n    {b}: {rb!r}"
    return None


MODES: dict[str, Callable[[str], Coroutine[Any, Any, None]]] = {
    "set-based": set_based,
    "naive-orm": naive_orm,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in MODES or not argv[1].startswith(("postgresql", "postgres:")):
        print(f"usage: python {sys.argv[0]} {{{'|'.join(MODES)}}} postgresql://…", file=sys.stderr)
        return 2
    started = time.perf_counter()
    asyncio.run(MODES[argv[0]](argv[1]))
    print(json.dumps({"mode": argv[0], "seconds": round(time.perf_counter() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
