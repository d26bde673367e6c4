"""What a database must look like after a run of the built-in job died at any point: the data
agrees with the ledger's checkpoints and with an uninterrupted reference run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.builtin_job import attribution_column, features
from support.db import Where, scalar
from support.ledger import decode_key, errors_of, runs

BOTH = ("test_features", "bug_attribution")
"""The built-in job's extractors, in the order they run."""


@dataclass
class Reference:
    """A template database after one uninterrupted run of both extractors."""

    path: Path
    tests: int
    bugs: int
    features: list[tuple[Any, ...]] = field(default_factory=list)
    attributions: list[tuple[int, int | None]] = field(default_factory=list)

    def load(self) -> Reference:
        self.features = features(self.path)
        self.attributions = attribution_column(self.path)
        return self


def check_consistent(path: Where, ref: Reference, where: str = "") -> None:
    """The data agrees exactly with the ledger's checkpoints, whatever point a run died at.

    * test_features holds exactly the reference features of the tests up to the furthest
      checkpoint of any test_features run, and nothing else;
    * bugs up to the furthest bug_attribution checkpoint carry the reference attribution, the
      others are still NULL;
    * every run's counts agree with its checkpoint and with its recorded errors.
    """
    ledger = [r for r in runs(path) if r["retry_of"] is None]
    keys: dict[str, Any] = {}
    for name in BOTH:
        found = [decode_key(r["last_key"]) for r in ledger if r["extractor"] == name and r["last_key"]]
        keys[name] = max(found) if found else None

    tf_key = keys["test_features"]
    have = features(path)
    want = [] if tf_key is None else [r for r in ref.features if r[2] <= tf_key]
    assert len(have) == len(want), (
        f"{where}: test_features has {len(have)} rows, but the furthest checkpoint (key {tf_key}) "
        f"accounts for {len(want)}"
    )
    assert have == want, f"{where}: test_features differs from the reference up to key {tf_key}"
    assert scalar(path, "SELECT COUNT(DISTINCT id) FROM test_features") == len(have)

    ba_key = keys["bug_attribution"]
    got = attribution_column(path)
    expected = [(i, (v if ba_key is not None and i <= ba_key else None)) for i, v in ref.attributions]
    wrong = [(g, e) for g, e in zip(got, expected, strict=True) if g != e]
    assert not wrong, (
        f"{where}: {len(wrong)} bugs disagree with the checkpoint (key {ba_key}); "
        f"first (got, want): {wrong[:3]}"
    )

    tf_runs = [r for r in ledger if r["extractor"] == "test_features"]
    ba_runs = [r for r in ledger if r["extractor"] == "bug_attribution"]
    assert sum(r["inserted"] for r in tf_runs) == len(have), (
        f"{where}: test_features runs say they inserted {sum(r['inserted'] for r in tf_runs)}, "
        f"the table has {len(have)} rows"
    )
    attributed = sum(1 for _, v in got if v is not None)
    assert sum(r["updated"] for r in ba_runs) == attributed, (
        f"{where}: bug_attribution runs say they updated {sum(r['updated'] for r in ba_runs)}, "
        f"{attributed} bugs are attributed"
    )
    for r in ledger:
        check_run_counts(path, r, where)


def check_run_counts(path: Where, r: Mapping[str, Any], where: str = "") -> None:
    """A (non-retry) run's processed count matches its checkpoint key, and its recorded errors
    match its error counts with no key recorded twice."""
    source = {"test_features": "tests", "bug_attribution": "bugs"}[r["extractor"]]
    last = decode_key(r["last_key"])
    upto = 0 if last is None else scalar(path, f"SELECT COUNT(*) FROM {source} WHERE id <= ?", (last,))
    assert r["processed"] == upto, (
        f"{where}: run {r['id']} ({r['extractor']}) processed {r['processed']} rows but its "
        f"checkpoint key {last} covers {upto}"
    )
    if r["extractor"] == "bug_attribution":  # one target row per source row
        outcomes = r["updated"] + r["unchanged"] + r["record_errors"] + r["batch_errors"]
        assert r["processed"] == outcomes, f"{where}: run {r['id']} counts do not add up: {r}"
    recorded = [e["key"] for e in errors_of(path, r["id"])]
    assert len(recorded) == r["record_errors"] + r["batch_errors"], (
        f"{where}: run {r['id']} has {len(recorded)} rows in backfill_errors, but counts "
        f"{r['record_errors']} record + {r['batch_errors']} batch errors"
    )
    assert len(set(recorded)) == len(recorded), f"{where}: run {r['id']} recorded a key twice"


def check_equal_to_reference(path: Where, ref: Reference, where: str = "") -> None:
    have = features(path)
    assert len(have) == len(ref.features), (
        f"{where}: {len(have)} test_features rows, want {len(ref.features)}"
    )
    assert have == ref.features, f"{where}: test_features differs from the uninterrupted reference"
    assert scalar(path, "SELECT COUNT(*) - COUNT(DISTINCT id) FROM test_features") == 0
    got = attribution_column(path)
    wrong = [(g, e) for g, e in zip(got, ref.attributions, strict=True) if g != e]
    assert not wrong, f"{where}: {len(wrong)} bugs differ from the reference; first {wrong[:3]} (got, want)"
    assert scalar(path, "SELECT COUNT(*) - COUNT(DISTINCT id) FROM bugs") == 0
