"""The testing kit says what its generated rows did, and lets them fill every required column.

SQLite only: the kit builds and checks its own SQLite files.
"""

from __future__ import annotations

import itertools
import math
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import find, given, settings, strategies as st

from backfill_core import Children, Extractor, Ref, Row, Update, Upsert
from backfill_core.testing import (
    MIN_ACCEPTED,
    CheckSummary,
    check_dry_run_agrees,
    check_extractor,
    check_idempotent,
    json_values,
    payloads_like,
    rows,
    well_formed_rows,
)
from backfill_core.testing.database import fillers, insert_generated, required_columns
from support.kit_examples import FILLABLE, ITEMS, LABELS, ROW, STATUS, Appends, Labels, Totals

# -- rows the test schema refuses; required columns the extractor does not read ---------------


def test_extra_generates_a_required_column_the_extractor_does_not_read() -> None:
    status = {"status": st.sampled_from(["open", "closed"])}
    with pytest.raises(AssertionError, match="not idempotent"):
        check_extractor(
            Appends(),
            schema=STATUS,
            rows=rows(Appends(), extra=status),
            max_examples=10,
            database_examples=10,
        )
    summary = check_extractor(
        Totals(),
        schema=STATUS,
        rows=well_formed_rows(Totals(), {"payload": payloads_like({"total": 3})}, extra=status),
        max_examples=20,
        database_examples=5,
        min_changed=0.5,
    )
    assert summary.accepted == summary.batch_rows > 0
    assert summary.runs["inserted"] > 0


class ReadsOnlyItsColumns(Totals):
    name = "reads_only_its_columns"

    def extract(self, row: Row) -> list[Upsert]:
        assert set(row) == {"id", "payload"}, f"extract was given {sorted(row)}"
        return super().extract(row)


def test_extra_columns_are_not_given_to_extract() -> None:
    check_extractor(
        ReadsOnlyItsColumns(),
        schema=STATUS,
        rows=rows(ReadsOnlyItsColumns(), extra={"status": st.just("open")}),
        max_examples=20,
        database_examples=3,
    )


def test_extra_may_not_name_a_column_the_extractor_reads() -> None:
    with pytest.raises(ValueError, match=r"reads \['payload'\]: give them in columns="):
        rows(Appends(), extra={"payload": st.none()})
    with pytest.raises(ValueError, match=r"does not read \['status'\].*extra="):
        well_formed_rows(Appends(), {}, columns={"status": st.none()})


def test_a_batch_may_be_refused_as_long_as_most_rows_get_in() -> None:
    # Default rows hold NULL in about one row of six: batches of one such row are refused
    # entirely, which is no failure while most generated rows get in.
    schema = ITEMS.replace("payload TEXT", "payload TEXT NOT NULL")
    summary = check_extractor(Labels(), schema=schema, max_examples=20, database_examples=30, max_batch=1)
    assert 0 < summary.accepted < summary.batch_rows == 30
    assert summary.refused.keys() == {"NULL in 'payload', which is NOT NULL"}


def test_insert_generated_fills_required_columns_and_says_why_it_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.executescript(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL CHECK (n > 0), "
        "s TEXT NOT NULL UNIQUE, d DEFAULT 1 NOT NULL, v TEXT NOT NULL CHECK (v IN ('x')), p TEXT);"
        "CREATE TABLE w (a INTEGER NOT NULL, b TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID;"
        "CREATE TABLE r (k INTEGER NOT NULL PRIMARY KEY, z BLOB NOT NULL) STRICT;"
    )
    assert required_columns(conn, "t") == {"n": "INTEGER", "s": "TEXT", "v": "TEXT"}
    assert required_columns(conn, "w") == {"a": "INTEGER", "b": "TEXT"}
    assert required_columns(conn, "r") == {"z": "BLOB"}
    assert fillers("s", "TEXT", 2) == ("s-2", "")
    assert fillers("z", "BLOB", 2) == (b"z-2", b"")

    done = insert_generated(conn, "t", [{"id": 1, "v": "x"}, {"id": 2, "v": "x"}, {"id": 3}])
    assert [r["id"] for r in done.kept] == [1, 2]
    assert conn.execute("SELECT id, n, s FROM t ORDER BY id").fetchall() == [(1, 1, "s-1"), (2, 2, "s-2")]
    [(row, why)] = done.refused
    assert row == {"id": 3}
    assert why.startswith("column 'v' is NOT NULL with no default, and the values the kit fills it with")
    assert "extra={'v': <strategy>}" in why

    done = insert_generated(conn, "t", [{"id": 1, "v": "x"}, {"id": 9, "v": "x", "s": None}])
    assert done.reasons == {
        "a duplicate in t.id (generated rows repeating a value, or a seed row holding it)": 1,
        "NULL in 's', which is NOT NULL": 1,
    }
    assert insert_generated(conn, "r", [{"k": 1}]).kept == [{"k": 1}]  # b'z-1' fits the STRICT BLOB
    [(row, why)] = insert_generated(conn, "r", [{"k": 2, "z": 5}]).refused
    assert row == {"k": 2, "z": 5}
    assert re.fullmatch(r"generated INT\w* values do not fit 'z', a STRICT BLOB column", why)


@pytest.mark.parametrize("schema", FILLABLE.values(), ids=FILLABLE.keys())
def test_rows_get_in_when_the_kit_fills_their_required_columns(schema: str) -> None:
    summary = check_extractor(
        Totals(),
        schema=schema,
        rows=well_formed_rows(Totals(), {"payload": payloads_like({"total": 3})}),
        max_examples=10,
        database_examples=5,
    )
    assert summary.accepted == summary.batch_rows > 0


def test_min_accepted_is_the_share_of_rows_that_must_get_in(tmp_path: Path) -> None:
    schema = ITEMS.replace("payload TEXT", "payload TEXT NOT NULL")
    batch: list[dict[str, Any]] = [ROW, {"id": 4, "payload": None}, {"id": 5, "payload": None}]
    assert MIN_ACCEPTED == 0.5
    with pytest.raises(
        AssertionError, match=r"1 of 3 rows were accepted by 'items'.*2 rows: NULL in 'payload'"
    ):
        check_idempotent(Labels(), batch, tmp_path / "a.db", schema=schema)
    check_idempotent(Labels(), batch, tmp_path / "b.db", schema=schema, min_accepted=0.3)


# -- how many rows produced changes, and reached the database ------------------------------------


def test_check_extractor_returns_what_the_generated_rows_did() -> None:
    summary = check_extractor(
        Labels(),
        schema=ITEMS,
        rows=well_formed_rows(Labels(), {"payload": LABELS}) | rows(Labels()),
        max_examples=60,
        database_examples=10,
    )
    assert isinstance(summary, CheckSummary)
    assert summary.rows == 60
    assert summary.rows == sum(
        summary.outcomes[k] for k in ("changes", "record error", "skips only", "nothing")
    )
    assert summary.changed > 0 and summary.outcomes["record error"] > 0
    assert sum(summary.record_errors.values()) == summary.outcomes["record error"]
    assert summary.batches == 10 and summary.accepted == summary.batch_rows
    assert summary.runs["inserted"] > 0
    text = str(summary)
    assert f"of 60 generated rows, {summary.changed} produced changes" in text
    assert f"{summary.accepted} of {summary.batch_rows} rows in 10 batches accepted by 'items'" in text


def test_min_changed_fails_rows_that_never_reach_the_writes() -> None:
    # Arbitrary text is almost never an object with a label: nothing is ever written.
    check_extractor(Labels(), schema=ITEMS, max_examples=50, database_examples=0)
    with pytest.raises(AssertionError) as e:
        check_extractor(Labels(), schema=ITEMS, max_examples=50, database_examples=0, min_changed=0.1)
    message = str(e.value)
    assert (
        "'labels' (Labels): only 0 of 50 generated rows produced changes, fewer than min_changed=0.1"
        in message
    )
    assert "record errors (" in message and "invalid-json" in message
    assert "well_formed_rows" in message


class RefersToNothing(Labels):
    """Every change requires a row that no table holds: nothing ever reaches the database."""

    name = "refers_to_nothing"

    def extract(self, row: Row) -> list[Upsert]:
        return [
            Upsert(c.table, c.key, c.values, requires=(Ref("items", "id", -1),)) for c in super().extract(row)
        ]


def test_min_changed_fails_database_checks_where_no_change_applied() -> None:
    well_formed = well_formed_rows(RefersToNothing(), {"payload": LABELS})
    check_extractor(RefersToNothing(), schema=ITEMS, rows=well_formed, max_examples=20, database_examples=5)
    with pytest.raises(AssertionError, match=r"no change of 5 batches reached the database.*record errors"):
        check_extractor(
            RefersToNothing(),
            schema=ITEMS,
            rows=well_formed,
            max_examples=20,
            database_examples=5,
            min_changed=0.5,
        )


class Counter(Labels):
    name = "counter"

    def __init__(self) -> None:
        self.calls = itertools.count()

    def extract(self, row: Row) -> list[Upsert]:
        return [Upsert("labels", key={"item_id": row["id"]}, values={"label": str(next(self.calls))})]


def test_a_failure_carries_what_the_rows_did_so_far() -> None:
    with pytest.raises(AssertionError, match="not deterministic") as e:
        check_extractor(Counter(), schema=ITEMS, max_examples=20, database_examples=0)
    [note] = [n for n in getattr(e.value, "__notes__", []) if n.startswith("check_extractor")]
    assert "generated rows" in note and "produced changes" in note


# -- JSON values with NaN and infinity, on request ----------------------------------------------


def floats(value: Any) -> Iterator[float]:
    """Every float in a JSON value."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict | list):
        for x in value.values() if isinstance(value, dict) else value:
            yield from floats(x)


@given(json_values())
def test_json_values_draw_no_nan_or_infinity_unless_asked(value: Any) -> None:
    assert all(math.isfinite(f) for f in floats(value))


def test_json_values_draw_nan_and_infinity_when_asked() -> None:
    # Hypothesis draws them rarely (about one scalar in a thousand): search scalars, many of them.
    search = settings(max_examples=20_000, database=None)
    values = json_values(max_leaves=1, allow_nonfinite=True)
    find(values, lambda v: any(math.isnan(f) for f in floats(v)), settings=search)
    find(values, lambda v: math.inf in floats(v), settings=search)


# -- deletes: a Children change's leftovers ----------------------------------------------------------

TAGS = """
CREATE TABLE items (id INTEGER PRIMARY KEY, payload TEXT);
CREATE TABLE tags (item_id INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (item_id, tag));
"""


class ShrinksItsTags(Extractor):
    """Deterministic, but its first run rewrites its own source: the second run deletes a tag."""

    name = "shrinks_its_tags"
    source = "items"
    columns = ("id", "payload")
    writes = {"items": ("id", "payload"), "tags": ("item_id", "tag")}

    def extract(self, row: Row) -> list[Update | Children]:
        tags = [{"tag": "a"}, {"tag": "b"}] if row["payload"] == "x" else [{"tag": "a"}]
        rewrite = [Update("items", key={"id": row["id"]}, values={"payload": "y"})]
        return [
            *(rewrite if row["payload"] == "x" else []),
            Children("tags", {"item_id": row["id"]}, ("tag",), tags),
        ]


def test_a_second_run_that_only_deletes_is_not_idempotent(tmp_path: Path) -> None:
    with pytest.raises(
        AssertionError, match=r"not idempotent: .* inserted 0 and updated 0 rows, deleted 1"
    ) as e:
        check_idempotent(ShrinksItsTags(), [{"id": 1, "payload": "x"}], tmp_path / "a.db", schema=TAGS)
    assert "tags: before [(1, 'b')], after []" in str(e.value)
    check_dry_run_agrees(ShrinksItsTags(), [{"id": 1, "payload": "x"}], tmp_path / "b.db", schema=TAGS)
