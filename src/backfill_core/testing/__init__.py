"""A testing kit for extractor authors: hypothesis strategies and property checks.

Importing it needs hypothesis (it is meant for tests) but not pytest::

    from backfill_core.testing import check_extractor

    def test_properties():
        check_extractor(MyExtractor(), schema=[Bug, MyTable])

The pytest fixtures (``backfill_registry``, ``register_plugin``, ``backfill_database``,
``backfill_cli``) come from ``backfill_pytest``, which pytest loads automatically; it is a
package of its own so that loading it does not import the engine into every test session.
"""

from backfill_core.testing.checks import (
    MIN_ACCEPTED,
    CheckSummary,
    check_declared,
    check_deterministic,
    check_dry_run_agrees,
    check_extractor,
    check_idempotent,
    check_total,
    extractor_properties,
    run_once,
)
from backfill_core.testing.cli import CliResult, invoke_cli
from backfill_core.testing.database import Schema, create_database, snapshot, tables_of
from backfill_core.testing.strategies import (
    json_text,
    json_values,
    keys,
    payloads_like,
    rows,
    sql_values,
    well_formed_rows,
)

__all__ = [
    "MIN_ACCEPTED",
    "CheckSummary",
    "CliResult",
    "Schema",
    "check_declared",
    "check_deterministic",
    "check_dry_run_agrees",
    "check_extractor",
    "check_idempotent",
    "check_total",
    "create_database",
    "extractor_properties",
    "invoke_cli",
    "json_text",
    "json_values",
    "keys",
    "payloads_like",
    "rows",
    "run_once",
    "snapshot",
    "sql_values",
    "tables_of",
    "well_formed_rows",
]
