"""The built-in extractors through the testing kit's property checks, as any plugin's would be.

SQLite only: the kit builds and checks its own SQLite files.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from hypothesis import strategies as st

from backfill_core.testing import (
    check_dry_run_agrees,
    check_extractor,
    check_idempotent,
    payloads_like,
    rows,
    well_formed_rows,
)
from backfill_plugins.testmanagement import BugAttributionExtractor, TestFeatureExtractor
from backfill_plugins.testmanagement.extractors import FLAGS

TF = TestFeatureExtractor()
BA = BugAttributionExtractor()

# Samples shaped like the synthetic generator's documents (synthetic._test_data, _bug_data).
TEST_SAMPLE = {
    "id": 1,
    "title": "Login checkout search cart.",
    "goal": "Find bugs in checkout.",
    "requirements": [{"device": "Pixel 8", "os_version": "14.0"}],
    "start_at": "2026-03-01T09:00:00Z",
    "features": [
        {
            "id": 1,
            "feature_id": 17,
            "title": "Checkout.",
            "description": "Pay for the cart.",
            "howtofind": "Open the cart.",
            "user_stories": ["As a buyer I pay."],
            "enable_default": True,
            "enable_content": False,
            "enable_visual": None,
        }
    ],
}
BUG_SAMPLE = {
    "id": 1,
    "title": "Cart is empty.",
    "severity": "high",
    "status": "accepted",
    "test_feature": {"id": 1, "title": "Checkout."},
    "device": {"name": "Pixel 8", "os_version": "14.0"},
}

flag = st.none() | st.booleans()
test_json = payloads_like(
    TEST_SAMPLE,
    overrides={
        # few feature ids, so rows of one batch upsert the same feature
        "features[].id": st.integers(min_value=0, max_value=8),
        # mostly the catalogue's feature 500 (seeded below), so that changes reach the database
        "features[].feature_id": st.just(500) | st.integers(min_value=0, max_value=1000),
        "features[].user_stories": st.none() | st.lists(st.text(max_size=10), max_size=2),
        **{f"features[].{f}": flag for f in FLAGS},
    },
)
bug_json = payloads_like(
    BUG_SAMPLE,
    overrides={"test_feature": st.none() | st.fixed_dictionaries({"id": st.integers(1, 8)})},
)
# Features 1..6 exist, owned by customers 1 and 2: bugs of customers 1..5 naming features 1..8
# are attributed, or fail the reference check (missing feature, another customer's feature).
FEATURES = {
    "test_features": [
        {"id": i, "customer_id": 1 + i % 2, "test_id": 1, "feature_id": 500, "title": f"f{i}"}
        for i in range(1, 7)
    ]
}
# Product 1 and its feature 500, which the test features below list (test_features.feature_id
# references features).
CATALOGUE = {
    "products": [{"id": 1, "customer_id": 1, "data": "{}", "title": "Shop"}],
    "features": [
        {
            "id": 500,
            "product_id": 1,
            "title": "Checkout",
            "user_stories": "[]",
            "section_ids": "[]",
            "raw_data": "{}",
            "last_synced": "2026-01-05 09:00:00.000000",
        }
    ],
}


def test_test_features_properties() -> None:
    check_extractor(
        TF,
        seed=CATALOGUE,
        rows=well_formed_rows(TF, {"data": test_json}) | rows(TF),
        max_examples=150,
        database_examples=25,
        min_changed=0.1,
    )


def test_bug_attribution_properties() -> None:
    check_extractor(
        BA,
        seed=FEATURES,
        rows=well_formed_rows(BA, {"raw_data": bug_json}) | rows(BA),
        max_examples=150,
        database_examples=25,
        min_changed=0.1,
    )


def test_the_database_checks_really_write(tmp_path: Path) -> None:
    """Not vacuous: on a fixed batch the checks run a backfill that attributes bugs."""
    bug = {"test_id": 1, "title": "Cart is empty."}  # NOT NULL in the real bugs table
    bugs = [
        {"id": 1, "customer_id": 2, **bug, "raw_data": '{"test_feature": {"id": 1}}'},  # attributed
        {"id": 2, "customer_id": 1, **bug, "raw_data": '{"test_feature": {"id": 2}}'},  # attributed
        {"id": 3, "customer_id": 1, **bug, "raw_data": '{"test_feature": {"id": 1}}'},  # another's
        {"id": 4, "customer_id": 1, **bug, "raw_data": '{"test_feature": {"id": 99}}'},  # no such one
        {"id": 5, "customer_id": 1, **bug, "raw_data": "{"},  # invalid JSON
    ]
    check_idempotent(BA, bugs, tmp_path / "ba.db", seed=FEATURES)
    with sqlite3.connect(tmp_path / "ba.db") as conn:
        got = conn.execute("SELECT id, test_feature_id FROM bugs ORDER BY id").fetchall()
    assert got == [(1, 1), (2, 2), (3, None), (4, None), (5, None)]
    check_dry_run_agrees(BA, bugs, tmp_path / "ba-dry.db", seed=FEATURES)

    test = {"customer_id": 1, "product_id": 1, "status": "archived"}
    five, six = {"id": 5, "feature_id": 500}, {"id": 6, "feature_id": 500}
    tests = [
        {"id": 1, **test, "data": json.dumps({"features": [{**five, "title": "a"}, six]})},
        {"id": 2, **test, "data": json.dumps({"features": [{**five, "title": "b"}]})},  # last wins
    ]
    check_idempotent(TF, tests, tmp_path / "tf.db", seed=CATALOGUE)
    with sqlite3.connect(tmp_path / "tf.db") as conn:
        got = conn.execute(
            "SELECT id, test_id, title, enable_default FROM test_features ORDER BY id"
        ).fetchall()
    assert got == [(5, 2, "b", 0), (6, 1, "", 0)]
