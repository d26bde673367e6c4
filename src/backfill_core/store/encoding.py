"""Text that is not UTF-8 in a SQLite file: read without failing the page it is on.

SQLite stores whatever bytes it is given as TEXT; the sqlite3 module fails the whole fetch on the
first value it cannot decode. A page whose fetch fails so is read again with a text factory that
decodes each value itself and keeps what it cannot decode as :class:`Undecodable`; the page then
comes back as :class:`Salvaged` rows, which the engine turns into ``invalid-encoding`` record
errors (``engine/batch.py``). A page that decodes, the common case, is read once, as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

SHOWN_BYTES = 24
"""How many bytes around the first undecodable one a message shows."""


class Undecodable:
    """A TEXT value that is not UTF-8: its bytes, and where and why decoding them failed."""

    __slots__ = ("offset", "raw", "reason")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        try:
            raw.decode()
        except UnicodeDecodeError as e:
            self.offset, self.reason = e.start, e.reason
        else:  # not reached from the text factory, which only builds one for bytes that fail
            self.offset, self.reason = -1, "decodes"

    def __getstate__(self) -> bytes:
        return self.raw

    def __setstate__(self, raw: bytes) -> None:
        self.__init__(raw)  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Undecodable) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash((Undecodable, self.raw))

    def __repr__(self) -> str:
        return f"CAST(X'{self.raw.hex().upper()}' AS TEXT)"

    def describe(self, where: str) -> str:
        """What is wrong with the value of ``where`` (``tests.data``): the byte, its offset, and
        the bytes around it as Python shows them."""
        start = max(0, self.offset - SHOWN_BYTES // 2)
        shown = self.raw[start : start + SHOWN_BYTES]
        around = shown.decode(errors="backslashreplace")
        more = "…" if start > 0 else "", "…" if start + SHOWN_BYTES < len(self.raw) else ""
        return (
            f"{where} is not valid UTF-8: byte 0x{self.raw[self.offset]:02x} at byte offset "
            f"{self.offset} of {len(self.raw)} ({self.reason}), in '{more[0]}{around}{more[1]}'"
        )


class Salvaged(list[tuple[Any, ...]]):
    """The rows of a page that was read again after a value failed to decode: each value that
    cannot be decoded is an :class:`Undecodable`."""


def text_or_undecodable(raw: bytes) -> str | Undecodable:
    """The sqlite3 text factory of a salvaging read: the text, or what could not be decoded."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return Undecodable(raw)


def is_decode_failure(error: BaseException) -> bool:
    """Whether ``error`` is the sqlite3 module failing to decode a TEXT value as UTF-8."""
    return isinstance(error, sqlite3.OperationalError) and str(error).startswith("Could not decode to UTF-8")


def fetch_rows(con: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of ``sql``: as the driver returns them, or, when a TEXT value cannot be decoded,
    :class:`Salvaged` rows read again with each such value kept as :class:`Undecodable`."""
    try:
        return con.execute(sql, params).fetchall()
    except sqlite3.OperationalError as e:
        if not is_decode_failure(e):
            raise
    factory = con.text_factory
    con.text_factory = text_or_undecodable
    try:
        return Salvaged(con.execute(sql, params).fetchall())
    finally:
        con.text_factory = factory


def first_undecodable(cols: Sequence[str], row: Sequence[Any]) -> tuple[str, Undecodable] | None:
    """The first of ``row``'s values (named by ``cols``) that is not UTF-8, with its column."""
    return next(((c, v) for c, v in zip(cols, row, strict=True) if type(v) is Undecodable), None)
