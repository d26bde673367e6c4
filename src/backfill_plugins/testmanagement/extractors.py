"""Pure extractors: test features from ``tests.data``, bug attribution from ``bugs.raw_data``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

from backfill_core import Extractor, RecordError, Ref, Row, Skip, Update, Upsert, parse_json
from backfill_plugins.testmanagement.models import Bug, Test, TestFeature

FLAGS = ("enable_default", "enable_content", "enable_visual")


INT64 = range(-(2**63), 2**63)
DIGITS = re.compile(r"[ \t\r\n]*([0-9]{1,19})[ \t\r\n]*")

# The checks below take the place a value was found at as ``where`` and ``field`` and build the
# message from them only when the value is bad: they run for every field of every feature.


def _int(value: Any, where: str, field: str = "") -> int | None:
    """An integer id that fits a 64-bit column: an int, or a string of digits; None stays None."""
    if type(value) is int and value in INT64:
        return value
    if value is None:
        return None
    what = where + field
    if isinstance(value, bool):
        raise RecordError(f"{what} is a boolean, not an integer id", kind="invalid-type")
    digits = DIGITS.fullmatch(value) if isinstance(value, str) else None
    if digits:
        value = int(digits.group(1))
    if isinstance(value, int):
        if value not in INT64:
            raise RecordError(f"{what} is {value}, beyond a 64-bit integer", kind="invalid-type")
        return value
    raise RecordError(f"{what} is {str(value)[:80]!r}, not an integer id", kind="invalid-type")


def _text(value: Any, where: str, field: str = "") -> str | None:
    if value is None or type(value) is str:
        return value
    if isinstance(value, str):
        return value
    raise RecordError(f"{where}{field} is {type(value).__name__}, not text", kind="invalid-type")


def _flag(value: Any, where: str, field: str = "") -> bool | None:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise RecordError(f"{where}{field} is {value!r}, not true or false", kind="invalid-type")


def stories_text(value: Any) -> str:
    """``json.dumps(value or [])``, the application's text for ``user_stories``; a list of
    strings (the common case) without the encoder's set-up per call."""
    if type(value) is list and all(type(v) is str for v in value):
        return "[" + ", ".join(map(encode_basestring_ascii, value)) + "]"
    return json.dumps(value or [])


def _object(value: Any, where: str, field: str = "") -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise RecordError(
            f"{where}{field} is {type(value).__name__}, not a JSON object", kind="invalid-shape"
        )
    return value


class TestFeatureExtractor(Extractor):
    """One ``test_features`` row per feature listed in a test's JSON."""

    __test__ = False  # not a pytest test class, despite the name

    name = "test_features"
    description = "test_features rows from tests.data.features"
    source = Test
    columns = ("id", "customer_id", "data")
    writes = {
        TestFeature: (
            "id",
            "customer_id",
            "test_id",
            "feature_id",
            "title",
            "description",
            "howtofind",
            "user_stories",
            *FLAGS,
        )
    }

    def extract(self, row: Row) -> list[Upsert | Skip]:
        """The application's rules (``TestRepository._upsert_test_feature`` in testio-mcp): a
        feature without ``id`` or ``feature_id`` is skipped, ``enable_*`` is the value or False,
        ``user_stories`` is ``json.dumps`` of the list or ``[]``; and a feature whose
        ``feature_id`` is not in ``features`` is refused alone (never a dangling reference)."""
        customer_id = row["customer_id"]
        if customer_id is None:
            raise RecordError("tests.customer_id is NULL", kind="invalid-type")
        data = parse_json(row["data"], "tests.data")
        if data is None:
            return []
        features = _object(data, "tests.data").get("features")
        if features is None:
            return []
        if not isinstance(features, list):
            raise RecordError(f"data.features is {type(features).__name__}, not a list", kind="invalid-shape")
        changes: list[Upsert | Skip] = []
        test_id = row["id"]
        for i, item in enumerate(features):
            if type(item) is not dict:
                _object(item, f"data.features[{i}]")
            get = item.get
            where = f"data.features[{i}]"
            if not get("id"):
                changes.append(Skip("no-id", f"{where} has no id"))
                continue
            if not get("feature_id"):
                changes.append(Skip("no-feature-id", f"{where} (id {get('id')!r}) has no feature_id"))
                continue
            feature_id = _int(get("feature_id"), where, ".feature_id")
            title = get("title", "")
            if title is None:
                raise RecordError(
                    f"{where}.title is null, which test_features.title (NOT NULL) refuses",
                    kind="invalid-type",
                )
            changes.append(
                Upsert(
                    table="test_features",
                    key={"id": _int(get("id"), where, ".id")},
                    values={
                        "customer_id": customer_id,
                        "test_id": test_id,
                        "feature_id": feature_id,
                        "title": _text(title, where, ".title"),
                        "description": _text(get("description"), where, ".description"),
                        "howtofind": _text(get("howtofind"), where, ".howtofind"),
                        "user_stories": stories_text(get("user_stories")),
                        "enable_default": _flag(get("enable_default"), where, ".enable_default") or False,
                        "enable_content": _flag(get("enable_content"), where, ".enable_content") or False,
                        "enable_visual": _flag(get("enable_visual"), where, ".enable_visual") or False,
                    },
                    requires=(Ref("features", "id", feature_id),),
                    independent=True,
                )
            )
        return changes


class BugAttributionExtractor(Extractor):
    """``bugs.test_feature_id`` from the test feature a bug's JSON names."""

    name = "bug_attribution"
    description = "bugs.test_feature_id from bugs.raw_data.test_feature.id"
    source = Bug
    columns = ("id", "customer_id", "raw_data")
    writes = {Bug: ("id", "test_feature_id")}
    depends_on = ("test_features",)

    def extract(self, row: Row) -> list[Update]:
        raw = parse_json(row["raw_data"], "bugs.raw_data")
        feature_id = None
        if raw is not None:
            feature = _object(raw, "bugs.raw_data").get("test_feature")
            if feature is not None:
                feature_id = (
                    _int(_object(feature, "raw_data.test_feature").get("id"), "raw_data.test_feature.id")
                    or None
                )
        requires = (
            ()
            if feature_id is None
            else (Ref("test_features", "id", feature_id, match={"customer_id": row["customer_id"]}),)
        )
        return [
            Update(
                table="bugs", key={"id": row["id"]}, values={"test_feature_id": feature_id}, requires=requires
            )
        ]
