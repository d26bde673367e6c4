"""Suite-wide settings: nothing in the suite may depend on how fast the machine is, and a run says
how many PostgreSQL cases it ran or skipped."""

import asyncio
import os

import pytest
from _pytest.terminal import TerminalReporter
from hypothesis import HealthCheck, settings

# Hypothesis' per-example deadline and its too-slow health check measure wall time: a loaded CI
# machine would fail tests that are correct. Examples are still bounded by max_examples.
settings.register_profile("backfill", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("backfill")


REQUIRE_ENV = "BACKFILL_REQUIRE_POSTGRES"


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """pyproject's addopts name ``--numprocesses``: still accepted, and ignored, with ``-p no:xdist``."""
    if not pluginmanager.has_plugin("xdist"):
        parser.addoption("--numprocesses", help="ignored: pytest-xdist is not loaded")


def pytest_sessionstart(session: pytest.Session) -> None:
    """With BACKFILL_REQUIRE_POSTGRES=1 (as in CI) a missing or unreachable server fails the run
    instead of skipping its tests."""
    if os.environ.get(REQUIRE_ENV) != "1":
        return
    from support.postgres import SERVER

    if not SERVER:
        pytest.exit(f"{REQUIRE_ENV}=1 but BACKFILL_TEST_POSTGRES_URL is not set", returncode=3)
    try:
        asyncio.run(_ping(SERVER))
    except Exception as e:
        pytest.exit(f"{REQUIRE_ENV}=1 but the PostgreSQL server {SERVER} is unreachable: {e}", returncode=3)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the template databases this process made for the PostgreSQL tests."""
    if _server():
        from support.postgres import drop_templates

        drop_templates()


def _server() -> str | None:
    from support.postgres import SERVER

    return SERVER


async def _ping(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=30)
    await conn.close()


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    """Say how many PostgreSQL cases ran, or were skipped for want of a server."""
    ran = skipped = 0
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in ("call", "setup") or "postgres" not in report.keywords:
                continue
            if outcome == "skipped":
                skipped += 1
            elif report.when == "call" or outcome == "error":
                ran += 1
    if ran or skipped:
        terminalreporter.write_line(
            f"PostgreSQL cases: {ran} ran, {skipped} skipped"
            + (" (set BACKFILL_TEST_POSTGRES_URL to run them)" if skipped and not _server() else "")
        )
