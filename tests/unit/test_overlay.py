"""The dry-run overlay: rows kept on disk, found again by target and key, removed on close."""

from __future__ import annotations

from pathlib import Path

from backfill_core.engine.overlay import Overlay

FEATURES = ("test_features", ("id",))
BUGS = ("bugs", ("id",))


def test_rows_round_trip_by_target_and_key() -> None:
    overlay = Overlay()
    try:
        assert overlay.rows(FEATURES, [(1,)]) == {}  # nothing remembered yet, no file created
        overlay.apply({FEATURES: {(1,): {"id": 1, "title": "x" * 500}, (2,): {"id": 2, "title": None}}})
        overlay.apply({BUGS: {(1,): {"id": 1, "test_feature_id": 2}}})
        assert overlay.rows(FEATURES, [(1,), (2,), (3,)]) == {
            (1,): {"id": 1, "title": "x" * 500},
            (2,): {"id": 2, "title": None},
        }
        assert overlay.rows(BUGS, [(1,), (2,)]) == {(1,): {"id": 1, "test_feature_id": 2}}
        assert overlay.rows(("test_features", ("title",)), [(1,)]) == {}  # another addressing
    finally:
        overlay.close()


def test_a_later_batch_replaces_a_row_and_lookups_span_chunks() -> None:
    overlay = Overlay()
    try:
        overlay.apply({FEATURES: {(k,): {"id": k, "n": 0} for k in range(2500)}})
        overlay.apply({FEATURES: {(7,): {"id": 7, "n": 1}}})
        found = overlay.rows(FEATURES, [(k,) for k in range(3000)])
        assert len(found) == 2500
        assert found[(7,)] == {"id": 7, "n": 1}
        assert found[(2499,)] == {"id": 2499, "n": 0}
    finally:
        overlay.close()


def test_close_removes_the_temporary_file() -> None:
    overlay = Overlay()
    overlay.apply({FEATURES: {(1,): {"id": 1}}})
    assert overlay._dir is not None
    folder = Path(overlay._dir.name)
    assert (folder / "overlay.db").exists()
    overlay.close()
    assert not folder.exists()
    assert overlay.rows(FEATURES, [(1,)]) == {}


def test_composite_and_text_keys_round_trip() -> None:
    pairs = ("assignments", ("bug_id", "user"))
    overlay = Overlay()
    try:
        rows = {(b, u): {"bug_id": b, "user": u, "role": "owner"} for b in range(700) for u in ("ann", "bo")}
        overlay.apply({pairs: rows})
        found = overlay.rows(pairs, [(3, "ann"), (3, "cy"), (699, "bo"), ("3", "ann")])
        assert found == {(3, "ann"): rows[(3, "ann")], (699, "bo"): rows[(699, "bo")]}
        assert len(overlay.rows(pairs, list(rows))) == 1400  # more keys than one statement's parameters
    finally:
        overlay.close()


class Counting(Overlay):
    """An overlay that records the statements it runs on its file."""

    def __init__(self) -> None:
        super().__init__()
        self.statements: list[str] = []

    def _open(self):  # type: ignore[no-untyped-def]
        db = super()._open()
        db.set_trace_callback(self.statements.append)
        return db


def test_keys_past_every_remembered_key_are_not_looked_up() -> None:
    overlay = Counting()
    try:
        overlay.apply({BUGS: {(k,): {"id": k, "test_feature_id": 1} for k in range(10, 20)}})
        overlay.statements.clear()
        assert overlay.rows(BUGS, [(k,) for k in range(20, 40)]) == {}
        assert overlay.rows(BUGS, [(k,) for k in range(0, 10)]) == {}
        assert not [s for s in overlay.statements if s.startswith("SELECT")]  # both outside the span
        found = overlay.rows(BUGS, [(5,), (15,), (25,)])
        assert found == {(15,): {"id": 15, "test_feature_id": 1}}
        assert len([s for s in overlay.statements if s.startswith("SELECT")]) == 1
        overlay.apply({BUGS: {(30,): {"id": 30, "test_feature_id": 2}}})  # the span grows
        assert overlay.rows(BUGS, [(25,), (30,)]) == {(30,): {"id": 30, "test_feature_id": 2}}
    finally:
        overlay.close()


def test_keys_that_do_not_compare_are_all_looked_up() -> None:
    overlay = Overlay()
    try:
        overlay.apply({BUGS: {(1,): {"id": 1}, ("a",): {"id": "a"}}})  # int and text keys together
        assert overlay.rows(BUGS, [(1,), ("a",), (None,)]) == {(1,): {"id": 1}, ("a",): {"id": "a"}}
        overlay.apply({FEATURES: {(1,): {"id": 1}}})
        assert overlay.rows(FEATURES, [("a",), (1,)]) == {(1,): {"id": 1}}  # a wanted key of another type
    finally:
        overlay.close()
