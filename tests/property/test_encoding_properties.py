"""Properties of reading SQLite TEXT of arbitrary bytes (store/encoding.py): every value comes
back as the driver would decode it, or as the bytes it could not decode, never failing the read."""

from __future__ import annotations

import sqlite3

from hypothesis import example, given, settings, strategies as st

from backfill_core.store.encoding import Salvaged, Undecodable, fetch_rows, text_or_undecodable

SETTINGS = settings(max_examples=300, deadline=None)


@SETTINGS
@given(st.binary(max_size=40))
@example(b"\xed\xa0\x80")  # an encoded surrogate: Python's UTF-8 refuses it, as the driver does
@example(b"\xf4\x90\x80\x80")  # beyond U+10FFFF
@example(b"\xc0\xaf")  # an overlong form
def test_a_value_decodes_as_python_does_or_keeps_its_bytes(raw: bytes) -> None:
    got = text_or_undecodable(raw)
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        assert isinstance(got, Undecodable)
        assert (got.raw, got.offset) == (raw, e.start)
    else:
        assert got == text


@SETTINGS
@given(st.lists(st.binary(max_size=12) | st.text(max_size=8), min_size=1, max_size=12))
def test_a_page_of_any_text_reads_whole_and_only_bad_values_are_kept_as_bytes(
    values: list[bytes | str],
) -> None:
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)")
        for i, v in enumerate(values):
            raw = v if isinstance(v, bytes) else v.encode("utf-8", "surrogatepass")
            con.execute("INSERT INTO t VALUES (?, CAST(? AS TEXT))", (i, raw))
        rows = fetch_rows(con, "SELECT id, a FROM t ORDER BY id", [])
    finally:
        con.close()
    assert [r[0] for r in rows] == list(range(len(values)))
    expected = [
        text_or_undecodable(v if isinstance(v, bytes) else v.encode("utf-8", "surrogatepass")) for v in values
    ]
    assert [r[1] for r in rows] == expected
    assert (type(rows) is Salvaged) == any(isinstance(e, Undecodable) for e in expected)
