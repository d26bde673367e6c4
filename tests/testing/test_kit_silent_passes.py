"""The testing kit does not pass without testing anything (issue 16): regressions.

Each test here fails on the kit as it was before the fix (it uses only the API that kit had):
an extractor that changes its row in a way that gives the same result twice passed, rows the
test schema refused were dropped until nothing was left to test and a non-idempotent extractor
passed, a dry run was not asked to predict skips, an unpicklable change was reported as
non-deterministic, and a payload with infinity crashed inside the JSON encoder.

SQLite only: the kit builds and checks its own SQLite files.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from backfill_core import Extractor, Row, Skip, Upsert
from backfill_core.testing import (
    check_declared,
    check_deterministic,
    check_dry_run_agrees,
    check_extractor,
    check_idempotent,
    check_total,
    well_formed_rows,
)
from support.kit_examples import (
    FILLABLE,
    ITEMS,
    ROW,
    STATUS,
    Appends,
    Labels,
    ResetsPayload,
    ResetsWhileIterated,
)

# -- every call of extract gets a row of its own ---------------------------------------------------


def test_check_extractor_finds_a_mutation_that_gives_the_same_result_twice() -> None:
    with pytest.raises(
        AssertionError, match=r"'resets_payload'.* changed the row it was given: column 'payload'"
    ):
        check_extractor(ResetsPayload(), schema=ITEMS, max_examples=50, database_examples=0)


@pytest.mark.parametrize("extractor", [ResetsPayload(), ResetsWhileIterated()], ids=lambda x: x.name)
@pytest.mark.parametrize(
    "check", [check_total, check_declared, check_deterministic], ids=lambda c: c.__name__
)
def test_each_row_check_names_the_column_extract_changed(extractor: Extractor, check: Any) -> None:
    row = dict(ROW)
    with pytest.raises(AssertionError, match="changed the row it was given") as e:
        check(extractor, row)
    message = str(e.value)
    assert extractor.name in message
    assert "column 'payload' from '{\"label\": \"red\"}' to '{}'" in message
    assert row == ROW  # the caller's row is left alone too


def test_a_row_holding_nan_is_not_taken_for_a_changed_row() -> None:
    # NaN != NaN: the comparison must not call an untouched row changed.
    row = {"id": 1, "payload": math.nan}
    assert check_total(Labels(), row) is None  # a RecordError: not JSON text
    check_deterministic(Labels(), row)


# -- (2) rows the test schema refuses ---------------------------------------------------------------


def test_check_extractor_fails_when_the_source_table_refuses_every_generated_row() -> None:
    with pytest.raises(AssertionError) as e:
        check_extractor(Appends(), schema=STATUS, max_examples=10, database_examples=8)
    message = str(e.value)
    assert message.startswith("extractor 'appends' (Appends): 0 of ")
    assert "generated rows (in 8 batches) were accepted by 'orders'" in message
    assert "the database checks test nothing" in message
    assert "column 'status' is NOT NULL with no default" in message
    assert "CHECK constraint" in message and "give it a default in the test schema or generate it" in message
    assert "extra={'status'" in message


def test_check_idempotent_fails_when_the_source_table_refuses_the_rows(tmp_path: Path) -> None:
    batch = [{"id": 1, "payload": "a"}, {"id": 2, "payload": "b"}]
    with pytest.raises(AssertionError, match=r"'appends'.*: 0 of 2 rows were accepted by 'orders'.*'status'"):
        check_idempotent(Appends(), batch, tmp_path / "a.db", schema=STATUS)
    with pytest.raises(AssertionError, match=r"0 of 2 rows were accepted"):
        check_dry_run_agrees(Appends(), batch, tmp_path / "b.db", schema=STATUS)


@pytest.mark.parametrize("schema", FILLABLE.values(), ids=FILLABLE.keys())
def test_required_columns_nobody_generates_are_filled_so_the_bug_shows(schema: str) -> None:
    with pytest.raises(AssertionError, match=r"'appends'.* is not idempotent"):
        check_extractor(Appends(), schema=schema, max_examples=10, database_examples=10)


# -- a dry run predicts skips; unpicklable changes; payloads with infinity --------------------------


class SkipsEveryOtherCall(Labels):
    """Skips on every other call only: a dry run and the real run after it count different skips."""

    name = "skips_every_other_call"

    def __init__(self) -> None:
        self.calls = itertools.count()

    def extract(self, row: Row) -> list[Skip]:  # type: ignore[override]
        return [Skip("odd")] if next(self.calls) % 2 else []


def test_dry_run_must_predict_the_skips_too(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"dry run of extractor 'skips_every_other_call'.* disagrees"):
        check_dry_run_agrees(SkipsEveryOtherCall(), [ROW], tmp_path / "a.db", schema=ITEMS)


class Unpicklable(Labels):
    """A lambda: it cannot be pickled, and two calls' lambdas are not equal either."""

    name = "unpicklable"

    def extract(self, row: Row) -> list[Upsert]:
        return [Upsert("labels", key={"item_id": row["id"]}, values={"label": lambda: "red"})]


def test_an_unpicklable_change_is_reported_as_such_not_as_non_deterministic() -> None:
    with pytest.raises(AssertionError, match="cannot be pickled"):
        check_deterministic(Unpicklable(), ROW)
    with pytest.raises(AssertionError, match=r"'unpicklable'.*cannot be pickled"):
        check_extractor(Unpicklable(), schema=ITEMS, max_examples=10, database_examples=0)


def test_a_payload_strategy_drawing_infinity_gets_a_clear_error() -> None:
    inf_payloads = st.fixed_dictionaries({"score": st.just(math.inf)})

    @settings(max_examples=1, database=None)
    @given(well_formed_rows(Labels(), {"payload": inf_payloads}))
    def draw(row: dict[str, Any]) -> None:
        pass

    with pytest.raises(
        ValueError, match=r"payload drawn for 'payload' has no JSON text \(cannot write inf at \$\.score"
    ):
        draw()
