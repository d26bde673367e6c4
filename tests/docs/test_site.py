"""The documentation site: it builds strictly, the CLI reference's generated text matches the
commands, and each check fails when the docs drift (a broken link or anchor, a stale --help)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import run_cli

ROOT = Path(__file__).parents[2]
CLI_MD = "docs/cli.md"
# What a site build reads besides the package's sources (linked, not copied).
SITE_SOURCES = (
    "mkdocs.yml",
    "docs",
    "docs_build",
    "README.md",
    "CONTRIBUTING.md",
    "CHANGELOG.md",
    "examples",
)


def tool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` in ``cwd``, as .ci/run runs mkdocs and cog."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return tool("mkdocs", "build", "--strict", "--site-dir", str(site), cwd=root)


def copy_of_the_site(tmp_path: Path) -> Path:
    """The site's sources copied into ``tmp_path``, free to be broken."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in SITE_SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
            )
        else:
            shutil.copy2(source, root / name)
    (root / "src").symlink_to(ROOT / "src")
    return root


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    result = build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in (
        "backfill_core.Extractor",
        "backfill_core.testing.check_extractor",
        "backfill_core.app.run_backfill",
    ):
        assert f'id="{name}"' in api, name
    cli = (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "$ backfill run --help" in cli
    index = json.loads((tmp_path / "site" / "search" / "search_index.json").read_text(encoding="utf-8"))
    searched = {entry["location"].partition("#")[0] for entry in index["docs"]}
    assert {"", "cli/", "api/", "example-plugin/", "changelog/", "development/"} <= searched


@pytest.mark.parametrize(
    ("link", "warning"),
    [
        ("[the summary](cli.md#no-such-heading)", "does not contain an anchor '#no-such-heading'"),
        ("[a page](no-such-page.md)", "not found among documentation files"),
        ("[the README](../READ_ME.md)", "not found among documentation files"),
    ],
    ids=["anchor", "page", "outside docs"],
)
def test_the_strict_build_fails_on_a_broken_link(tmp_path: Path, link: str, warning: str) -> None:
    root = copy_of_the_site(tmp_path)
    page = root / "docs" / "operations.md"
    page.write_text(page.read_text(encoding="utf-8") + f"\nSee {link}.\n", encoding="utf-8")
    result = build(root, tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"Doc file 'operations.md' contains a link '{link.partition('(')[2][:-1]}'" in output, output
    assert warning in output and "Aborted with 1 warnings in strict mode" in output, output


def test_the_cli_reference_matches_the_commands() -> None:
    result = tool("cogapp", "--check", CLI_MD, cwd=ROOT)
    assert result.returncode == 0, f"run `cog -r {CLI_MD}`: {result.stdout}{result.stderr}"


def test_cog_check_fails_when_the_cli_reference_drifts_and_cog_restores_it(tmp_path: Path) -> None:
    root = copy_of_the_site(tmp_path)
    page = root / CLI_MD
    original = page.read_text(encoding="utf-8")
    line = "  --dry-run                       Read only: report what would change.\n"
    assert original.count(line) == 1
    page.write_text(
        original.replace(line, "  --dry-run                       Read only.\n"), encoding="utf-8"
    )

    check = tool("cogapp", "--check", CLI_MD, cwd=root)
    assert check.returncode != 0
    assert "Check failed" in check.stdout + check.stderr

    regenerate = tool("cogapp", "-r", CLI_MD, cwd=root)
    assert regenerate.returncode == 0, regenerate.stderr
    assert page.read_text(encoding="utf-8") == original


def test_version_is_the_package_metadata_and_the_changelog_names_it() -> None:
    version = importlib.metadata.version("backfill")
    result = run_cli(["--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"backfill, version {version}\n"
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    newest = re.search(r"^## \[(\d[^\]]*)\]", changelog, re.MULTILINE)
    assert newest is not None and newest[1] == version


def test_the_readme_synopsis_names_every_command_and_option() -> None:
    """README's synopsis against the CLI reference's --help blocks, which cog keeps true."""
    reference = (ROOT / CLI_MD).read_text(encoding="utf-8")
    blocks = re.findall(r"^\$ backfill ((?:[a-z-]+ )?)--help\n(.*?)^```", reference, re.MULTILINE | re.DOTALL)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    synopsis = readme.split("## The command line", 1)[1].split("```")[1]
    commands = {command.strip() for command, _ in blocks}
    assert {"", "run", "validate", "status", "demo"} <= commands
    missing = [
        f"{command.strip() or 'backfill'} {option}"
        for command, text in blocks
        for option in set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text.split("Options:", 1)[1]))
        if option != "--help" and option not in synopsis
    ]
    missing += [
        name
        for name in commands
        if name and not re.search(rf"^backfill (?:[a-z-]+\|)*{name}\b", synopsis, re.MULTILINE)
    ]
    assert not missing, f"README.md's synopsis lacks {missing}"
