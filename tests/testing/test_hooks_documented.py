"""Every hook in backfill_core.hookspecs is documented in docs/hooks.md and exercised by a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from backfill_core import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS_DOC = ROOT / "docs" / "hooks.md"
HOOKS = sorted(
    name
    for name, f in vars(hookspecs).items()
    if inspect.isfunction(f) and hasattr(f, f"{hookspecs.PROJECT}_spec")
)


def test_the_hookspecs_are_found() -> None:
    assert {"register_extractors", "register_validators", "register_commands"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_heading_with_its_signature(hook: str) -> None:
    text = HOOKS_DOC.read_text()
    headings = re.findall(r"^## (\S+)\s*$", text, flags=re.MULTILINE)
    assert hook in headings, f"docs/hooks.md has no '## {hook}' heading"
    section = text.split(f"## {hook}\n", 1)[1].split("\n## ", 1)[0]
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert re.search(rf"def {hook}\({params}\b", section), f"the {hook} section does not show its signature"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook: str) -> None:
    me = Path(__file__).resolve()
    users = [
        p
        for p in (ROOT / "tests").rglob("test_*.py")
        if p.resolve() != me and re.search(rf"def {hook}\(", p.read_text())
    ]
    assert users, f"no test under tests/ implements the {hook} hook"
