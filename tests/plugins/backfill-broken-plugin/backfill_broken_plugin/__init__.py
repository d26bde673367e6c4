"""A backfill plugin that fails on import: it needs a module that is not installed.

The end-to-end tests install it beside working plugins and check that only this one is
reported and left out. Were it importable, it would provide the ``broken_feature_counts``
extractor.
"""

from __future__ import annotations

import backfill_fixture_missing_dependency  # noqa: F401  (not installed anywhere, on purpose)

from backfill_core import hookimpl

PROVIDES = "broken_feature_counts"


@hookimpl
def register_extractors(register):  # pragma: no cover - never reached
    raise AssertionError("unreachable: the import above fails")
