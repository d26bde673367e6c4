"""Real plugin packages, installed with pip and found through the ``backfill`` entry-point
group: a broken one beside working ones.

The runs are shown on a SQLite file and on a scratch PostgreSQL database. The fixture packages
live in tests/plugins/. ``backfill-broken-plugin`` imports a module that
does not exist; ``backfill-good-extra-plugin`` registers the ``extra_status_upper`` extractor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.backends import Backend
from support.cli import RunCli, parse_json_output, plugin_env
from support.db import fingerprint, query, scalar

BROKEN_DIST, BROKEN_VERSION = "backfill-broken-plugin", "0.3.1"
BROKEN_EP = "broken = backfill_broken_plugin"
BROKEN_EXC = "ModuleNotFoundError: No module named 'backfill_fixture_missing_dependency'"
GOOD_DIST, GOOD_VERSION = "backfill-good-extra-plugin", "1.2.0"
GOOD_EXTRACTOR = "extra_status_upper"


def _rows(stdout: str) -> dict[str, list[str]]:
    """list-plugins' table: plugin name -> its columns."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["name", "version", "status", "provides"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def _assert_one_broken_line(stderr: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    for part in (BROKEN_DIST, BROKEN_VERSION, BROKEN_EP, BROKEN_EXC):
        assert part in line, (part, line)


def test_list_plugins_shows_the_broken_one_beside_the_good_ones(cli: RunCli, plugin_site: Path) -> None:
    proc = cli(["list-plugins"], env=plugin_env(plugin_site))

    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert set(rows) == {"testmanagement", "throttles", "broken", "good_extra"}
    assert rows["testmanagement"][3] == "ok"
    assert rows["throttles"][3:] == ["ok", "throttle:replica_lag"]
    assert rows["good_extra"][1:4] == [GOOD_DIST, GOOD_VERSION, "ok"]
    assert f"extractor:{GOOD_EXTRACTOR}" in proc.stdout
    assert rows["broken"][1:4] == [BROKEN_DIST, BROKEN_VERSION, "error"]
    assert BROKEN_EXC in proc.stdout
    _assert_one_broken_line(proc.stderr)


def test_list_plugins_json(cli: RunCli, plugin_site: Path) -> None:
    proc = cli(["list-plugins", "--json"], env=plugin_env(plugin_site))

    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in parse_json_output(proc)}
    assert set(plugins) == {"testmanagement", "throttles", "broken", "good_extra"}
    assert plugins["broken"] == {
        "name": "broken",
        "distribution": BROKEN_DIST,
        "version": BROKEN_VERSION,
        "entry_point": BROKEN_EP,
        "status": "error",
        "error": BROKEN_EXC,
        "extractors": [],
        "validators": [],
        "throttles": [],
        "commands": False,
        "conflicts": [],
        "problems": [],
    }
    assert plugins["good_extra"]["status"] == "ok"
    assert plugins["good_extra"]["distribution"] == GOOD_DIST
    assert plugins["good_extra"]["extractors"] == [GOOD_EXTRACTOR]
    assert plugins["testmanagement"]["status"] == "ok"
    assert plugins["testmanagement"]["extractors"] == ["test_features", "bug_attribution"]
    assert (plugins["throttles"]["status"], plugins["throttles"]["throttles"]) == ("ok", ["replica_lag"])
    _assert_one_broken_line(proc.stderr)


def test_builtin_extractor_still_runs_beside_the_broken_plugin(
    cli: RunCli, plugin_site: Path, db: Backend
) -> None:
    proc = cli(
        ["run", "test_features", "-d", db.url, "--quiet", "--json", "--no-validate"],
        env=plugin_env(plugin_site),
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_one_broken_line(proc.stderr)
    stats = parse_json_output(proc)["extractors"][0]
    assert stats["plugin"] == "testmanagement (backfill 0.1.0)"
    assert stats["inserted"] == scalar(db, "SELECT count(*) FROM test_features") > 0


def test_good_plugin_extractor_runs_beside_the_broken_plugin(
    cli: RunCli, plugin_site: Path, db: Backend
) -> None:
    statuses = {s for (s,) in query(db, "SELECT DISTINCT status FROM tests")}
    assert "archived" in statuses and all(s == s.lower() for s in statuses)

    proc = cli(
        ["run", GOOD_EXTRACTOR, "-d", db.url, "--quiet", "--json"],
        env=plugin_env(plugin_site),
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = parse_json_output(proc)["extractors"][0]
    assert stats["plugin"] == f"good_extra ({GOOD_DIST} {GOOD_VERSION})"
    n_tests = scalar(db, "SELECT count(*) FROM tests")
    assert stats["updated"] == n_tests
    upper = {s for (s,) in query(db, "SELECT DISTINCT status FROM tests")}
    assert upper == {s.upper() for s in statuses}


def test_extractor_only_the_broken_plugin_could_provide_exits_3(
    cli: RunCli, plugin_site: Path, db: Backend
) -> None:
    digest = fingerprint(db)

    proc = cli(["run", "broken_feature_counts", "-d", db.url, "--quiet"], env=plugin_env(plugin_site))

    assert proc.returncode == 3, proc.stdout + proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("backfill: error:")]
    assert len(error) == 1, proc.stderr
    assert "unknown extractor 'broken_feature_counts'" in error[0]
    assert "failed to load" in error[0]
    assert BROKEN_DIST in error[0]
    assert BROKEN_EXC in error[0]
    assert fingerprint(db) == digest


def test_same_extractor_without_the_broken_plugin_is_a_usage_error(
    cli: RunCli, plugin_site: Path, db: Backend
) -> None:
    proc = cli(
        ["run", "broken_feature_counts", "-d", db.url, "--quiet"],
        env=plugin_env(plugin_site, {"BACKFILL_LOAD_PLUGINS": ""}),
    )

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "unknown extractor 'broken_feature_counts'" in proc.stderr
    assert f"BACKFILL_LOAD_PLUGINS left out {BROKEN_DIST}" in proc.stderr  # a hint, not a load failure
    assert "failed to load" not in proc.stderr


def test_load_plugins_empty_loads_only_the_builtins(cli: RunCli, plugin_site: Path) -> None:
    env = plugin_env(plugin_site, {"BACKFILL_LOAD_PLUGINS": ""})

    text = cli(["list-plugins"], env=env)
    as_json = cli(["list-plugins", "--json"], env=env)

    assert text.returncode == 0
    assert {name: cols[3] for name, cols in _rows(text.stdout).items()} == {
        "testmanagement": "ok",
        "throttles": "ok",
        "broken": "disabled",
        "good_extra": "disabled",
    }
    statuses = {p["name"]: p["status"] for p in parse_json_output(as_json)}
    assert statuses == {
        "testmanagement": "ok",
        "throttles": "ok",
        "broken": "disabled",
        "good_extra": "disabled",
    }
    assert text.stderr == as_json.stderr == ""


@pytest.mark.parametrize(
    "selector", [GOOD_DIST, "Backfill_Good.Extra-Plugin", f"some-other-dist,{GOOD_DIST}"]
)
def test_load_plugins_selects_a_distribution(cli: RunCli, plugin_site: Path, selector: str) -> None:
    env = plugin_env(plugin_site, {"BACKFILL_LOAD_PLUGINS": selector})

    proc = cli(["list-plugins", "--json"], env=env)

    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p["status"] for p in json.loads(proc.stdout)}
    assert plugins == {"testmanagement": "ok", "throttles": "ok", "good_extra": "ok", "broken": "disabled"}
    assert proc.stderr == ""


def test_load_plugins_allows_spaces_after_commas(cli: RunCli, plugin_site: Path) -> None:
    """``BACKFILL_LOAD_PLUGINS='a, b'`` is how people write comma-separated lists."""
    env = plugin_env(plugin_site, {"BACKFILL_LOAD_PLUGINS": f"some-other-dist, {GOOD_DIST}"})

    proc = cli(["list-plugins", "--json"], env=env)

    assert proc.returncode == 0, proc.stderr
    loaded = [p["name"] for p in json.loads(proc.stdout) if p["status"] == "ok"]
    assert loaded == ["testmanagement", "throttles", "good_extra"]


def test_without_the_fixture_packages_only_the_builtins_exist(cli: RunCli) -> None:
    """The fixture packages are seen only through PYTHONPATH: nothing leaks between tests."""
    proc = cli(["list-plugins", "--json"])

    assert proc.returncode == 0
    assert [p["name"] for p in parse_json_output(proc)] == ["testmanagement", "throttles"]
    assert proc.stderr == ""
