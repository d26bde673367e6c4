"""Shared fixtures for the end-to-end tests: the real ``backfill`` script, real SQLite files and
scratch PostgreSQL databases, real installed plugin packages.

Every test runs the console script as a subprocess with an explicit environment. Databases
are built once per test run with the synthetic generator (``made_once``: pytest-xdist's workers
share them) and copied per test (on PostgreSQL, into a scratch database per test).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.backends import KINDS, Backend, builtin_backend
from support.builtin_job import after_run, shared_template, writable_copy
from support.cli import BACKFILL, RunCli, run_cli
from support.once import made_once
from support.plugins import install_plugins

FIXTURE_PLUGINS = ("backfill-broken-plugin", "backfill-good-extra-plugin")

SMALL_TESTS = 200
"""Tests in the session's small template database (about 800 bugs)."""
BIG_TESTS = 3000
"""Tests in the database the interrupt tests use (about 12,000 bugs)."""


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cli() -> RunCli:
    """``cli(args, env=None)``: run the real console script, return the CompletedProcess."""
    assert BACKFILL.is_file(), f"the backfill console script is not installed next to {sys.executable}"
    return run_cli


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic database, never written to: copy it with ``fresh_db``."""
    return shared_template(tmp_path_factory, SMALL_TESTS)


@pytest.fixture
def fresh_db(template_db: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the small template database."""
    return writable_copy(template_db, tmp_path / "cache.db")


@pytest.fixture(params=KINDS)
def db(request: pytest.FixtureRequest, template_db: Path, tmp_path: Path) -> Iterator[Backend]:
    """The small template as this run of the test's database: a private SQLite copy, or a scratch
    PostgreSQL database holding the same rows; ``db.url`` is what ``--database`` takes."""
    with builtin_backend(request.param, template_db, tmp_path / "cache.db") as backend:
        yield backend


@pytest.fixture
def copy_db(template_db: Path, tmp_path: Path) -> Callable[[str], Path]:
    """``copy_db(name)``: another writable copy of the small template in this test's tmp dir."""
    return _copier(template_db, tmp_path)


def _copier(template: Path, folder: Path) -> Callable[[str], Path]:
    def copy(name: str) -> Path:
        return writable_copy(template, folder / name)

    return copy


def _after_full_run(factory: pytest.TempPathFactory, template: Path, name: str) -> Path:
    """A read-only copy of ``template`` after one complete run of both extractors (made once)."""
    return made_once(
        factory,
        name,
        lambda path: after_run(
            template, path, ["run", "test_features", "bug_attribution", "-d", path, "--quiet"]
        ),
    )


@pytest.fixture(scope="session")
def full_run_db(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small template after one complete run of both extractors (read-only reference)."""
    return _after_full_run(tmp_path_factory, template_db, "e2e-full.db")


@pytest.fixture(scope="session")
def big_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_template(tmp_path_factory, BIG_TESTS)


@pytest.fixture
def copy_big(big_template_db: Path, tmp_path: Path) -> Callable[[str], Path]:
    """``copy_big(name)``: a writable copy of the big template in this test's tmp dir."""
    return _copier(big_template_db, tmp_path)


@pytest.fixture(scope="session")
def big_full_run_db(big_template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The big template after one complete run of both extractors (read-only reference)."""
    return _after_full_run(tmp_path_factory, big_template_db, "e2e-big-full.db")


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The broken and the good fixture plugins, really installed (once per session) into a
    target dir."""
    return install_plugins(tmp_path_factory, FIXTURE_PLUGINS)


@pytest.fixture(scope="session")
def shop_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugins for another application (tests/plugins/backfill-shop-plugin) and the one whose
    extractor depends on an unknown extractor (backfill-orphan-plugin), in their own target dir."""
    return install_plugins(tmp_path_factory, ("backfill-shop-plugin", "backfill-orphan-plugin"))


@pytest.fixture(scope="session")
def probe_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe plugin (tests/plugins/backfill-probe-plugin), installed into its own target dir."""
    return install_plugins(tmp_path_factory, ("backfill-probe-plugin",))
