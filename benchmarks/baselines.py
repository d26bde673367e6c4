"""The two hand-written alternatives to ``backfill run test_features bug_attribution`` (issue 5).

- ``set_based``: the best a user can write by hand: two set-based SQL statements using SQLite's
  JSON functions, in one transaction through the stdlib ``sqlite3`` module. No validation.
  ``user_stories`` goes through a Python function registered on the connection: the
  application's text (``json.dumps``) is not one SQLite's JSON functions write.
- ``naive_orm``: the script a user would write first with SQLModel: OFFSET pages of 500, a
  SELECT per feature (``session.get``), ``session.add`` per new row, a commit per page.

Both do the whole job (test features, then bug attribution) and must leave ``test_features``
and ``bugs.test_feature_id`` exactly as backfill does; ``snapshot_digest`` and
``first_difference`` check that.

Run one in its own process (so its peak memory is its own):
    python benchmarks/baselines.py {set-based|naive-orm} PATH
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backfill_plugins.testmanagement.models import Test

# --- set-based SQL ---------------------------------------------------------------------------------

FEATURES = """
INSERT INTO test_features (id, customer_id, test_id, feature_id, title, description, howtofind,
                           user_stories, enable_default, enable_content, enable_visual)
SELECT json_extract(f.value, '$.id'), t.customer_id, t.id, json_extract(f.value, '$.feature_id'),
       coalesce(json_extract(f.value, '$.title'), ''), json_extract(f.value, '$.description'),
       json_extract(f.value, '$.howtofind'), stories_text(f.value -> '$.user_stories'),
       coalesce(json_extract(f.value, '$.enable_default'), 0), coalesce(json_extract(f.value, '$.enable_content'), 0),
       coalesce(json_extract(f.value, '$.enable_visual'), 0)
FROM tests t, json_each(t.data, '$.features') f
WHERE json_valid(t.data) AND json_type(t.data, '$.features') = 'array'
  AND json_type(f.value, '$.id') = 'integer' AND json_extract(f.value, '$.id') != 0
  AND json_extract(f.value, '$.feature_id') IN (SELECT id FROM features)
ORDER BY t.id
ON CONFLICT(id) DO UPDATE SET customer_id = excluded.customer_id, test_id = excluded.test_id,
  feature_id = excluded.feature_id, title = excluded.title, description = excluded.description,
  howtofind = excluded.howtofind, user_stories = excluded.user_stories,
  enable_default = excluded.enable_default, enable_content = excluded.enable_content,
  enable_visual = excluded.enable_visual
"""  # noqa: E501


def _stories_text(value: str | None) -> str:
    """The application's user_stories text (json.dumps), which SQLite's JSON functions, writing
    compact UTF-8, cannot produce: a function registered on the connection."""
    return json.dumps((json.loads(value) if value is not None else None) or [])


BUGS = """
UPDATE bugs SET test_feature_id = (
  SELECT tf.id FROM test_features tf
  WHERE tf.id = json_extract(bugs.raw_data, '$.test_feature.id') AND tf.customer_id = bugs.customer_id)
WHERE json_valid(raw_data)
"""

FLAGS = ("enable_default", "enable_content", "enable_visual")


def set_based(path: Path | str) -> None:
    """Both backfills as set-based statements, in one transaction through stdlib sqlite3."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.create_function("stories_text", 1, _stories_text, deterministic=True)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(FEATURES)
            conn.execute(BUGS)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


# --- the naive ORM script --------------------------------------------------------------------------

PAGE = 500


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_feature(f: Any) -> bool:
    """The types the extractor accepts for one feature object (ids as JSON integers)."""
    if not isinstance(f, dict):
        return False
    if not f.get("id") or not f.get("feature_id"):
        return True  # skipped, but does not spoil the test
    return (
        _is_id(f["id"])
        and _is_id(f["feature_id"])
        and f.get("title", "") is not None
        and all(f.get(k) is None or isinstance(f[k], str) for k in ("title", "description", "howtofind"))
        and all(f.get(k) is None or f[k] in (True, False) for k in FLAGS)
    )


def _features_of(data_text: str | None) -> list[dict[str, Any]]:
    """The features of one test's JSON; none if the JSON is malformed or has the wrong shape."""
    if data_text is None:
        return []
    try:
        data = json.loads(data_text)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    features = data.get("features")
    if not isinstance(features, list) or not all(_valid_feature(f) for f in features):
        return []
    return [f for f in features if f.get("id") and f.get("feature_id")]


def _feature_ref(raw_text: str | None) -> tuple[bool, int | None]:
    """(usable, feature id) from a bug's JSON; unusable JSON leaves the bug alone."""
    if raw_text is None:
        return True, None
    try:
        raw = json.loads(raw_text)
    except ValueError:
        return False, None
    if raw is None:
        return True, None
    if not isinstance(raw, dict):
        return False, None
    ref = raw.get("test_feature")
    if ref is None:
        return True, None
    if not isinstance(ref, dict):
        return False, None
    fid = ref.get("id")
    if fid is not None and not _is_id(fid):
        return False, None
    return True, fid or None


def feature_values(test: Test, f: dict[str, Any]) -> dict[str, Any]:
    """The columns of the ``test_features`` row for feature ``f`` of ``test``, but its id."""
    return {
        "customer_id": test.customer_id,
        "test_id": test.id,
        "feature_id": f.get("feature_id"),
        "title": f.get("title", ""),
        "description": f.get("description"),
        "howtofind": f.get("howtofind"),
        "user_stories": json.dumps(f.get("user_stories") or []),
        **{k: bool(f.get(k) or False) for k in FLAGS},
    }


def naive_orm(path: Path | str) -> None:
    """Both backfills the way a user would first write them with SQLModel."""
    from sqlmodel import Session, col, create_engine, select

    from backfill_plugins.testmanagement.models import Bug, Feature, Test, TestFeature

    engine = create_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        offset = 0
        while True:
            tests = session.exec(select(Test).order_by(col(Test.id)).offset(offset).limit(PAGE)).all()
            if not tests:
                break
            for test in tests:
                if test.customer_id is None:
                    continue
                for f in _features_of(test.data):
                    if session.get(Feature, f["feature_id"]) is None:
                        continue  # never a dangling feature_id
                    values = feature_values(test, f)
                    feature = session.get(TestFeature, f["id"])
                    if feature is None:
                        session.add(TestFeature(id=f["id"], **values))
                    else:
                        for k, v in values.items():
                            setattr(feature, k, v)
            session.commit()
            offset += PAGE

        offset = 0
        while True:
            bugs = session.exec(select(Bug).order_by(col(Bug.id)).offset(offset).limit(PAGE)).all()
            if not bugs:
                break
            for bug in bugs:
                usable, fid = _feature_ref(bug.raw_data)
                if not usable:
                    continue
                if fid is not None:
                    feature = session.get(TestFeature, fid)
                    if feature is None or feature.customer_id != bug.customer_id:
                        continue
                bug.test_feature_id = fid
            session.commit()
            offset += PAGE
    engine.dispose()


# --- comparing the results -------------------------------------------------------------------------

SNAPSHOT = {
    "test_features": "SELECT * FROM test_features ORDER BY id",
    "bugs": "SELECT id, test_feature_id FROM bugs ORDER BY id",
}
"""What every approach must leave identical: all of test_features, and each bug's attribution."""


def _rows(path: Path | str, query: str) -> Iterator[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield from conn.execute(query)
    finally:
        conn.close()


def snapshot_digest(path: Path | str) -> dict[str, tuple[int, str]]:
    """Per table: (row count, sha256 of every row's repr, so 0 and '0' and 0.0 differ)."""
    out = {}
    for table, query in SNAPSHOT.items():
        h = hashlib.sha256()
        n = 0
        for row in _rows(path, query):
            h.update(repr(row).encode())
            h.update(b"\n")
            n += 1
        out[table] = (n, h.hexdigest())
    return out


def first_difference(a: Path | str, b: Path | str) -> str | None:
    """The first row that differs between the snapshots of ``a`` and ``b``, or None."""
    for table, query in SNAPSHOT.items():
        for i, (ra, rb) in enumerate(zip_longest(_rows(a, query), _rows(b, query))):
            if ra != rb or repr(ra) != repr(rb):
                return f"{table}, row {i} in id order:\n    {a}: {ra!r}\n    {b}: {rb!r}"
    return None


MODES: dict[str, Callable[[Path | str], None]] = {"set-based": set_based, "naive-orm": naive_orm}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in MODES or not Path(argv[1]).is_file():
        print(f"usage: python {Path(__file__).name} {{{'|'.join(MODES)}}} PATH", file=sys.stderr)
        return 2
    started = time.perf_counter()
    MODES[argv[0]](argv[1])
    print(json.dumps({"mode": argv[0], "seconds": round(time.perf_counter() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
