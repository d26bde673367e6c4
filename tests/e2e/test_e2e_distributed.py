"""``backfill enqueue`` and ``backfill worker`` from outside, where no PostgreSQL server is needed:
on SQLite both are usage errors that point to ``--workers``. Distributed runs on the server:
tests/crash/test_distributed.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.cli import RunCli


@pytest.mark.parametrize("command", ["enqueue", "worker"])
def test_distributed_commands_need_postgres(command: str, fresh_db: Path, cli: RunCli) -> None:
    args = [command, *(["test_features"] if command == "enqueue" else []), "-d", fresh_db]
    proc = cli(args)
    assert proc.returncode == 2, proc.stderr
    assert f"`backfill {command}` needs PostgreSQL, where procrastinate keeps its job queue" in proc.stderr
    assert "backfill run --workers N" in proc.stderr
    assert "backfill_runs" not in proc.stderr  # refused before anything was written


def test_enqueue_needs_an_extractor(fresh_db: Path, cli: RunCli) -> None:
    proc = cli(["enqueue", "-d", fresh_db])
    assert proc.returncode == 2
    assert "name at least one extractor, or pass --all" in proc.stderr
