"""The documentation describes the product as it is, not how it was made: no page of the site
speaks of the project's rounds of work (issue numbers, sessions, commits)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

# Every Markdown file the site shows: docs/ and the repository's own pages that
# docs_build/pages.py adds (README, CONTRIBUTING, CHANGELOG, the example plugin's README).
PAGES = sorted(
    [
        *ROOT.glob("docs/**/*.md"),
        *ROOT.glob("*.md"),
        *ROOT.glob("examples/*/README.md"),
    ]
)

ORDINAL = r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|\d+(?:st|nd|rd|th))"
HISTORY = re.compile(
    "|".join(
        [
            r"\bissues?\s+#?\d+",  # "issue 5", "(Added with issue 16)"
            rf"\b(?:{ORDINAL}|this|last|previous|next|earlier|later)\s+(?:rounds?|sessions?)\b",
            r"\brounds?\s+(?:of\s+work|\d+)\b",
            r"\bcommits?\s+`?[0-9a-f]{7,40}\b",
            r"`(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}`",  # a commit hash, `845cb85`
            r"\bsource tree\s+`",
        ]
    ),
    re.IGNORECASE,
)


def history_in(text: str) -> list[str]:
    """Each line of ``text`` that speaks of development history, as ``LINE: match``."""
    return [
        f"{number}: {match[0]!r}"
        for number, line in enumerate(text.splitlines(), start=1)
        for match in HISTORY.finditer(line)
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_page_describes_the_product_not_its_history(page: Path) -> None:
    name = page.relative_to(ROOT).as_posix()
    found = history_in(page.read_text(encoding="utf-8"))
    assert not found, f"{name} speaks of development history (say it in a commit message): {found}"


def test_the_pages_checked_include_every_page_of_the_site() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "CONTRIBUTING.md", "CHANGELOG.md", "docs/cli.md", "docs/performance.md"} <= names


@pytest.mark.parametrize(
    "text",
    [
        "(Added with issue 5.)",
        "Issues 16 and 18 made it faster.",
        "On the seventh session's machine it took 1.6x.",
        "In the sixth round's three invocations",
        "after two rounds of work",
        "as of commit `845cb85`",
        "source tree `6a03892` with the worker",
        "measured at `ce2c40b`",
    ],
)
def test_history_is_recognised(text: str) -> None:
    assert history_in(text)


@pytest.mark.parametrize(
    "text",
    [
        "a network round trip",
        "The other way round, a batch waits",
        "sizes are rounded to two significant digits",
        "the session's temporary schema",
        "a batch's commit",
        "the next batch",
        "SQLSTATE 55P03 and 40P01",
        "the `backfill_runs` table",
        "`deadbeef`",
    ],
)
def test_product_talk_is_not_history(text: str) -> None:
    assert not history_in(text)
