"""The built-in plugin on another application's database: it steps aside when it was not asked
for, errs clearly when it was, and can be switched off. Through the real ``backfill`` script, on
a SQLite file and on a scratch PostgreSQL database (when BACKFILL_TEST_POSTGRES_URL is set).

The other application is a shop (``orders``, ``order_items``, ``coupons``), served by the fixture
plugin tests/plugins/backfill-shop-plugin (``shop_coupon_codes``, ``shop_coverage``); its database
has none of the built-in plugin's tables. ``BACKFILL_LOAD_PLUGINS=backfill-shop-plugin`` keeps
the other fixture of the same site (backfill-orphan-plugin) out, except where a test wants it.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from backfill_core.store.database import display, resolve_url
from support.backends import KINDS, Backend, PostgresBackend, SqliteBackend
from support.cli import BACKFILL, RunCli, make_env, parse_json_output, plugin_env
from support.postgres import SERVER, empty_database, execute, needs_server
from support.processes import wait_until_stopped

F = TypeVar("F", bound=Callable[..., Any])


def postgres_only(test: F) -> F:
    """Mark ``test`` as needing the PostgreSQL server (skipped without it)."""
    for mark in needs_server:
        test = mark(test)
    return test


SHOP = """
CREATE TABLE coupons (code VARCHAR(40) PRIMARY KEY, percent_off INTEGER NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer VARCHAR(100) NOT NULL, coupon VARCHAR(40),
                     coupon_code VARCHAR(40));
CREATE TABLE order_items (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders (id),
                          sku VARCHAR(40) NOT NULL, quantity INTEGER NOT NULL);
"""
"""The shop's tables, in DDL both databases accept."""
ORDERS = 10
COUPONS = 4
"""Orders 1 to 4 used the coupon ' spring10 ', the others none."""
TEST_FEATURES_AND_BUGS = """
CREATE TABLE test_features (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL);
CREATE TABLE bugs (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, raw_data TEXT,
                   test_feature_id INTEGER);
INSERT INTO bugs (id, customer_id, raw_data) VALUES (1, 7, '{"test_feature": {"id": 3}}');
"""
"""Two of the built-in plugin's tables, without ``tests``: test_features cannot run, while
bug_attribution's own tables are all there."""

SHOP_ONLY = "backfill-shop-plugin"
DISABLE = "BACKFILL_DISABLE_PLUGINS"


def shop_rows(coupon_code: str | None) -> str:
    coupon = "' spring10 '"
    code = "NULL" if coupon_code is None else f"'{coupon_code}'"
    orders = ", ".join(
        f"({i}, 'customer {i}', {coupon if i <= COUPONS else 'NULL'}, {code if i <= COUPONS else 'NULL'})"
        for i in range(1, ORDERS + 1)
    )
    return (
        "INSERT INTO coupons (code, percent_off) VALUES ('SPRING10', 10);\n"
        f"INSERT INTO orders (id, customer, coupon, coupon_code) VALUES {orders};\n"
        "INSERT INTO order_items (id, order_id, sku, quantity) VALUES (1, 1, 'mug', 2), (2, 5, 'tee', 1);\n"
    )


class MakeShop(Protocol):
    def __call__(self, coupon_code: str | None = None, extra: str = "") -> Backend: ...


@pytest.fixture(params=KINDS)
def make_shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeShop]:
    """``make_shop(coupon_code, extra)``: a shop database of this run's kind, SQLite or PostgreSQL,
    whose orders with a coupon have ``coupon_code`` already (None: not yet), plus the DDL and
    rows of ``extra``."""
    with ExitStack() as stack:
        made = 0

        def make(coupon_code: str | None = None, extra: str = "") -> Backend:
            nonlocal made
            made += 1
            sql = SHOP + shop_rows(coupon_code) + extra
            if request.param == "sqlite":
                path = tmp_path / f"shop-{made}.db"
                with sqlite3.connect(path) as conn:
                    conn.executescript(sql)
                conn.close()
                return SqliteBackend(path)
            url = stack.enter_context(empty_database())
            asyncio.run(execute(url, sql))
            return PostgresBackend("postgresql", url)

        yield make


def shown(db: Backend) -> str:
    """The database as backfill prints it."""
    return display(resolve_url(db.url))


def shop_env(site: Path, **extra: str) -> dict[str, str | None]:
    return plugin_env(site, {"BACKFILL_LOAD_PLUGINS": SHOP_ONLY, **extra})


def backfill_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("backfill: ")]


def skip_line(kind: str, name: str, db: Backend, table: str) -> str:
    reason = f"table '{table}' does not exist in {shown(db)}"
    return f"backfill: skipped {kind} '{name}' (plugin testmanagement): {reason}"


def coupon_codes(db: Backend) -> list[Any]:
    return [r[0] for r in db.rows("SELECT coupon_code FROM orders ORDER BY id")]


# -- not named: skipped, one line each ------------------------------------------------------------


def test_a_bare_validate_skips_the_builtin_validator(
    cli: RunCli, shop_site: Path, make_shop: MakeShop
) -> None:
    db = make_shop(coupon_code="SPRING10")

    proc = cli(["validate", "-d", db.url], env=shop_env(shop_site))
    as_json = cli(["validate", "-d", db.url, "--json"], env=shop_env(shop_site))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [skip_line("validator", "coverage", db, "tests")]
    assert "  pass  shop_coverage.coupons_normalised = 100.0% [4/4] (threshold 90%)" in proc.stdout
    assert "  info  shop_coverage.orders_with_coupon = 40.0% [4/10]" in proc.stdout
    assert "coverage." not in proc.stdout.replace("shop_coverage.", "")
    report = parse_json_output(as_json)
    assert (as_json.returncode, report["exit_code"]) == (0, 0)
    assert report["skipped"] == [
        {
            "kind": "validator",
            "name": "coverage",
            "plugin": "testmanagement",
            "reason": f"table 'tests' does not exist in {shown(db)}",
        }
    ]
    assert {m["validator"] for m in report["validation"]} == {"shop_coverage"}


def test_run_all_skips_the_builtin_extractors_and_runs_the_others(
    cli: RunCli, shop_site: Path, make_shop: MakeShop
) -> None:
    db = make_shop()

    proc = cli(["run", "--all", "-d", db.url, "-q"], env=shop_env(shop_site))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        skip_line("extractor", "test_features", db, "tests"),
        skip_line("extractor", "bug_attribution", db, "bugs"),
    ]
    assert coupon_codes(db) == ["SPRING10"] * COUPONS + [None] * (ORDERS - COUPONS)
    assert "  pass  shop_coverage.coupons_normalised = 100.0% [4/4] (threshold 90%)" in proc.stdout
    assert "test_features" not in proc.stdout
    assert [r[1:3] for r in db.runs()] == [("shop_coupon_codes", "succeeded")]


def test_run_all_json_lists_what_it_skipped(cli: RunCli, shop_site: Path, make_shop: MakeShop) -> None:
    db = make_shop()

    proc = cli(["run", "--all", "-d", db.url, "-q", "--json", "--dry-run"], env=shop_env(shop_site))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = parse_json_output(proc)
    assert [s["extractor"] for s in report["extractors"]] == ["shop_coupon_codes"]
    assert report["extractors"][0]["updated"] == COUPONS
    assert [(s["kind"], s["name"], s["plugin"]) for s in report["skipped"]] == [
        ("extractor", "test_features", "testmanagement"),
        ("extractor", "bug_attribution", "testmanagement"),
    ]
    assert report["skipped"][0]["reason"] == f"table 'tests' does not exist in {shown(db)}"
    assert coupon_codes(db) == [None] * ORDERS  # a dry run


def test_an_extractor_after_a_skipped_one_is_skipped_too(
    cli: RunCli, shop_site: Path, make_shop: MakeShop
) -> None:
    """bug_attribution's tables are all there, but test_features, which it depends on, cannot
    run: bug_attribution must not run on what test_features has not filled."""
    db = make_shop(extra=TEST_FEATURES_AND_BUGS)

    proc = cli(["run", "--all", "-d", db.url, "-q", "--json"], env=shop_env(shop_site))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert backfill_lines(proc.stderr) == [
        skip_line("extractor", "test_features", db, "tests"),
        "backfill: skipped extractor 'bug_attribution' (plugin testmanagement): "
        "it depends on extractor 'test_features', which was skipped",
    ]
    report = parse_json_output(proc)
    assert [s["name"] for s in report["skipped"]] == ["test_features", "bug_attribution"]
    assert report["skipped"][1]["reason"] == "it depends on extractor 'test_features', which was skipped"
    assert [s["extractor"] for s in report["extractors"]] == ["shop_coupon_codes"]
    assert db.rows("SELECT test_feature_id FROM bugs") == [(None,)]


def test_nothing_left_to_do_exits_3_and_says_so(cli: RunCli, make_shop: MakeShop) -> None:
    """With only the built-in plugin installed, everything is skipped: exit 3, as for a
    database that lacks what was asked for, so that a wrong --database is never a success."""
    db = make_shop()

    validate = cli(["validate", "-d", db.url])
    run = cli(["run", "--all", "-d", db.url, "-q", "--json"])

    assert validate.returncode == 3, validate.stdout + validate.stderr
    assert validate.stdout == ""
    assert backfill_lines(validate.stderr) == [
        skip_line("validator", "coverage", db, "tests"),
        f"backfill: error: nothing to validate: every validator was skipped, since {shown(db)} lacks "
        "tables they need (see the lines above); check --database, or name a validator to see what it needs",
    ]
    assert run.returncode == 3, run.stdout + run.stderr
    assert backfill_lines(run.stderr)[-1].startswith(
        "backfill: error: nothing to run: every extractor was skipped"
    )
    failure = parse_json_output(run)
    assert failure["exit_code"] == 3
    assert failure["error"].startswith("nothing to run")
    assert [s["name"] for s in failure["skipped"]] == ["test_features", "bug_attribution"]
    assert coupon_codes(db) == [None] * ORDERS
    assert "backfill_runs" not in db.tables()


def test_nothing_registered_to_run_or_validate_is_a_usage_error(cli: RunCli, make_shop: MakeShop) -> None:
    """With every plugin left out, ``run --all`` and a bare ``validate`` have nothing to choose
    from: exit 2, before the database is opened, naming the plugins and their status."""
    db = make_shop()

    validate = cli(["--disable-plugin", "testmanagement,throttles", "validate", "-d", db.url])
    run = cli(["--disable-plugin", "testmanagement,throttles", "run", "--all", "-d", db.url, "-q"])

    plugins = "(plugins: testmanagement (disabled), throttles (disabled); see `backfill list-plugins`)"
    assert validate.returncode == 2, validate.stdout + validate.stderr
    assert f"Error: nothing to validate: no plugin provides a validator {plugins}" in validate.stderr
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"Error: --all: no plugin provides an extractor {plugins}" in run.stderr


# -- named: still exit 3, with a message that names it ----------------------------------------------


def test_the_builtin_validator_named_still_exits_3(cli: RunCli, shop_site: Path, make_shop: MakeShop) -> None:
    db = make_shop(coupon_code="SPRING10")

    proc = cli(["validate", "coverage", "-d", db.url], env=shop_env(shop_site))

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert backfill_lines(proc.stderr) == [
        f"backfill: error: table 'tests' does not exist in {shown(db)}; validator 'coverage' (plugin "
        "testmanagement) reads it. Create it (run the application's migrations) before validating, or, "
        "if this database is another application's, leave 'coverage' out (a bare `backfill validate` "
        "skips it) or disable its plugin (BACKFILL_DISABLE_PLUGINS=testmanagement)"
    ]
    assert "backfilling" not in proc.stderr


def test_the_builtin_extractor_named_still_exits_3(cli: RunCli, shop_site: Path, make_shop: MakeShop) -> None:
    db = make_shop()

    proc = cli(["run", "test_features", "shop_coupon_codes", "-d", db.url, "-q"], env=shop_env(shop_site))

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert backfill_lines(proc.stderr) == [
        f"backfill: error: table 'tests' does not exist in {shown(db)}; extractor 'test_features' (plugin "
        "testmanagement) reads it. Create it (run the application's migrations) before backfilling, or, "
        "if this database is another application's, leave 'test_features' out (`backfill run --all` "
        "skips it) or disable its plugin (BACKFILL_DISABLE_PLUGINS=testmanagement)"
    ]
    assert coupon_codes(db) == [None] * ORDERS  # nothing was written, not even the other one's
    assert "backfill_runs" not in db.tables()


# -- switched off ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ({DISABLE: "testmanagement"}, "named in BACKFILL_DISABLE_PLUGINS"),
        ({DISABLE: "Backfill"}, "named in BACKFILL_DISABLE_PLUGINS"),  # the distribution's name
        (["--disable-plugin", "testmanagement"], "named by --disable-plugin"),
        (["--disable-plugin=orphan,TestManagement"], "named by --disable-plugin"),
    ],
    ids=["env", "env-distribution", "option", "option-list"],
)
def test_a_disabled_builtin_plugin_is_listed_and_unknown(
    cli: RunCli, shop_site: Path, make_shop: MakeShop, how: dict[str, str] | list[str], reason: str
) -> None:
    db = make_shop(coupon_code="SPRING10")
    env = shop_env(shop_site, **how) if isinstance(how, dict) else shop_env(shop_site)
    before = [] if isinstance(how, dict) else how

    listed = cli([*before, "list-plugins"], env=env)
    as_json = cli([*before, "list-plugins", "--json"], env=env)
    run = cli([*before, "run", "test_features", "-d", db.url, "-q"], env=env)
    validate = cli([*before, "validate", "coverage", "-d", db.url], env=env)
    bare = cli([*before, "validate", "-d", db.url], env=env)
    everything = cli([*before, "run", "--all", "-d", db.url, "-q"], env=env)

    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("testmanagement "))
    assert row.split()[3:] == ["disabled", *reason.split()]
    builtin = next(p for p in parse_json_output(as_json) if p["name"] == "testmanagement")
    assert (builtin["status"], builtin["error"], builtin["extractors"]) == ("disabled", reason, [])
    assert run.returncode == 2, run.stdout + run.stderr
    assert "unknown extractor 'test_features' (available: shop_coupon_codes;" in run.stderr
    assert "left out testmanagement (backfill)" in run.stderr
    assert validate.returncode == 2, validate.stdout + validate.stderr
    assert "unknown validator 'coverage'" in validate.stderr
    for proc in (bare, everything):
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stderr == ""  # nothing to skip: the plugin is not there
        assert "shop_coverage.coupons_normalised" in proc.stdout


def test_disabling_a_plugin_that_is_not_there_is_refused_by_the_option(cli: RunCli, shop_site: Path) -> None:
    proc = cli(["--disable-plugin", "testmanagement,testmanagment", "list-plugins"], env=shop_env(shop_site))

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        "Invalid value for --disable-plugin: no installed plugin is named 'testmanagment' "
        "(installed: testmanagement, throttles, orphan, shop)"
    ) in proc.stderr
    assert proc.stdout == ""


def test_disabling_an_unknown_plugin_by_environment_warns(cli: RunCli, shop_site: Path) -> None:
    proc = cli(["list-plugins"], env=shop_env(shop_site, **{DISABLE: "testmanagment"}))

    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [
        "backfill: BACKFILL_DISABLE_PLUGINS names no installed plugin: 'testmanagment' "
        "(installed: testmanagement, throttles, orphan, shop)"
    ]


def test_the_resume_command_repeats_all_and_the_disabled_plugins(
    cli: RunCli, shop_site: Path, make_shop: MakeShop
) -> None:
    """A run stopped by a signal names the command that resumes it: ``--all`` (not the names
    it ran, which would not skip) and the ``--disable-plugin`` options."""
    db = make_shop()
    env = shop_env(shop_site, BACKFILL_STOP_AT="shop_coupon_codes:started")
    args = [str(BACKFILL), "--disable-plugin", "testmanagement", "run", "--all", "-d", db.url, "-q"]
    proc = subprocess.Popen(
        args, env=make_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until_stopped(proc)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130, stderr
    database = db.url if db.kind == "sqlite" else shown(db)
    assert f"backfill --disable-plugin testmanagement run --all -d {database} (or add" in stderr


# -- an extractor depending on an unknown one -------------------------------------------------------


def test_an_unknown_dependency_is_shown_and_named_with_its_plugin(
    cli: RunCli, shop_site: Path, make_shop: MakeShop
) -> None:
    db = make_shop()
    env = plugin_env(shop_site)

    listed = cli(["list-plugins"], env=env)
    as_json = cli(["list-plugins", "--json"], env=env)
    run = cli(["run", "orphan_totals", "-d", db.url, "-q"], env=env)
    everything = cli(["run", "--all", "-d", db.url, "-q"], env=env)

    row = next(line for line in listed.stdout.splitlines() if line.startswith("orphan "))
    assert row.split()[1:4] == ["backfill-orphan-plugin", "0.1.0", "ok"]
    assert row.endswith(
        "extractor:orphan_totals, CANNOT RUN: extractor 'orphan_totals' depends on unknown extractor 'nosuch'"
    )
    plugins = {p["name"]: p for p in parse_json_output(as_json)}
    assert plugins["orphan"]["problems"] == [
        "extractor 'orphan_totals' depends on unknown extractor 'nosuch'"
    ]
    assert plugins["shop"]["problems"] == plugins["testmanagement"]["problems"] == []
    for proc in (run, everything):
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert (
            "Error: extractor 'orphan_totals' (plugin orphan) depends on unknown extractor 'nosuch' "
            "(available: " in proc.stderr
        )
        assert "Install or enable the plugin that provides 'nosuch'" in proc.stderr
        assert "BACKFILL_DISABLE_PLUGINS=orphan" in proc.stderr
    assert coupon_codes(db) == [None] * ORDERS


# -- --threshold on an informational metric -----------------------------------------------------------


def test_a_threshold_for_an_informational_metric_says_so(
    cli: RunCli, shop_site: Path, make_shop: MakeShop
) -> None:
    db = make_shop(coupon_code="SPRING10")

    validate = cli(
        ["validate", "shop_coverage", "-d", db.url, "--threshold", "shop_coverage.orders_with_coupon=0.5"],
        env=shop_env(shop_site),
    )
    run = cli(
        [
            "run",
            "shop_coupon_codes",
            "-d",
            db.url,
            "-q",
            "--threshold",
            "shop_coverage.orders_with_coupon=50%",
        ],
        env=shop_env(shop_site),
    )

    for proc in (validate, run):
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert (
            "--threshold shop_coverage.orders_with_coupon: that metric is informational (shown as info, "
            "never failing), so there is no threshold to set"
        ) in proc.stderr
        assert "names no metric being validated" not in proc.stderr
    assert "backfill_runs" not in db.tables()  # refused before the ledger was created


# -- PostgreSQL only: a missing database -----------------------------------------------------------


@postgres_only
@pytest.mark.parametrize("command", [["validate"], ["run", "test_features", "-q"], ["status"]])
def test_a_postgresql_database_that_does_not_exist_is_named_as_such(cli: RunCli, command: list[str]) -> None:
    assert SERVER
    url = SERVER.rsplit("/", 1)[0] + "/backfill_no_such_database"

    proc = cli([*command, "-d", url])

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert 'database "backfill_no_such_database" does not exist' in proc.stderr
    assert (
        "(the database 'backfill_no_such_database' named in the URL does not exist on that server; create it "
        "(`createdb backfill_no_such_database`) and the application's tables, or fix the URL)"
    ) in proc.stderr
    assert "run the migrations" not in proc.stderr
