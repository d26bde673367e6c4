"""run_backfill end to end on small real SQLite files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from backfill_core import Registry, RunOptions, RunReport, make_registry, resolve_url, run_backfill
from backfill_core.engine import loop as engine
from backfill_core.engine.stats import ErrorLog, ExtractorStats
from backfill_core.store.connection import Connection
from backfill_core.store.ledger import Ledger, RunState
from backfill_core.store.records import ErrorRecord
from backfill_plugins.testmanagement import plugin, synthetic

BOTH = ("test_features", "bug_attribution")
TABLES = ("tests", "test_features", "bugs")


def registry() -> Registry:
    return make_registry(plugin)


def run(
    path: Path,
    names: Sequence[str] = BOTH,
    *,
    batch_size: int = 500,
    dry_run: bool = False,
    sample_size: int = 0,
    validate: bool = False,
) -> RunReport:
    options = RunOptions(batch_size=batch_size, dry_run=dry_run, max_error_rate=1.0, sample_size=sample_size)
    report = RunReport(database=str(path), dry_run=dry_run, errors=ErrorLog(keep=100_000))
    asyncio.run(run_backfill(registry(), names, resolve_url(str(path)), options, report, validate=validate))
    return report


def stats(report: RunReport) -> dict[str, ExtractorStats]:
    return {s.name: s for s in report.extractors}


def counts(report: RunReport) -> dict[str, tuple[int, int, int, int, int]]:
    return {
        s.name: (s.processed, s.inserted, s.updated, s.unchanged, s.error_count) for s in report.extractors
    }


def errors(report: RunReport) -> list[ErrorRecord]:
    assert len(report.errors.first) == report.errors.total  # every error is kept
    return list(report.errors.first)


def tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES}


def count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(sql).fetchone()[0])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "pristine.db"
    synthetic.build(path, tests=60, messy=0.08, seed=3)
    return path


@pytest.fixture
def db(pristine: Path, tmp_path: Path) -> Path:
    path = tmp_path / "work.db"
    shutil.copy(pristine, path)
    return path


def test_counts_add_up(db: Path) -> None:
    report = run(db)
    s = stats(report)
    tf, ba = s["test_features"], s["bug_attribution"]
    assert tf.total == tf.processed == count(db, "SELECT count(*) FROM tests") == 60
    assert ba.total == ba.processed == count(db, "SELECT count(*) FROM bugs")
    assert tf.inserted == count(db, "SELECT count(*) FROM test_features") > 0
    assert (tf.updated, tf.unchanged) == (0, 0)
    assert ba.inserted == 0
    attributed = count(db, "SELECT count(*) FROM bugs WHERE test_feature_id IS NOT NULL")
    assert ba.updated == attributed > 0
    assert report.errors.total == tf.error_count + ba.error_count > 0
    assert report.exit_code == 0


def test_written_rows_belong_to_their_source_rows(db: Path) -> None:
    report = run(db)
    failed = {(e.extractor, e.key) for e in errors(report)}
    with sqlite3.connect(db) as conn:
        mismatched = conn.execute(
            "SELECT count(*) FROM test_features f JOIN tests t ON t.id = f.test_id "
            "WHERE f.customer_id != t.customer_id"
        ).fetchone()[0]
        assert mismatched == 0
        tests_with_features = {r[0] for r in conn.execute("SELECT DISTINCT test_id FROM test_features")}
        cross = conn.execute(
            "SELECT count(*) FROM bugs b JOIN test_features f ON f.id = b.test_feature_id "
            "WHERE f.customer_id != b.customer_id"
        ).fetchone()[0]
        assert cross == 0
        attributed = {r[0] for r in conn.execute("SELECT id FROM bugs WHERE test_feature_id IS NOT NULL")}
    assert not tests_with_features & {k for x, k in failed if x == "test_features"}
    assert not attributed & {k for x, k in failed if x == "bug_attribution"}
    kinds = {(e.tier, e.kind) for e in errors(report)}
    assert ("record", "integrity") in kinds


def test_second_run_changes_nothing(db: Path) -> None:
    first = counts(run(db))
    before = tables(db)
    second = run(db)
    s = stats(second)
    assert (s["test_features"].inserted, s["test_features"].updated) == (0, 0)
    assert (s["bug_attribution"].inserted, s["bug_attribution"].updated) == (0, 0)
    assert s["test_features"].unchanged == first["test_features"][1]
    for name, (processed, _, _, _, errs) in first.items():
        assert s[name].processed == processed
        assert s[name].error_count == errs
    assert s["bug_attribution"].unchanged == first["bug_attribution"][0] - first["bug_attribution"][4]
    assert tables(db) == before


def _commits(path: Path) -> int:
    """SQLite's file change counter (header offset 24): one more per committed write transaction."""
    with path.open("rb") as f:
        f.seek(24)
        return int.from_bytes(f.read(4), "big")


def test_a_rerun_over_unchanged_data_records_its_errors_in_a_few_commits(db: Path) -> None:
    run(db, batch_size=5)
    before = _commits(db)
    second = run(db, batch_size=5)
    keys = {s.name: _keys(db, s.name) for s in second.extractors}
    failing_batches = {(e.extractor, keys[e.extractor].index(e.key) // 5) for e in errors(second)}
    # Batches that changed nothing are checkpointed together, the errors they found with them:
    # not a commit per batch with an error, which is most batches of this messy database.
    assert len(failing_batches) > 10
    assert _commits(db) - before <= 8, (before, _commits(db))
    with sqlite3.connect(db) as conn:
        recorded = dict(
            conn.execute(
                "SELECT r.extractor, count(e.key) FROM backfill_runs r LEFT JOIN backfill_errors e "
                "ON e.run_id = r.id WHERE r.id IN (SELECT max(id) FROM backfill_runs GROUP BY extractor) "
                "GROUP BY r.extractor"
            ).fetchall()
        )
    assert recorded == {s.name: s.error_count for s in second.extractors}
    with sqlite3.connect(db) as conn:
        totals = conn.execute(
            "SELECT extractor, processed, total FROM backfill_runs "
            "WHERE id IN (SELECT max(id) FROM backfill_runs GROUP BY extractor) ORDER BY extractor"
        ).fetchall()
    assert totals == sorted((s.name, s.processed, s.processed) for s in second.extractors)


def _cancelled_while_closing(db: Path, names: Sequence[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``names``, cancelled (as SIGINT cancels a run) just as the first run's end is recorded."""
    real_finish = Ledger.finish
    running: list[asyncio.Future[RunReport]] = []

    async def finish(
        self: Ledger, state: RunState, status: str, message: str | None = None, *, lock_retries: int = 0
    ) -> bool:
        running[0].cancel()
        await asyncio.sleep(0)  # where the cancellation lands if this runs in the cancelled task
        return await real_finish(self, state, status, message, lock_retries=lock_retries)

    options = RunOptions(max_error_rate=1.0)
    report = RunReport(database=str(db), dry_run=False, errors=ErrorLog(keep=100_000))

    async def interrupted() -> None:
        running.append(
            asyncio.ensure_future(run_backfill(registry(), names, resolve_url(str(db)), options, report))
        )
        with pytest.raises(asyncio.CancelledError):
            await running[0]

    with monkeypatch.context() as patched:
        patched.setattr(Ledger, "finish", finish)
        asyncio.run(interrupted())


def _ledger_runs(path: Path, columns: str) -> list[tuple[Any, ...]]:
    """``columns`` of every run in the ledger, oldest first."""
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT {columns} FROM backfill_runs ORDER BY id").fetchall()


def test_a_signal_while_a_run_is_closed_still_records_how_it_ended(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancellation that arrives while the ledger records a run's end waits for that write, as
    it waits for a batch in flight: the run is never left 'running'."""
    _cancelled_while_closing(db, ["test_features"], monkeypatch)
    tests = count(db, "SELECT COUNT(*) FROM tests")
    assert _ledger_runs(db, "extractor, status, processed, total") == [
        ("test_features", "succeeded", tests, tests)
    ]


def test_a_command_stopped_between_two_extractors_resumes_with_the_second(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same command again skips the extractor that had finished and runs the one that had
    not started, as after any other interruption (not the first one over again)."""
    _cancelled_while_closing(db, BOTH, monkeypatch)
    assert _ledger_runs(db, "extractor, status") == [("test_features", "succeeded")]
    again = stats(run(db))
    assert again["test_features"].processed == 0
    assert again["test_features"].note == "already completed in run 1 of this command"
    assert again["bug_attribution"].processed == count(db, "SELECT COUNT(*) FROM bugs")
    assert _ledger_runs(db, "extractor, status") == [
        ("test_features", "succeeded"),
        ("bug_attribution", "succeeded"),
    ]


def test_a_last_checkpoint_that_cannot_be_written_fails_the_run_and_resuming_records_it(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run folds its batches into one last checkpoint; if the ledger refuses it, the run is
    'failed' (saying so), not 'succeeded' with its batches and errors unrecorded."""
    first = run(db, ["test_features"])
    real_checkpoint = Ledger.checkpoint

    async def refused(_ledger: Ledger, conn: Connection, *args: Any, **kwargs: Any) -> None:
        # The database fails the checkpoint's statement, as it would on a disk I/O error.
        await conn.execute("INSERT INTO backfill_errors_gone VALUES (?)", [1])

    monkeypatch.setattr(Ledger, "checkpoint", refused)
    monkeypatch.setattr(engine, "CHECKPOINT_EVERY", 3600.0)  # however slow the machine: one flush
    second = stats(run(db, ["test_features"]))["test_features"]
    assert second.note is not None and "could not be written to the ledger" in second.note
    n, errs = second.processed, second.error_count
    assert errs > 0 and (n, errs) == (
        stats(first)["test_features"].processed,
        stats(first)["test_features"].error_count,
    )
    assert _ledger_runs(db, "status, processed, record_errors") == [("succeeded", n, errs), ("failed", 0, 0)]

    monkeypatch.setattr(Ledger, "checkpoint", real_checkpoint)
    third = stats(run(db, ["test_features"]))["test_features"]
    # The same command resumes the failed run from its last checkpoint (none: the first key).
    assert third.processed == n and third.error_count == errs
    assert _ledger_runs(db, "status, processed, record_errors") == [
        ("succeeded", n, errs),
        ("succeeded", n, errs),
    ]


def _keys(path: Path, extractor: str) -> list[Any]:
    """The source keys of ``extractor`` in the order batches read them."""
    table = "tests" if extractor == "test_features" else "bugs"
    with sqlite3.connect(path) as conn:
        return [k for (k,) in conn.execute(f"SELECT id FROM {table} WHERE id IS NOT NULL ORDER BY id")]


@pytest.mark.parametrize("batch_size", [1, 7])
def test_batch_size_does_not_change_the_result(pristine: Path, tmp_path: Path, batch_size: int) -> None:
    big, small = tmp_path / "big.db", tmp_path / "small.db"
    shutil.copy(pristine, big)
    shutil.copy(pristine, small)
    big_report = run(big, batch_size=500)
    small_report = run(small, batch_size=batch_size)
    assert tables(small) == tables(big)
    assert counts(small_report) == counts(big_report)
    assert sorted((e.extractor, e.key, e.kind) for e in errors(small_report)) == sorted(
        (e.extractor, e.key, e.kind) for e in errors(big_report)
    )


def test_dry_run_writes_nothing_and_predicts_the_real_run(db: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin.db"
    shutil.copy(db, twin)
    before = digest(db)
    dry = run(db, dry_run=True, batch_size=13, validate=True)
    assert digest(db) == before
    assert dry.validation is None and dry.validation_skipped == "dry run"
    real = run(twin, batch_size=13)
    assert counts(dry) == counts(real)
    assert stats(real)["test_features"].inserted > 0 and stats(real)["bug_attribution"].updated > 0
    assert all(s.dry_run for s in dry.extractors)


def test_dry_run_after_a_partial_run_predicts_the_rest(db: Path, tmp_path: Path) -> None:
    run(db, ["test_features"])
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE test_features SET title = 'edited' WHERE id % 3 = 0")
        conn.execute("DELETE FROM test_features WHERE id % 5 = 0")
    twin = tmp_path / "twin.db"
    shutil.copy(db, twin)
    before = digest(db)
    dry = run(db, dry_run=True, batch_size=9)
    assert digest(db) == before
    real = run(twin, batch_size=9)
    assert counts(dry) == counts(real)
    assert stats(real)["test_features"].updated > 0 and stats(real)["test_features"].inserted > 0


def test_samples_are_reported_up_to_sample_size(db: Path) -> None:
    report = run(db, ["test_features"], batch_size=5, sample_size=3)
    samples = stats(report)["test_features"].samples
    assert len(samples) == 3
    assert all(s["table"] == "test_features" and s["action"] == "insert" for s in samples)


# -- write failures are isolated ------------------------------------------------------------

CHECKED_SCHEMA = """
CREATE TABLE tests (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, product_id INTEGER,
                    status TEXT, data TEXT);
CREATE TABLE test_features (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, test_id INTEGER NOT NULL,
    feature_id INTEGER, title TEXT NOT NULL DEFAULT '' CHECK (title <> 'FORBIDDEN'),
    description TEXT, howtofind TEXT, user_stories TEXT NOT NULL DEFAULT '[]',
    enable_default BOOLEAN, enable_content BOOLEAN, enable_visual BOOLEAN
);
CREATE TABLE bugs (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, test_id INTEGER,
                   raw_data TEXT, test_feature_id INTEGER);
CREATE TABLE features (id INTEGER PRIMARY KEY);
INSERT INTO features VALUES (1);
"""


def checked_database(path: Path, tests: int, bad: dict[int, list[dict[str, Any]]]) -> Path:
    """``tests`` tests with two features each (ids 10*t, 10*t+1, of feature 1); ``bad``
    overrides some."""
    with sqlite3.connect(path) as conn:
        conn.executescript(CHECKED_SCHEMA)
        for t in range(1, tests + 1):
            features = bad.get(t) or [{"id": 10 * t, "title": f"f{t}"}, {"id": 10 * t + 1}]
            features = [{"feature_id": 1, **f} for f in features]
            conn.execute(
                "INSERT INTO tests (id, customer_id, data) VALUES (?, ?, ?)",
                (t, 1 + t % 2, json.dumps({"features": features})),
            )
    return path


@pytest.mark.parametrize("batch_size", [500, 4])
def test_constraint_violation_is_isolated_to_its_source_row(tmp_path: Path, batch_size: int) -> None:
    bad = {
        3: [{"id": 30, "title": "fine"}, {"id": 31, "title": "FORBIDDEN"}],
        17: [{"id": 170, "title": "FORBIDDEN"}, {"id": 171, "title": "fine"}],
    }
    path = checked_database(tmp_path / "checked.db", 20, bad)
    report = run(path, ["test_features"], batch_size=batch_size)
    s = stats(report)["test_features"]
    with sqlite3.connect(path) as conn:
        landed = [r[0] for r in conn.execute("SELECT id FROM test_features ORDER BY id")]
        owners = {r[0] for r in conn.execute("SELECT test_id FROM test_features")}
    expected = sorted(f for t in range(1, 21) if t not in bad for f in (10 * t, 10 * t + 1))
    assert landed == expected  # nothing of tests 3 and 17, not even their good features
    assert owners == set(range(1, 21)) - {3, 17}
    assert s.processed == 20
    assert s.inserted == len(expected)
    assert sorted((e.key, e.tier, e.kind) for e in errors(report)) == [
        (3, "batch", "write"),
        (17, "batch", "write"),
    ]
    assert all("CHECK" in e.message for e in errors(report))
    assert s.errors == {("batch", "write"): 2}


def test_isolated_failure_is_recorded_again_on_the_next_run(tmp_path: Path) -> None:
    bad = {2: [{"id": 20, "title": "FORBIDDEN"}]}
    path = checked_database(tmp_path / "checked.db", 5, bad)
    run(path, ["test_features"])
    again = run(path, ["test_features"])
    s = stats(again)["test_features"]
    assert (s.inserted, s.updated, s.unchanged) == (0, 0, 8)
    assert [(e.key, e.tier) for e in errors(again)] == [(2, "batch")]


def test_feature_id_beyond_64_bits_fails_only_its_source_row(tmp_path: Path) -> None:
    bad = {4: [{"id": 2**70, "title": "too big for SQLite"}]}
    path = checked_database(tmp_path / "checked.db", 8, bad)
    report = run(path, ["test_features"])
    assert [e.key for e in errors(report)] == [4]
    assert count(path, "SELECT count(*) FROM test_features") == 14


def test_bug_naming_a_feature_id_beyond_64_bits_fails_only_that_bug(tmp_path: Path) -> None:
    path = checked_database(tmp_path / "checked.db", 3, {})
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO bugs (id, customer_id, raw_data) VALUES (?, ?, ?)",
            [
                (1, 2, json.dumps({"test_feature": {"id": 10}})),
                (2, 2, json.dumps({"test_feature": {"id": 2**70}})),
                (3, 1, json.dumps({"test_feature": {"id": 20}})),
            ],
        )
    report = run(path)
    assert [(e.extractor, e.key) for e in errors(report)] == [("bug_attribution", 2)]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id, test_feature_id FROM bugs ORDER BY id").fetchall() == [
            (1, 10),
            (2, None),
            (3, 20),
        ]


class JournalWatch:
    """A progress bar that records, after each batch, what lies beside the database file."""

    def __init__(self, path: Path) -> None:
        self.journal = Path(f"{path}-journal")
        self.seen: list[bytes | None] = []

    def __call__(self, _name: str, _total: int) -> JournalWatch:
        return self

    def update(self, _n: int) -> None:
        self.seen.append(self.journal.read_bytes()[:8] if self.journal.exists() else None)

    def close(self) -> None:
        pass


def test_journal_is_kept_between_batches_and_removed_at_the_end(db: Path) -> None:
    watch = JournalWatch(db)
    report = RunReport(database=str(db), errors=ErrorLog())
    options = RunOptions(batch_size=20, max_error_rate=1.0, worker=False)
    asyncio.run(
        run_backfill(registry(), BOTH, resolve_url(str(db)), options, report, validate=False, progress=watch)
    )
    assert report.extractors[0].inserted > 0
    # persisted between batches, with its header zeroed: not a hot journal, nothing to roll back
    assert len(watch.seen) > 2 and set(watch.seen) == {bytes(8)}, watch.seen
    assert not watch.journal.exists(), "the run left its journal behind"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_a_wal_database_stays_in_wal_mode(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    assert sum(s.inserted + s.updated for s in run(db).extractors) > 0
    assert sum(s.inserted + s.updated for s in run(db).extractors) == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert not Path(f"{db}-journal").exists()
