"""MkDocs hooks: the repository's own Markdown outside ``docs/`` as pages of the site.

README.md, CONTRIBUTING.md, CHANGELOG.md and the example plugin (its README and its files)
become pages, and every relative link that leaves ``docs/`` (as GitHub renders it) is pointed
at the page that shows its target. A link to anything else outside ``docs/`` is left as it is,
so that the strict build fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).parent.parent
EXAMPLE = "examples/backfill-example-plugin"

# Repository Markdown shown as a page of the site: repository path -> page.
PAGES = {
    "README.md": "index.md",
    "CONTRIBUTING.md": "development.md",
    "CHANGELOG.md": "changelog.md",
    f"{EXAMPLE}/README.md": "example-plugin.md",
}
# A link to a folder shows its README on GitHub.
FOLDERS = {EXAMPLE: "example-plugin.md"}
# The example plugin's files, shown after its README, in this order.
EXAMPLE_FILES = ("pyproject.toml", "src/backfill_example", "tests")

LINK = re.compile(r"(\]\()([^)\s]+)(\))")
LANGUAGES = {".py": "python", ".toml": "toml"}


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add the repository's pages; the example plugin's page carries its files too."""
    for path, uri in PAGES.items():
        content = (ROOT / path).read_text(encoding="utf-8")
        if path.startswith(EXAMPLE):
            content += _example_files()
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Point each link that leaves ``docs/`` at the page of the site that shows its target."""
    uri = page.file.src_uri
    source = next((path for path, page_uri in PAGES.items() if page_uri == uri), f"docs/{uri}")
    return LINK.sub(lambda m: m[1] + _site_link(m[2], source, uri) + m[3], markdown)


def _site_link(target: str, source: str, uri: str) -> str:
    """``target``, a link in repository file ``source``, as a link from page ``uri``."""
    if "://" in target or target.startswith(("#", "/", "mailto:")):
        return target
    path, hash_, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
    if resolved.startswith("docs/"):
        page = resolved.removeprefix("docs/")
    elif resolved in PAGES or resolved in FOLDERS:
        page = PAGES.get(resolved) or FOLDERS[resolved]
    elif resolved.startswith(f"{EXAMPLE}/") and (ROOT / resolved).is_file():
        page, hash_, anchor = FOLDERS[EXAMPLE], "#", _file_anchor(resolved.removeprefix(f"{EXAMPLE}/"))
    else:
        return target
    return posixpath.relpath(page, posixpath.dirname(uri) or ".") + hash_ + anchor


def _example_files() -> str:
    """The example plugin's files, each under a heading of its own, for its page."""
    folder = ROOT / EXAMPLE
    paths: list[Path] = []
    for name in EXAMPLE_FILES:
        path = folder / name
        paths += sorted(p for p in path.rglob("*") if p.suffix in LANGUAGES) if path.is_dir() else [path]
    parts = ["\n## The plugin's files\n"]
    for path in paths:
        relative = path.relative_to(folder).as_posix()
        code = path.read_text(encoding="utf-8").rstrip("\n")
        parts.append(
            f"\n### `{relative}` {{ #{_file_anchor(relative)} }}\n\n"
            f"```{LANGUAGES[path.suffix]}\n{code}\n```\n"
        )
    return "".join(parts)


def _file_anchor(relative: str) -> str:
    return "file-" + re.sub(r"[^a-z0-9]+", "-", relative.lower()).strip("-")
