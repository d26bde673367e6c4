"""Shared fixtures for the end-to-end tests: the real ``backfill`` script, real SQLite files,
real installed plugin packages.

Every test runs the console script as a subprocess with an explicit environment. Databases
are built once per session with the synthetic generator and copied per test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # also under --import-mode=importlib
    sys.path.insert(0, str(HERE))

from e2e_support import BACKFILL, RunCli, build_db, run_cli  # noqa: E402

PLUGINS_DIR = HERE.parent / "plugins"
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
    path = build_db(tmp_path_factory.mktemp("template") / "small.db", SMALL_TESTS)
    path.chmod(0o444)
    return path


@pytest.fixture
def fresh_db(template_db: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the small template database."""
    path = tmp_path / "cache.db"
    shutil.copy(template_db, path)
    path.chmod(0o644)
    return path


@pytest.fixture
def copy_db(template_db: Path, tmp_path: Path) -> Callable[[str], Path]:
    """``copy_db(name)``: another writable copy of the small template in this test's tmp dir."""
    return _copier(template_db, tmp_path)


def _copier(template: Path, folder: Path) -> Callable[[str], Path]:
    def copy(name: str) -> Path:
        path = folder / name
        shutil.copy(template, path)
        path.chmod(0o644)
        return path

    return copy


def _after_full_run(template: Path, path: Path) -> Path:
    """A read-only copy of ``template`` after one complete run of both extractors."""
    shutil.copy(template, path)
    path.chmod(0o644)
    proc = run_cli(["run", "test_features", "bug_attribution", "-d", path, "--quiet"])
    assert proc.returncode == 0, proc.stderr
    path.chmod(0o444)
    return path


@pytest.fixture(scope="session")
def full_run_db(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small template after one complete run of both extractors (read-only reference)."""
    return _after_full_run(template_db, tmp_path_factory.mktemp("full") / "full.db")


@pytest.fixture(scope="session")
def big_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = build_db(tmp_path_factory.mktemp("big") / "big.db", BIG_TESTS)
    path.chmod(0o444)
    return path


@pytest.fixture
def copy_big(big_template_db: Path, tmp_path: Path) -> Callable[[str], Path]:
    """``copy_big(name)``: a writable copy of the big template in this test's tmp dir."""
    return _copier(big_template_db, tmp_path)


@pytest.fixture(scope="session")
def big_full_run_db(big_template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The big template after one complete run of both extractors (read-only reference)."""
    return _after_full_run(big_template_db, tmp_path_factory.mktemp("bigfull") / "big-full.db")


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The broken and the good fixture plugins, really installed (once per session) into a
    target dir."""
    return _install(tmp_path_factory, FIXTURE_PLUGINS)


@pytest.fixture(scope="session")
def shop_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugins for another application (tests/plugins/backfill-shop-plugin) and the one whose
    extractor depends on an unknown extractor (backfill-orphan-plugin), in their own target dir."""
    return _install(tmp_path_factory, ("backfill-shop-plugin", "backfill-orphan-plugin"))


@pytest.fixture(scope="session")
def probe_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe plugin (tests/plugins/backfill-probe-plugin), installed into its own target dir."""
    return _install(tmp_path_factory, ("backfill-probe-plugin",))


def _install(tmp_path_factory: pytest.TempPathFactory, names: tuple[str, ...]) -> Path:
    """Install the fixture plugin packages ``names`` with pip into a new target dir.

    The sources are copied first so the build leaves no ``build/`` or ``*.egg-info`` behind
    in the repository.
    """
    work = tmp_path_factory.mktemp("plugin-src")
    sources = []
    for name in names:
        src = work / name
        shutil.copytree(PLUGINS_DIR / name, src)
        sources.append(str(src))
    site = tmp_path_factory.mktemp("plugin-site")
    base = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--target",
        str(site),
        "--disable-pip-version-check",
        "--quiet",
    ]
    attempts = [
        [*base[:5], "--no-build-isolation", *base[5:], *sources],
        [*base, *sources],  # the venv's setuptools may lack bdist_wheel: build in isolation
    ]
    failures = []
    for cmd in attempts:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode == 0:
            break
        failures.append(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        shutil.rmtree(site)
        site.mkdir()
    else:
        pytest.fail("could not install the fixture plugins:\n" + "\n".join(failures))
    for name in names:
        dist = name.replace("-", "_")
        assert list(site.glob(f"{dist}-*.dist-info/entry_points.txt")), f"{name} has no entry points"
    return site
