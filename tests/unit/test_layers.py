"""The package's layers: the contract at the top level, then the store, the engine, the application.

Each layer imports only from the layers below it, and importing the contract loads neither the
engine nor SQLAlchemy nor a database driver.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import backfill_core

PACKAGE = Path(backfill_core.__file__).parent
LAYERS = ["contract", "store", "engine", "app"]
"""From the bottom up; the testing kit and the package's __main__ sit above them all."""


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "backfill_core":
        return None
    if len(parts) == 1:
        return "package"
    if parts[1] in ("store", "engine", "app", "testing"):
        return parts[1]
    return "contract"


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        found.append((name.removesuffix(".__init__"), path))
    return found


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names if node.module == "backfill_core"]
    return out


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_each_layer_imports_only_downward(module: str, path: Path) -> None:
    layer = layer_of(module)
    if layer in ("package", "testing") or module == "backfill_core.__main__":
        return  # the package re-exports, the kit and __main__ stand above every layer
    assert layer is not None
    allowed = LAYERS[: LAYERS.index(layer) + 1]
    for imported in imports_of(path):
        target = layer_of(imported)
        if target is None or target == "package":
            continue
        assert target in allowed, f"{module} ({layer}) imports {imported} ({target}): only {allowed} may be"


def test_the_contract_loads_no_engine_and_no_database_driver() -> None:
    code = (
        "import sys, backfill_core\n"
        "from backfill_core import Extractor, Upsert, Validator, hookimpl, parse_json\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = run.stdout.split()
    heavy = [
        m
        for m in loaded
        if m.split(".")[0] in ("sqlalchemy", "aiosqlite", "asyncpg", "sqlite3", "sqlmodel", "tqdm", "click")
        or m.startswith(("backfill_core.store", "backfill_core.engine", "backfill_core.app"))
    ]
    assert heavy == []


def test_the_embedding_api_is_still_importable_from_the_top_level() -> None:
    from backfill_core import RunOptions, run_backfill
    from backfill_core.app import RunOptions as app_options, run_backfill as app_run

    assert (RunOptions, run_backfill) == (app_options, app_run)
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        backfill_core.nosuch  # noqa: B018
