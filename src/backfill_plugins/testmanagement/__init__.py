"""Backfills for a test-management cache: test features from tests, bug attribution from bugs."""

from backfill_plugins.testmanagement.extractors import BugAttributionExtractor, TestFeatureExtractor
from backfill_plugins.testmanagement.models import Bug, Feature, Product, Test, TestFeature, User
from backfill_plugins.testmanagement.validators import CoverageValidator

__all__ = [
    "Bug",
    "BugAttributionExtractor",
    "CoverageValidator",
    "Feature",
    "Product",
    "Test",
    "TestFeature",
    "TestFeatureExtractor",
    "User",
]
