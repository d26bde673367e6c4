"""The pytest plugin's fixtures, as a plugin author uses them (they need no import).

SQLite only: ``backfill_database`` builds a SQLite file.
"""

from __future__ import annotations

import ast
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import click
import pytest

import backfill_pytest
from backfill_core import Extractor, Registry, Row, Update, hookimpl
from backfill_core.app.cli import cli as real_cli
from backfill_core.plugins import PluginInfo
from backfill_core.testing import CliResult
from backfill_plugins.testmanagement import TestFeatureExtractor, models, plugin as testmanagement, synthetic

PLUGIN_FILE = Path(backfill_pytest.__file__)


class Shout(Extractor):
    name = "shout"
    source = "tests"
    columns = ("id", "status")
    writes = {"tests": ("id", "status")}

    def extract(self, row: Row) -> list[Update]:
        status = row["status"]
        return (
            []
            if status is None
            else [Update("tests", key={"id": row["id"]}, values={"status": status.upper()})]
        )


class ShoutPlugin:
    """A plugin object using every hook: an extractor, no validators, and a command."""

    @hookimpl
    def register_extractors(self, register: Callable[[Extractor], None]) -> None:
        register(Shout())

    @hookimpl
    def register_validators(self, register: Callable[[object], None]) -> None:
        pass

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command("shout-hello")
        @click.argument("who")
        def hello(who: str) -> None:
            click.echo(f"HELLO {who.upper()}")


class Misspelt:
    @hookimpl
    def register_extractor(self, register: Callable[[Extractor], None]) -> None:  # no such hook
        pass


# -- the plugin is loaded through the pytest11 entry point, and is light ---------------------------


def test_loaded_through_the_pytest11_entry_point(pytestconfig: pytest.Config) -> None:
    [ep] = [ep for ep in entry_points(group="pytest11") if ep.value == "backfill_pytest"]
    assert ep.name == "backfill"
    assert pytestconfig.pluginmanager.get_plugin("backfill") is backfill_pytest


def test_module_imports_only_pytest_and_the_standard_library() -> None:
    tree = ast.parse(PLUGIN_FILE.read_text())
    imported = set()
    for node in tree.body:  # top level only: fixtures import backfill inside their bodies
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - {"pytest", "__future__"} <= set(sys.stdlib_module_names), imported


def test_testing_kit_does_not_import_pytest() -> None:
    code = "import sys, backfill_core.testing; assert 'pytest' not in sys.modules, 'pytest imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


# -- backfill_registry and register_plugin ---------------------------------------------------------


def test_registry_starts_empty(backfill_registry: Registry) -> None:
    assert backfill_registry.plugins == []
    assert backfill_registry.extractors == {}


def test_register_plugin_adds_to_this_tests_registry(
    register_plugin: Callable[..., PluginInfo], backfill_registry: Registry
) -> None:
    info = register_plugin(testmanagement)
    assert info.status == "ok"
    assert info.extractors == ["test_features", "bug_attribution"]
    assert info.validators == ["coverage"]
    assert set(backfill_registry.extractors) == {"test_features", "bug_attribution"}
    named = register_plugin(ShoutPlugin(), name="shouting")
    assert (named.name, named.extractors, named.commands) == ("shouting", ["shout"], True)


def test_a_plugin_that_fails_to_load_fails_the_test(register_plugin: Callable[..., PluginInfo]) -> None:
    with pytest.raises(pytest.fail.Exception, match="failed to load: PluginValidationError"):
        register_plugin(Misspelt())
    info = register_plugin(Misspelt(), name="misspelt-again", must_load=False)
    assert info.status == "error" and "register_extractor" in (info.error or "")


# -- backfill_database ---------------------------------------------------------------------------------


def test_database_from_models_and_rows(backfill_database: Callable[..., Path]) -> None:
    db = backfill_database(
        models.Test,
        models.TestFeature,
        models.Bug,
        rows={
            "tests": [
                {"id": 1, "customer_id": 2, "product_id": 3, "status": "archived", "data": {"features": []}}
            ]
        },
    )
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"tests", "test_features", "bugs"}
        assert conn.execute("SELECT id, customer_id, data FROM tests").fetchall() == [
            (1, 2, '{"features":[]}')
        ]


def test_database_from_an_extractor_and_ddl(backfill_database: Callable[..., Path]) -> None:
    first = backfill_database(TestFeatureExtractor())  # its models, and those their foreign keys name
    second = backfill_database("CREATE TABLE t (x INTEGER NOT NULL);", rows={"t": [{"x": 1}, {"x": 2}]})
    assert first != second and first.parent == second.parent
    with sqlite3.connect(first) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert names == {"tests", "test_features", "features", "products", "users"}
    with sqlite3.connect(second) as conn:
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (3,)
    with pytest.raises(sqlite3.IntegrityError):
        backfill_database("CREATE TABLE t (x INTEGER NOT NULL);", rows={"t": [{"x": None}]})


# -- backfill_cli ----------------------------------------------------------------------------------------


def test_cli_sees_only_the_registered_plugins(
    register_plugin: Callable[..., PluginInfo], backfill_cli: Callable[..., CliResult]
) -> None:
    empty = backfill_cli(["list-plugins", "--json"])
    assert empty.exit_code == 0 and empty.json() == []
    register_plugin(ShoutPlugin(), name="shouting")
    [listed] = backfill_cli(["list-plugins", "--json"]).json()
    assert (listed["name"], listed["status"], listed["extractors"]) == ("shouting", "ok", ["shout"])
    unknown = backfill_cli(["run", "test_features", "-d", "x.db"])
    assert unknown.exit_code == 2 and "unknown extractor 'test_features'" in unknown.stderr


def test_cli_runs_plugin_commands_without_touching_the_real_group(
    register_plugin: Callable[..., PluginInfo], backfill_cli: Callable[..., CliResult]
) -> None:
    register_plugin(ShoutPlugin(), name="shouting")
    result = backfill_cli(["shout-hello", "world"])
    assert (result.exit_code, result.stdout) == (0, "HELLO WORLD\n")
    assert "shout-hello" not in real_cli.commands


def test_cli_runs_a_backfill_end_to_end(
    tmp_path: Path, register_plugin: Callable[..., PluginInfo], backfill_cli: Callable[..., CliResult]
) -> None:
    register_plugin(testmanagement)
    db = tmp_path / "synthetic.db"
    synthetic.build(db, 30, seed=3)
    result = backfill_cli(["run", "test_features", "bug_attribution", "-d", db, "--json", "-q"])
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert [s["extractor"] for s in report["extractors"]] == ["test_features", "bug_attribution"]
    with sqlite3.connect(db) as conn:
        features = conn.execute("SELECT count(*) FROM test_features").fetchone()[0]
    assert features == report["extractors"][0]["inserted"] > 0
    again = backfill_cli(["run", "test_features", "-d", db, "--json", "-q", "--dry-run"]).json()
    assert again["extractors"][0]["inserted"] == again["extractors"][0]["updated"] == 0


def test_cli_database_defaults_are_scrubbed(
    monkeypatch: pytest.MonkeyPatch,
    register_plugin: Callable[..., PluginInfo],
    backfill_cli: Callable[..., CliResult],
) -> None:
    monkeypatch.setenv("BACKFILL_DATABASE_URL", "/nonexistent/from-the-environment.db")
    register_plugin(testmanagement)
    result = backfill_cli(["run", "test_features", "-q"], env={"HOME": "/nonexistent-home"})
    assert result.exit_code == 3
    assert "from-the-environment" not in result.stderr and "nonexistent-home" in result.stderr


def test_cli_with_the_installed_plugins(backfill_cli: Callable[..., CliResult]) -> None:
    result = backfill_cli(["list-plugins", "--json"], installed=True)
    assert result.exit_code == 0
    assert "testmanagement" in {p["name"] for p in result.json()}
    assert "demo" in backfill_cli(["--help"], installed=True).stdout
