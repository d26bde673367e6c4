"""``backfill run`` and ``backfill validate`` on a real SQLite file and on a scratch PostgreSQL
database: order, counts, idempotence, dry runs, malformed rows and the error log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.backends import Backend
from support.builtin_job import Expected, attributions, features_by_test, snapshot
from support.cli import RunCli, parse_json_output, stats_by_name
from support.db import fingerprint, query, scalar

BOTH_REVERSED = ["run", "bug_attribution", "test_features"]


def _line_index(text: str, prefix: str) -> int:
    lines = text.splitlines()
    found = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert found, f"no line starts with {prefix!r} in:\n{text}"
    return found[0]


# -- 2. run: dependency order, counts, idempotence --------------------------------------------------


def test_run_reversed_names_runs_dependency_first(cli: RunCli, db: Backend) -> None:
    proc = cli([*BOTH_REVERSED, "-d", db.url, "--quiet"])

    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert _line_index(out, "test_features ") < _line_index(out, "bug_attribution ")
    assert "validation:" in out
    assert "FAIL" not in out
    assert scalar(db, "SELECT count(*) FROM test_features") > 0


def test_run_json_is_one_document_whose_counts_match_the_database(cli: RunCli, db: Backend) -> None:
    expected = Expected(db)
    proc = cli([*BOTH_REVERSED, "-d", db.url, "--quiet", "--json"])

    assert proc.returncode == 0, proc.stderr
    report = parse_json_output(proc)
    assert [s["extractor"] for s in report["extractors"]] == ["test_features", "bug_attribution"]
    assert report["exit_code"] == 0
    assert report["dry_run"] is False
    assert report["interrupted"] is False
    stats = stats_by_name(report)

    tf, ba = stats["test_features"], stats["bug_attribution"]
    n_tests = scalar(db, "SELECT count(*) FROM tests")
    n_bugs = scalar(db, "SELECT count(*) FROM bugs")
    n_features = scalar(db, "SELECT count(*) FROM test_features")
    n_attributed = scalar(db, "SELECT count(*) FROM bugs WHERE test_feature_id IS NOT NULL")
    assert tf["processed"] == tf["total"] == n_tests
    assert ba["processed"] == ba["total"] == n_bugs
    assert tf["inserted"] == n_features == expected.feature_rows
    assert tf["updated"] == 0
    assert ba["inserted"] == 0
    assert ba["updated"] == n_attributed == len(expected.attribution)
    assert ba["updated"] + ba["unchanged"] + ba["errors"] == n_bugs  # one Update per bug


def test_run_json_metrics_match_the_database(cli: RunCli, db: Backend) -> None:
    proc = cli([*BOTH_REVERSED, "-d", db.url, "--quiet", "--json"])

    assert proc.returncode == 0, proc.stderr
    report = parse_json_output(proc)
    n_tests = scalar(db, "SELECT count(*) FROM tests")
    n_attributed = scalar(db, "SELECT count(*) FROM bugs WHERE test_feature_id IS NOT NULL")
    metrics = {m["metric"]: m for m in report["validation"]}
    assert metrics["tests_with_features"]["numerator"] == scalar(
        db, "SELECT count(DISTINCT test_id) FROM test_features"
    )
    assert metrics["tests_with_features"]["denominator"] == n_tests
    assert metrics["bugs_attributed_all"]["numerator"] == n_attributed
    assert all(m["passed"] for m in report["validation"])


def test_second_run_changes_nothing(cli: RunCli, db: Backend) -> None:
    first = cli([*BOTH_REVERSED, "-d", db.url, "--quiet", "--json"])
    assert first.returncode == 0, first.stderr
    before = snapshot(db)

    second = cli([*BOTH_REVERSED, "-d", db.url, "--quiet", "--json"])

    assert second.returncode == 0, second.stderr
    one, two = stats_by_name(parse_json_output(first)), stats_by_name(parse_json_output(second))
    for name in ("test_features", "bug_attribution"):
        assert two[name]["inserted"] == 0, name
        assert two[name]["updated"] == 0, name
        assert two[name]["errors_by_tier"] == one[name]["errors_by_tier"], name
        assert two[name]["unchanged"] == one[name]["inserted"] + one[name]["updated"] + one[name]["unchanged"]
    assert snapshot(db) == before


def test_running_one_extractor_is_not_failed_by_metrics_of_another(cli: RunCli, db: Backend) -> None:
    """``backfill run test_features`` on a fresh database: test_features itself succeeds.

    The coverage validator covers both extractors; its bug metrics can only pass once
    bug_attribution has run, which was not asked for. The run must not exit 1 for them.
    """
    proc = cli(["run", "test_features", "-d", db.url, "--quiet", "--json"])

    report = parse_json_output(proc)
    assert [s["extractor"] for s in report["extractors"]] == ["test_features"]
    assert scalar(db, "SELECT count(*) FROM test_features") == report["extractors"][0]["inserted"] > 0
    failed = [m["metric"] for m in report["validation"] or [] if not m["passed"]]
    assert (proc.returncode, failed) == (0, []), report["validation"]


# -- 3. dry run -------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", ["500", "7"])
def test_dry_run_writes_nothing_and_predicts_the_real_run(cli: RunCli, db: Backend, batch_size: str) -> None:
    digest = fingerprint(db)
    args = [*BOTH_REVERSED, "-d", db.url, "--quiet", "--json", "--batch-size", batch_size]

    dry = cli([*args, "--dry-run"])

    assert dry.returncode == 0, dry.stderr
    assert fingerprint(db) == digest
    dry_report = parse_json_output(dry)
    assert dry_report["dry_run"] is True
    assert dry_report["validation_skipped"] == "dry run"

    real = cli([*args])

    assert real.returncode == 0, real.stderr
    predicted, actual = stats_by_name(dry_report), stats_by_name(parse_json_output(real))
    for name in ("test_features", "bug_attribution"):
        for field in ("processed", "inserted", "updated", "unchanged", "errors_by_tier"):
            assert predicted[name][field] == actual[name][field], (name, field)


def test_dry_run_of_both_extractors_sees_the_features_it_would_insert(
    cli: RunCli, db: Backend, tmp_path: Path
) -> None:
    """bug_attribution must check its references against the features test_features would
    insert, not report every bug of a fresh database as an integrity error."""
    expected = Expected(db)
    log = tmp_path / "dry-errors.jsonl"

    proc = cli(
        [
            *BOTH_REVERSED,
            "-d",
            db.url,
            "--quiet",
            "--json",
            "--dry-run",
            "--batch-size",
            "50",
            "--log-file",
            log,
        ]
    )

    assert proc.returncode == 0, proc.stderr
    ba = stats_by_name(parse_json_output(proc))["bug_attribution"]
    assert ba["updated"] == len(expected.attribution)
    assert ba["errors_by_tier"].get("record", {}) == expected.error_kinds("bug_attribution")
    integrity_keys = {
        r["key"]
        for r in map(json.loads, log.read_text().splitlines())
        if r["extractor"] == "bug_attribution" and r["kind"] == "integrity"
    }
    assert integrity_keys == {k for k, kind in expected.bug_errors.items() if kind == "integrity"}
    assert not integrity_keys & set(expected.attribution)


def test_dry_run_verbose_shows_samples_that_the_real_run_then_writes(cli: RunCli, db: Backend) -> None:
    digest = fingerprint(db)
    args = [*BOTH_REVERSED, "-d", db.url, "--quiet", "--dry-run", "--verbose"]

    text = cli(args)
    as_json = cli([*args, "--json"])

    assert text.returncode == 0, text.stderr
    assert as_json.returncode == 0, as_json.stderr
    assert fingerprint(db) == digest
    assert "dry run: nothing written" in text.stdout
    assert "would insert" in text.stdout
    assert "test_features would {" in text.stdout
    assert "bug_attribution would {" in text.stdout
    stats = stats_by_name(parse_json_output(as_json))
    inserts = stats["test_features"]["samples"]
    updates = stats["bug_attribution"]["samples"]
    assert 0 < len(inserts) <= 5
    assert 0 < len(updates) <= 5

    real = cli([*BOTH_REVERSED, "-d", db.url, "--quiet"])

    assert real.returncode == 0, real.stderr
    for sample in inserts:
        assert sample["action"] == "insert"
        row = sample["row"]
        columns = sorted(row)
        stored = dict(zip(columns, _one_row(db, "test_features", columns, row["id"]), strict=True))
        assert stored == row
    for sample in updates:
        assert sample["action"] == "update"
        ((old, new),) = sample["changes"].values()
        assert old is None
        assert _one_row(db, "bugs", ["test_feature_id"], sample["key"]["id"]) == (new,)


def _one_row(db: Backend, table: str, columns: list[str], key: int) -> tuple[object, ...]:
    rows = query(db, f"SELECT {', '.join(columns)} FROM {table} WHERE id = ?", (key,))
    assert len(rows) == 1, (table, key)
    return rows[0]


# -- 4. malformed rows and the error log -----------------------------------------------------------


def test_malformed_rows_are_counted_by_kind_and_the_rest_land(
    cli: RunCli, db: Backend, tmp_path: Path
) -> None:
    expected = Expected(db)
    assert expected.test_errors and expected.bug_errors, "the synthetic data should be messy"
    log = tmp_path / "errors.jsonl"

    proc = cli([*BOTH_REVERSED, "-d", db.url, "--quiet", "--json", "--log-file", log])

    assert proc.returncode == 0, proc.stderr
    report = parse_json_output(proc)
    stats = stats_by_name(report)
    for name in ("test_features", "bug_attribution"):
        assert stats[name]["errors_by_tier"] == {"record": expected.error_kinds(name)}, name
        assert stats[name]["errors"] == sum(expected.error_kinds(name).values())
    assert report["errors_total"] == len(expected.test_errors) + len(expected.bug_errors)
    assert report["errors_log"] == str(log)

    # everything else landed, exactly
    assert features_by_test(db) == expected.features
    assert attributions(db) == expected.attribution

    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert len(records) == report["errors_total"]
    for r in records:
        assert set(r) == {"extractor", "key", "tier", "kind", "message"}
        assert r["tier"] == "record"
        assert r["message"]
    logged = {(r["extractor"], r["key"]): r["kind"] for r in records}
    assert logged == {
        **{("test_features", k): kind for k, kind in expected.test_errors.items()},
        **{("bug_attribution", k): kind for k, kind in expected.bug_errors.items()},
    }


def test_log_file_is_appended_to(cli: RunCli, db: Backend, tmp_path: Path) -> None:
    log = tmp_path / "errors.jsonl"
    args = ["run", "test_features", "-d", db.url, "--quiet", "--json", "--no-validate", "--log-file", log]

    first = cli(args)
    second = cli(args)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    total = parse_json_output(first)["errors_total"]
    assert total > 0
    assert parse_json_output(second)["errors_total"] == total
    assert len(log.read_text(encoding="utf-8").splitlines()) == 2 * total


def test_text_summary_lists_error_kinds(cli: RunCli, db: Backend) -> None:
    expected = Expected(db)

    proc = cli([*BOTH_REVERSED, "-d", db.url, "--quiet"])

    assert proc.returncode == 0, proc.stderr
    for name in ("test_features", "bug_attribution"):
        kinds = expected.error_kinds(name)
        line = f"  {name} errors: " + ", ".join(f"record/{k}: {n}" for k, n in sorted(kinds.items()))
        assert line in proc.stdout.splitlines()
    total = len(expected.test_errors) + len(expected.bug_errors)
    assert f"of {total} errors:" in proc.stdout


# -- 8. validate ------------------------------------------------------------------------------------


def test_validate_after_a_run_passes_and_prints_the_metrics(cli: RunCli, db: Backend) -> None:
    assert cli([*BOTH_REVERSED, "-d", db.url, "--quiet"]).returncode == 0
    digest = fingerprint(db)

    proc = cli(["validate", "-d", db.url])

    assert proc.returncode == 0, proc.stderr
    for metric in ("tests_with_features", "bugs_attributed", "bugs_attributed_all", "features_with_customer"):
        assert f"coverage.{metric} = " in proc.stdout
    assert "FAIL" not in proc.stdout
    assert fingerprint(db) == digest  # validate only reads

    as_json = parse_json_output(cli(["validate", "-d", db.url, "--json"]))
    assert as_json["exit_code"] == 0
    assert {m["metric"] for m in as_json["validation"]} >= {"tests_with_features", "bugs_attributed"}


def test_validate_before_any_run_fails(cli: RunCli, db: Backend) -> None:
    digest = fingerprint(db)

    proc = cli(["validate", "-d", db.url])

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  coverage.tests_with_features = 0.0%" in proc.stdout
    assert fingerprint(db) == digest
