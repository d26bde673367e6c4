"""The example third-party plugin, installed as a regular (non-editable) package: it shows in
``backfill list-plugins``, ``backfill run`` of it works end to end, and its own tests pass."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from backfill_plugins.testmanagement import synthetic

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "backfill-example-plugin"
BACKFILL = Path(sys.executable).parent / "backfill"
SEVERITIES = {"low", "high", "critical", "visual", "content"}


def env_with(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return env


def backfill(site: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BACKFILL), *map(str, args)], env=env_with(site), capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example's sources, so building it leaves nothing in the repository."""
    copy = tmp_path_factory.mktemp("example-src") / EXAMPLE.name
    junk = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis")
    shutil.copytree(EXAMPLE, copy, ignore=junk)
    return copy


@pytest.fixture(scope="module")
def site(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed with pip into a target directory (the way e2e installs plugins)."""
    target = tmp_path_factory.mktemp("example-site")
    base = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target)]
    quiet = ["--disable-pip-version-check", "--quiet", str(source)]
    failures = []
    for cmd in ([*base, "--no-build-isolation", *quiet], [*base, *quiet]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode == 0:
            return target
        failures.append(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        shutil.rmtree(target)
        target.mkdir()
    pytest.fail("could not install the example plugin:\n" + "\n".join(failures))


def test_installed_as_a_regular_package(site: Path) -> None:
    [dist] = site.glob("backfill_example_plugin-0.1.0.dist-info")
    assert "example = backfill_example.plugin" in (dist / "entry_points.txt").read_text()
    direct = dist / "direct_url.json"
    assert not direct.exists() or not json.loads(direct.read_text()).get("dir_info", {}).get("editable")
    assert (site / "backfill_example" / "plugin.py").is_file()  # a copy, not a link to the sources
    proc = subprocess.run(
        [sys.executable, "-c", "import backfill_example; print(backfill_example.__file__)"],
        env=env_with(site),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(proc.stdout.strip()).is_relative_to(site)


def test_list_plugins_shows_it(site: Path) -> None:
    proc = backfill(site, "list-plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)}
    example = plugins["example"]
    assert example["status"] == "ok", example["error"]
    assert example["distribution"] == "backfill-example-plugin"
    assert example["extractors"] == ["bug_severity", "bug_steps"]
    assert example["validators"] == ["severity_coverage", "steps_coverage"]
    assert plugins["testmanagement"]["status"] == "ok"
    commands = backfill(site, "--help").stdout
    assert "severity-ddl" in commands and "example-ddl" in commands


def expected_severities(db: Path) -> tuple[dict[int, str], dict[str, int]]:
    """bug id -> severity, and error kinds, worked out from the raw JSON independently."""
    rows: dict[int, str] = {}
    errors: dict[str, int] = {}
    with sqlite3.connect(db) as conn:
        for bug_id, raw in conn.execute("SELECT id, raw_data FROM bugs"):
            try:
                severity = json.loads(raw)["severity"]
            except ValueError:
                errors["invalid-json"] = errors.get("invalid-json", 0) + 1
                continue
            assert severity in SEVERITIES, severity  # the synthetic data has no other values
            rows[bug_id] = severity
    return rows, errors


def test_run_end_to_end(site: Path, tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    synthetic.build(db, 120, seed=5)
    missing = backfill(site, "run", "bug_severity", "-d", db, "-q")
    assert missing.returncode == 3 and "bug_severities" in missing.stderr

    ddl = backfill(site, "severity-ddl")
    assert ddl.returncode == 0, ddl.stderr
    with sqlite3.connect(db) as conn:
        conn.executescript(ddl.stdout)

    proc = backfill(site, "run", "bug_severity", "-d", db, "-q", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    [stats] = report["extractors"]
    expected, errors = expected_severities(db)
    assert errors, "the synthetic data should hold some truncated JSON"
    assert stats["plugin"].startswith("example (backfill-example-plugin 0.1.0")
    assert stats["inserted"] == len(expected) > 400
    assert stats["errors_by_tier"] == {"record": errors}
    assert [m["passed"] for m in report["validation"]] == [True]
    with sqlite3.connect(db) as conn:
        assert dict(conn.execute("SELECT bug_id, severity FROM bug_severities")) == expected

    again = json.loads(backfill(site, "run", "bug_severity", "-d", db, "-q", "--json").stdout)
    assert (again["extractors"][0]["inserted"], again["extractors"][0]["updated"]) == (0, 0)
    assert again["extractors"][0]["unchanged"] == len(expected)


def test_the_examples_own_tests_pass(site: Path, source: Path) -> None:
    """CI runs the example's tests against the installed package (not the source tree)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=source,
        env=env_with(site),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "failed" not in proc.stdout
