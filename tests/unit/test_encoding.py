"""Text that is not UTF-8 in a SQLite file (store/encoding.py, and how the converter and the run
take it): decoded per value, the bad row an ``invalid-encoding`` record error, a bad key the end of
the run, naming the bytes.

PostgreSQL refuses such text on input (in a UTF-8 database), so there is no PostgreSQL side to the
decoding; the end-to-end test (tests/e2e/test_e2e_hostile_bytes.py) shows the run on PostgreSQL
without the damaged rows behaves as the one on SQLite with them.
"""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import Select, column, func, select, table

from backfill_core import (
    Extractor,
    Metric,
    Registry,
    Row,
    RunOptions,
    RunReport,
    Upsert,
    hookimpl,
    make_registry,
    resolve_url,
    run_backfill,
    validate_only,
)
from backfill_core.engine.batch import INVALID_ENCODING, Converter, UndecodableKey
from backfill_core.engine.stats import ErrorLog
from backfill_core.engine.writer import UndecodableValue
from backfill_core.errors import DatabaseUnavailable, EnvironmentProblem, RecordError
from backfill_core.store.database import Database
from backfill_core.store.encoding import Salvaged, Undecodable, fetch_rows, is_decode_failure
from backfill_core.validator import Validator

FF, FE, C3 = b"\xff", b"\xfe", b"\xc3"


def bad(text: str, raw: bytes) -> str:
    """SQL for TEXT that is ``text``'s bytes followed by ``raw`` (not UTF-8)."""
    return f"CAST(X'{(text.encode() + raw).hex()}' AS TEXT)"


# -- decoding one value ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "offset", "byte", "reason"),
    [
        (b"abc\xffdef", 3, 0xFF, "invalid start byte"),
        (b"caf\xc3", 3, 0xC3, "unexpected end of data"),
        (b"\xed\xa0\x80", 0, 0xED, "invalid continuation byte"),  # an encoded surrogate
        ("é".encode() + b"\x80", 2, 0x80, "invalid start byte"),
    ],
)
def test_undecodable_names_the_byte_and_its_offset(raw: bytes, offset: int, byte: int, reason: str) -> None:
    value = Undecodable(raw)
    assert (value.offset, value.reason) == (offset, reason)
    text = value.describe("tests.data")
    assert text.startswith(f"tests.data is not valid UTF-8: byte 0x{byte:02x} at byte offset {offset} of ")
    assert reason in text
    assert repr(value) == f"CAST(X'{raw.hex().upper()}' AS TEXT)"


def test_undecodable_shows_only_the_bytes_around_the_bad_one() -> None:
    raw = b"a" * 1000 + b"\xfe" + b"b" * 1000
    text = Undecodable(raw).describe("bugs.raw_data")
    assert "byte offset 1000 of 2001" in text
    assert "\\xfe" in text and len(text) < 200


def test_undecodable_pickles_and_compares_by_its_bytes() -> None:
    value = Undecodable(b"x\xff")
    back = pickle.loads(pickle.dumps(value))
    assert back == value and hash(back) == hash(value) and back.offset == 1
    assert value != Undecodable(b"y\xff") and value != "x"


# -- reading rows ---------------------------------------------------------------------------------


@pytest.fixture
def con(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b BLOB, c INTEGER)")
        c.execute("INSERT INTO t VALUES (1, 'ok', X'FF', 3)")
        c.execute(f"INSERT INTO t VALUES (2, {bad('A', FF)}, X'00', {bad('', C3)})")
        c.execute("INSERT INTO t VALUES (3, 'fine', NULL, 4)")
    c.close()
    out = sqlite3.connect(path)
    yield out
    out.close()


def test_a_page_that_decodes_is_read_once_as_the_driver_returns_it(con: sqlite3.Connection) -> None:
    rows = fetch_rows(con, "SELECT * FROM t WHERE id <> 2 ORDER BY id", [])
    assert type(rows) is list
    assert rows == [(1, "ok", b"\xff", 3), (3, "fine", None, 4)]


def test_a_page_that_does_not_decode_keeps_each_bad_value(con: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.OperationalError) as failed:
        con.execute("SELECT * FROM t ORDER BY id").fetchall()
    assert is_decode_failure(failed.value)
    rows = fetch_rows(con, "SELECT * FROM t ORDER BY id", [])
    assert type(rows) is Salvaged
    assert rows == [
        (1, "ok", b"\xff", 3),  # a BLOB stays bytes
        (2, Undecodable(b"A\xff"), b"\x00", Undecodable(b"\xc3")),
        (3, "fine", None, 4),
    ]
    assert con.text_factory is str  # the connection reads as before
    assert not is_decode_failure(sqlite3.OperationalError("database is locked"))


# -- extracting a salvaged page -------------------------------------------------------------------


class Texts(Extractor):
    name = "texts"
    source = "t"
    key: ClassVar[str] = "k"
    columns = ("k", "a")
    writes: ClassVar[dict[str, tuple[str, ...]]] = {"out": ("k", "a")}

    def extract(self, row: Row) -> list[Upsert]:
        if row["a"] == "raise":
            raise RecordError("told to", kind="told")
        return [Upsert(table="out", key={"k": row["k"]}, values={"a": row["a"].upper()})]


def test_rows_that_do_not_decode_are_invalid_encoding_errors_in_key_order() -> None:
    x = Converter(Texts(), "texts-plugin")
    page = Salvaged([("1", "a"), ("2", Undecodable(b"b\xff")), ("3", "raise"), ("4", Undecodable(b"\x80"))])
    batch = x(page)
    assert batch.keys == ["1", "2", "3", "4"]
    assert [i.key for i in batch.items] == ["1"]
    assert [(e.key, e.tier, e.kind) for e in batch.errors] == [
        ("2", "record", INVALID_ENCODING),
        ("3", "record", "told"),
        ("4", "record", INVALID_ENCODING),
    ]
    message = batch.errors[0].message
    assert "t.a is not valid UTF-8: byte 0xff at byte offset 1 of 2" in message
    assert "backfill run texts --retry-errors" in message


def test_a_key_that_does_not_decode_ends_the_run_naming_table_column_and_bytes() -> None:
    x = Converter(Texts(), "texts-plugin")
    with pytest.raises(UndecodableKey) as ended:
        x(Salvaged([("1", "a"), (Undecodable(b"k\xff"), "b")]))
    message = str(ended.value)
    assert "table 't'" in message and "key column 'k'" in message
    assert "CAST(X'6BFF' AS TEXT)" in message and "texts-plugin" in message
    assert ended.value.exit_code == 3


# -- whole runs on a file with a TEXT key ---------------------------------------------------------


class Plugin:
    @hookimpl
    def register_extractors(self, register: Callable[[Extractor], None]) -> None:
        register(Texts())


def registry() -> Registry:
    return make_registry(Plugin())


def text_keyed(path: Path, damaged: str) -> Path:
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, a TEXT)")
        c.execute("CREATE TABLE out (k TEXT PRIMARY KEY, a TEXT)")
        c.executemany("INSERT INTO t VALUES (?, ?)", [(f"k{i:03}", f"v{i}") for i in range(40)])
        c.execute(damaged)
    c.close()
    return path


def run(path: Path, *, worker: bool, dry_run: bool = False) -> RunReport:
    options = RunOptions(batch_size=7, worker=worker, dry_run=dry_run)
    report = RunReport(database=str(path), dry_run=dry_run, errors=ErrorLog(keep=100))
    asyncio.run(run_backfill(registry(), ["texts"], resolve_url(str(path)), options, report, validate=False))
    return report


@pytest.mark.parametrize("worker", [True, False], ids=["worker", "no-worker"])
def test_a_run_leaves_out_only_the_row_that_does_not_decode(tmp_path: Path, worker: bool) -> None:
    path = text_keyed(tmp_path / "t.db", f"UPDATE t SET a = {bad('v', FF)} WHERE k = 'k020'")
    report = run(path, worker=worker)
    (stats,) = report.extractors
    assert (stats.processed, stats.inserted, stats.error_count) == (40, 39, 1)
    (error,) = report.errors.first
    assert (error.key, error.kind) == ("k020", INVALID_ENCODING)
    with sqlite3.connect(path) as c:
        written = c.execute("SELECT k, a FROM out ORDER BY k").fetchall()
    assert written == [(f"k{i:03}", f"V{i}") for i in range(40) if i != 20]


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("worker", [True, False], ids=["worker", "no-worker"])
def test_a_key_that_does_not_decode_ends_the_run_with_exit_3(
    tmp_path: Path, worker: bool, dry_run: bool
) -> None:
    # The key sorts after k019, so the run stops there, past two batches: either the page's end
    # (the worker's index-only query) or the page itself meets it.
    path = text_keyed(tmp_path / "t.db", f"UPDATE t SET k = {bad('k019', FF)} WHERE k = 'k019'")
    with pytest.raises(UndecodableKey) as ended:
        run(path, worker=worker, dry_run=dry_run)
    assert "CAST(X'6B303139FF' AS TEXT)" in str(ended.value)
    assert "key column 'k'" in str(ended.value)


# -- a read that fails for another reason names its statement -------------------------------------


def test_a_failed_read_names_the_statement_not_reachability(tmp_path: Path) -> None:
    path = text_keyed(tmp_path / "t.db", "UPDATE t SET a = 'x' WHERE k = 'k000'")

    async def read() -> Any:
        async with Database(resolve_url(str(path))) as db, db.reading() as conn:
            return await conn.fetch("SELECT json(a) FROM t", [])

    with pytest.raises(DatabaseUnavailable) as failed:
        asyncio.run(read())
    message = str(failed.value)
    assert "malformed JSON, running `SELECT json(a) FROM t` (the database refused" in message
    assert "reachable" not in message


def test_a_strict_read_of_undecodable_text_says_so(tmp_path: Path) -> None:
    path = text_keyed(tmp_path / "t.db", f"UPDATE t SET a = {bad('', FE)} WHERE k = 'k003'")

    async def read() -> Any:
        async with Database(resolve_url(str(path))) as db, db.reading() as conn:
            return await conn.fetch("SELECT a FROM t", [])

    with pytest.raises(DatabaseUnavailable) as failed:
        asyncio.run(read())
    message = str(failed.value)
    assert "SELECT a FROM t" in message and "not valid UTF-8" in message
    assert "reachable" not in message


# -- validators' queries over such rows -----------------------------------------------------------

t = table("t", column("k"), column("a"))


class Check(Validator):
    name = "texts_check"
    tables: ClassVar[dict[str, Sequence[str]]] = {"t": ("k", "a")}

    def __init__(self, numerator: Select[Any]) -> None:
        self.numerator = numerator

    def metrics(self) -> list[Metric]:
        count = select(func.count()).select_from(t)
        return [Metric("counted", "rows", self.numerator, count, threshold=None)]


def validate(path: Path, numerator: Select[Any]) -> RunReport:
    class Checks:
        @hookimpl
        def register_validators(self, register: Callable[[Validator], None]) -> None:
            register(Check(numerator))

    report = RunReport(database=str(path))
    asyncio.run(validate_only(make_registry(Checks()), [], resolve_url(str(path)), report))
    return report


def test_a_metric_counts_over_text_that_does_not_decode(tmp_path: Path) -> None:
    path = text_keyed(tmp_path / "t.db", f"UPDATE t SET a = {bad('v', FF)} WHERE k = 'k020'")
    report = validate(path, select(func.count()).select_from(t).where(t.c.a.like("v%")))
    assert report.validation is not None
    (result,) = report.validation
    assert (result.numerator, result.denominator) == (40, 40)


def test_a_metric_query_that_returns_such_text_names_the_validator(tmp_path: Path) -> None:
    path = text_keyed(tmp_path / "t.db", f"UPDATE t SET a = {bad('v', FF)} WHERE k = 'k020'")
    with pytest.raises(EnvironmentProblem) as ended:
        validate(path, select(func.max(t.c.a)).where(t.c.k == "k020"))
    message = str(ended.value)
    assert "validator 'texts_check' could not compute 'counted'" in message
    assert "not valid UTF-8; a metric returns numbers" in message


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_target_row_that_does_not_decode_ends_the_run_naming_its_key_and_column(
    tmp_path: Path, dry_run: bool
) -> None:
    path = text_keyed(tmp_path / "t.db", f"INSERT INTO out VALUES ('k012', {bad('V', FF)})")
    with pytest.raises(UndecodableValue) as ended:
        run(path, worker=False, dry_run=dry_run)
    message = str(ended.value)
    assert "the row of 'out' where k = 'k012'" in message
    assert "column 'a'" in message and "CAST(X'56FF' AS TEXT)" in message
    assert ended.value.exit_code == 3
