"""The fixture plugin packages in tests/plugins, really installed with pip."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.once import made_once

PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
"""tests/plugins: one folder per fixture plugin package."""


def install_plugins(tmp_path_factory: pytest.TempPathFactory, names: tuple[str, ...]) -> Path:
    """The fixture plugin packages ``names``, installed with pip into a target dir once per test
    run (``made_once``), which tests only read."""
    return made_once(tmp_path_factory, "plugins-" + "+".join(names), lambda site: _install(site, names))


def _install(site: Path, names: tuple[str, ...]) -> None:
    """Install the fixture plugin packages ``names`` with pip into the new target dir ``site``.

    The sources are copied first so the build leaves no ``build/`` or ``*.egg-info`` behind
    in the repository.
    """
    work = site.parent / "src"
    sources = []
    for name in names:
        src = work / name
        shutil.copytree(PLUGINS_DIR / name, src)
        sources.append(str(src))
    site.mkdir()
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
