"""pytest fixtures for backfill plugin authors, loaded through the ``pytest11`` entry point.

Installing backfill makes them available in every test session; nothing to import:

- ``backfill_registry``: an empty, isolated plugin registry (no entry points are loaded);
- ``register_plugin(plugin)``: register a plugin object into it for this test;
- ``backfill_database(*schema, rows=...)``: a new SQLite file in the test's tmp_path;
- ``backfill_cli(args)``: run the ``backfill`` command line in-process (click's CliRunner)
  with that registry's plugins, returning exit code, stdout and stderr.

This module imports only pytest and the standard library at import time, so loading it costs
other projects' test sessions nothing; backfill itself is imported inside the fixtures.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from backfill_core.plugins import PluginInfo, Registry
    from backfill_core.testing.cli import CliResult
    from backfill_core.testing.database import Rows, SchemaItem


@pytest.fixture
def backfill_registry() -> Registry:
    """A registry holding no plugins but those this test registers (``register_plugin``)."""
    from backfill_core.plugins import make_registry

    return make_registry()


@pytest.fixture
def register_plugin(backfill_registry: Registry) -> Callable[..., PluginInfo]:
    """``register_plugin(plugin, name=None, must_load=True)``: register a plugin object (a module
    or an object with ``@hookimpl`` methods) into ``backfill_registry``, for this test only.

    Returns the PluginInfo (``.extractors``, ``.validators``, ``.status``, ``.error``). A plugin
    that fails to load fails the test, unless ``must_load=False``.
    """
    from backfill_core.plugins import PluginInfo

    def register(plugin: object, name: str | None = None, *, must_load: bool = True) -> PluginInfo:
        info = None
        if name is not None:
            info = PluginInfo(name=name, distribution=name, version="-", entry_point="(direct)")
        info = backfill_registry.add(plugin, info)
        if must_load and info.status != "ok":
            pytest.fail(f"plugin {info.name!r} failed to load: {info.error}", pytrace=False)
        return info

    return register


@pytest.fixture
def backfill_database(tmp_path: Path) -> Callable[..., Path]:
    """``backfill_database(*schema, rows=None, name=None)``: create a new SQLite file in
    ``tmp_path`` and return its path.

    ``schema`` items are model classes, Tables, extractors (their model tables and the tables
    their foreign keys reference) or DDL text; ``rows`` maps table names to lists of dicts
    (dict and list values are stored as JSON text).
    """
    from backfill_core.testing.database import create_database

    counter = itertools.count(1)

    def make(*schema: SchemaItem, rows: Rows | None = None, name: str | None = None) -> Path:
        if not schema:
            raise TypeError("backfill_database needs at least one model, extractor or DDL statement")
        return create_database(tmp_path / (name or f"backfill-{next(counter)}.db"), list(schema), rows)

    return make


@pytest.fixture
def backfill_cli(backfill_registry: Registry) -> Callable[..., CliResult]:
    """``backfill_cli(args, installed=False, env=None, input=None)``: run ``backfill ARGS``
    in-process (click's CliRunner, not a subprocess) and return a CliResult with
    ``exit_code``, ``stdout``, ``stderr`` and ``json()``.

    The command sees the plugins registered with ``register_plugin`` (and their commands);
    ``installed=True`` uses the installed plugins instead, discovered as the real script does.
    backfill's environment variables are unset unless ``env`` sets them.
    """
    from backfill_core.testing.cli import invoke_cli

    def run(
        args: Sequence[str | PathLike[str] | int | float],
        *,
        installed: bool = False,
        env: Mapping[str, str | None] | None = None,
        input: str | None = None,
    ) -> CliResult:
        registry = None if installed else backfill_registry
        return invoke_cli(args, registry=registry, env=env, input=input)

    return run
