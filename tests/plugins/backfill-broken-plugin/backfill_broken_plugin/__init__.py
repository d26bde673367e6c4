"""A backfill plugin that fails on import: it needs a module that is not installed.

The end-to-end tests install it beside working plugins and check that only this one is
reported and left out. Were it importable, it would provide the ``broken_feature_counts``
extractor.
"""

from __future__ import annotations

from collections.abc import Callable

# Not installed anywhere, on purpose.
import backfill_fixture_missing_dependency  # type: ignore[import-not-found]  # noqa: F401

from backfill_core import Extractor, hookimpl

PROVIDES = "broken_feature_counts"


@hookimpl
def register_extractors(register: Callable[[Extractor], None]) -> None:  # pragma: no cover - never reached
    raise AssertionError("unreachable: the import above fails")
