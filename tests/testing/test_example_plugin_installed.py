"""The example third-party plugin, installed as a regular (non-editable) package: it shows in
``backfill list-plugins``, ``backfill run`` of it works end to end on SQLite and on PostgreSQL
(``bug_severity``, and ``bug_steps``, its Children change), and its own tests pass."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill_plugins.testmanagement import synthetic
from support.backends import KINDS, Backend, PostgresBackend, SqliteBackend
from support.postgres import scratch_database

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


@pytest.fixture(params=KINDS)
def severity_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Backend]]:
    """A synthetic source of 120 tests, and a database holding it on this run's backend."""
    source = tmp_path / "cache.db"
    synthetic.build(source, 120, seed=5)
    if request.param == "sqlite":
        yield source, SqliteBackend(source)
        return
    with scratch_database(source) as url:
        yield source, PostgresBackend("postgresql", url)


def test_run_end_to_end(site: Path, severity_db: tuple[Path, Backend]) -> None:
    source, target = severity_db
    db = target.url
    missing = backfill(site, "run", "bug_severity", "-d", db, "-q")
    assert missing.returncode == 3 and "bug_severities" in missing.stderr

    ddl = backfill(site, "severity-ddl")
    assert ddl.returncode == 0, ddl.stderr
    StepsDatabase(target).apply(ddl.stdout)

    proc = backfill(site, "run", "bug_severity", "-d", db, "-q", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    [stats] = report["extractors"]
    expected, errors = expected_severities(source)
    assert errors, "the synthetic data should hold some truncated JSON"
    assert stats["plugin"].startswith("example (backfill-example-plugin 0.1.0")
    assert stats["inserted"] == len(expected) > 400
    assert stats["errors_by_tier"] == {"record": errors}
    assert [m["passed"] for m in report["validation"]] == [True]
    assert dict(target.rows("SELECT bug_id, severity FROM bug_severities")) == expected

    again = json.loads(backfill(site, "run", "bug_severity", "-d", db, "-q", "--json").stdout)
    assert (again["extractors"][0]["inserted"], again["extractors"][0]["updated"]) == (0, 0)
    assert again["extractors"][0]["unchanged"] == len(expected)


# -- bug_steps: a Children change, end to end on both databases -------------------------------------

Steps = dict[tuple[int, int], str]
"""bug_steps as {(bug_id, step_no): step}."""
COUNTS = ("inserted", "updated", "deleted", "unchanged")


def expected_run(raws: dict[int, str], before: Steps) -> tuple[Steps, dict[str, int], dict[str, int]]:
    """What a run of bug_steps over bugs ``raws`` (id -> raw_data) makes of ``before``: the table
    after it, the counts and the record errors by kind, worked out from the JSON independently."""
    after = dict(before)
    counts = dict.fromkeys(COUNTS, 0)
    errors: dict[str, int] = {}
    for bug_id, raw in raws.items():
        try:
            data = json.loads(raw)
        except ValueError:
            errors["invalid-json"] = errors.get("invalid-json", 0) + 1
            continue
        steps = data.get("steps")
        if steps is None:
            continue  # no steps named: the rows stay
        kind = (
            "invalid-shape"
            if not isinstance(steps, list)
            else "invalid-type"
            if not all(isinstance(s, str) for s in steps)
            else None
        )
        if kind:
            errors[kind] = errors.get(kind, 0) + 1
            continue
        old = {no: text for (bug, no), text in before.items() if bug == bug_id}
        new = dict(enumerate(steps, 1))
        for no in old.keys() - new.keys():
            del after[bug_id, no]
            counts["deleted"] += 1
        for no, text in new.items():
            after[bug_id, no] = text
            what = "inserted" if no not in old else "unchanged" if old[no] == text else "updated"
            counts[what] += 1
    return after, counts, errors


def summary_row(stdout: str, name: str) -> dict[str, str]:
    """The summary table's row for extractor ``name``, by column (one-word headings)."""
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("extractor "))
    row = next(line for line in lines if line.startswith(f"{name} "))
    return dict(zip(header.split(), row.split(), strict=True))


class StepsDatabase:
    """A synthetic test-management database on one backend, for bug_steps."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    def apply(self, script: str) -> None:
        if isinstance(self.db, SqliteBackend):
            with sqlite3.connect(self.db.path) as conn:
                conn.executescript(script)
        else:
            self.db.execute(script)

    def raws(self) -> dict[int, str]:
        return dict(self.db.rows("SELECT id, raw_data FROM bugs ORDER BY id"))

    def steps(self) -> Steps:
        return {(bug, no): text for bug, no, text in self.db.rows("SELECT * FROM bug_steps")}

    def set_raw(self, bug_id: int, data: dict[str, Any]) -> None:
        text = json.dumps(data).replace("'", "''")
        self.db.execute(f"UPDATE bugs SET raw_data = '{text}' WHERE id = {bug_id}")


@pytest.fixture(scope="module")
def steps_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic database (about 110 bugs with 2 to 4 steps each), never written to."""
    path = tmp_path_factory.mktemp("steps") / "source.db"
    synthetic.build(path, 25, seed=11)
    path.chmod(0o444)
    return path


@pytest.fixture(params=KINDS)
def steps_db(request: pytest.FixtureRequest, steps_source: Path, tmp_path: Path) -> Iterator[StepsDatabase]:
    if request.param == "sqlite":
        path = tmp_path / "steps.db"
        shutil.copy(steps_source, path)
        path.chmod(0o644)
        yield StepsDatabase(SqliteBackend(path))
        return
    with scratch_database(steps_source) as url:
        yield StepsDatabase(PostgresBackend("postgresql", url))


def test_bug_steps_follows_the_json_as_it_changes(site: Path, steps_db: StepsDatabase) -> None:
    """``bug_steps`` on a real database: the first run inserts every step; after lists shrink,
    lose a middle step, grow or empty, the next run leaves bug_steps exactly as the JSON says,
    deleting what the lists left out and counting it (dry run, summary, --json, ledger); a third
    run changes nothing."""
    database = ["-d", steps_db.db.url]
    run = ["run", "bug_steps", *database, "-q"]

    ddl = backfill(site, "example-ddl")
    assert ddl.returncode == 0, ddl.stderr
    steps_db.apply(ddl.stdout)

    first = backfill(site, *run, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    [stats] = report["extractors"]
    expected, counts, errors = expected_run(steps_db.raws(), {})
    assert errors == {"invalid-json": 1}, "the synthetic data should hold one truncated JSON"
    assert {c: stats[c] for c in COUNTS} == counts
    assert counts["inserted"] == len(expected) > 250 and counts["deleted"] == 0
    assert stats["errors_by_tier"] == {"record": errors}
    assert steps_db.steps() == expected
    assert [(m["metric"], m["passed"]) for m in report["validation"]] == [
        ("bugs_with_steps", True),
        ("empty_steps_cleared", True),
    ]

    # Edit bugs with three or more steps.
    long: list[tuple[int, dict[str, Any]]] = []
    for bug_id, raw in steps_db.raws().items():
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if len(data["steps"]) >= 3:
            long.append((bug_id, data))
    edits: dict[str, Callable[[list[str]], Any]] = {
        "shrink": lambda s: s[:1],
        "drop the middle step": lambda s: [s[0], *s[2:]],
        "grow": lambda s: [*s, "Scroll down.", "Tap „Bezahlen“."],
        "empty": lambda s: [],
        "reword one": lambda s: [s[0], s[1] + " Again.", *s[2:]],
        "not a list": lambda s: " ".join(s),  # invalid-shape: its rows stay
        "an item not text": lambda s: [*s, 4],  # invalid-type: its rows stay
    }
    assert len(long) > len(edits) + 1
    for (bug_id, data), edit in zip(long, edits.values(), strict=False):
        steps_db.set_raw(bug_id, {**data, "steps": edit(data["steps"])})
    untouched_id, untouched = long[len(edits)]
    del untouched["steps"]  # no steps named: its rows stay
    steps_db.set_raw(untouched_id, untouched)
    before = steps_db.steps()
    expected, counts, errors = expected_run(steps_db.raws(), before)
    assert counts["deleted"] >= 5 and counts["inserted"] == 2 and counts["updated"] >= 2
    assert expected != before and untouched_id in {bug for bug, _ in expected}

    dry = backfill(site, *run, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    [dry_stats] = json.loads(dry.stdout)["extractors"]
    assert {c: dry_stats[c] for c in COUNTS} == counts
    assert steps_db.steps() == before

    second = backfill(site, *run)
    assert second.returncode == 0, second.stderr
    row = summary_row(second.stdout, "bug_steps")
    assert {c: int(row[c]) for c in COUNTS} == counts
    assert int(row["errors"]) == sum(errors.values())
    assert steps_db.steps() == expected
    ledger = steps_db.db.rows("SELECT inserted, updated, deleted FROM backfill_runs ORDER BY id")
    assert ledger[-1] == (counts["inserted"], counts["updated"], counts["deleted"])
    assert "pass  steps_coverage.empty_steps_cleared = 100.0% [1/1]" in second.stdout

    third = backfill(site, *run, "--json")
    assert third.returncode == 0, third.stderr
    [again] = json.loads(third.stdout)["extractors"]
    same, counts, _ = expected_run(steps_db.raws(), expected)
    assert same == expected and counts["unchanged"] > 250
    assert {c: again[c] for c in COUNTS} == {**counts, "inserted": 0, "updated": 0, "deleted": 0}
    assert steps_db.steps() == expected


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
