"""Fixtures for the crash-safety tests of the run ledger (issue 3): the ``crash`` toolbox
(tests/support/crash.py), the databases, built once per test run with the synthetic generator
(``made_once``: pytest-xdist's workers share them) and copied per test
(``crash.database(kind, ...)``), and ``kind``, each database in turn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.backends import KINDS, Backend, SqliteBackend
from support.builtin_job import after_run, shared_template
from support.consistency import BOTH, Reference
from support.crash import Crash
from support.once import made_once
from support.sqlite import scalar

SMALL_TESTS = 300
MEDIUM_TESTS = 3000
BIG_TESTS = 20_000


@pytest.fixture
def crash(tmp_path: Path) -> Iterator[Crash]:
    helper = Crash(tmp_path)
    yield helper
    helper.cleanup()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """ "sqlite" or "postgresql": the test runs once on each (the latter needs the test server)."""
    return str(request.param)


def _reference(factory: pytest.TempPathFactory, template: Path, name: str) -> Reference:
    path = made_once(
        factory,
        f"crash-{name}.db",
        lambda path: after_run(template, path, ["run", *BOTH, "-d", path, "-q", "--json"]),
    )
    return Reference(
        path,
        tests=scalar(path, "SELECT COUNT(*) FROM tests"),
        bugs=scalar(path, "SELECT COUNT(*) FROM bugs"),
    ).load()


@pytest.fixture(scope="session")
def small_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 tests (about 1,200 bugs), never written to."""
    return shared_template(tmp_path_factory, SMALL_TESTS)


@pytest.fixture
def small(kind: str, crash: Crash, small_template: Path) -> Backend:
    """A private copy of the small database, of each kind in turn."""
    return crash.database(kind, small_template, "small.db")


@pytest.fixture(scope="session")
def small_reference(tmp_path_factory: pytest.TempPathFactory, small_template: Path) -> Reference:
    return _reference(tmp_path_factory, small_template, "small-ref")


@pytest.fixture(scope="session")
def medium_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 tests (about 12,000 bugs), never written to."""
    return shared_template(tmp_path_factory, MEDIUM_TESTS)


@pytest.fixture(scope="session")
def medium_reference(tmp_path_factory: pytest.TempPathFactory, medium_template: Path) -> Reference:
    return _reference(tmp_path_factory, medium_template, "medium-ref")


@pytest.fixture(scope="session")
def big_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 tests (about 80,000 bugs), never written to."""
    return shared_template(tmp_path_factory, BIG_TESTS)


@pytest.fixture(scope="session")
def small_with_ledger(tmp_path_factory: pytest.TempPathFactory, small_template: Path) -> Path:
    """The small template after one real ``backfill run test_features`` (so the ledger exists)."""
    return made_once(
        tmp_path_factory,
        "crash-small-ledger.db",
        lambda path: after_run(small_template, path, ["run", "test_features", "-d", path, "-q"]),
    )


@pytest.fixture
def with_ledger(kind: str, crash: Crash, request: pytest.FixtureRequest) -> Backend:
    """A private copy of ``small_with_ledger`` on SQLite; on PostgreSQL the small template after
    the same real run."""
    if kind == "sqlite":
        return SqliteBackend(crash.copy(request.getfixturevalue("small_with_ledger"), "ledger.db"))
    db = crash.database(kind, request.getfixturevalue("small_template"), "ledger.db")
    proc = crash.run_cli(["run", "test_features", "-d", db.url, "-q"])
    assert proc.returncode == 0, proc.stderr
    return db
