"""The extractor contract: what a plugin declares, and the pure ``extract`` it implements."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from backfill_core.changes import Change, Skip

Row = Mapping[str, Any]
"""One source row: the declared columns by name, as the database driver returns them."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def table_name(source: object) -> str:
    """The table name of a SQLModel/SQLAlchemy model class, a Table, or a plain string."""
    if isinstance(source, str):
        return source
    table = getattr(source, "__table__", source)
    name = getattr(table, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"cannot tell the table name of {source!r}")
    return name


class Extractor(ABC):
    """Turns one row of a source table into changes to derived tables.

    Subclasses declare the class attributes below and implement :meth:`extract`, which must be
    a pure function of the row: no I/O, no clock, no randomness. Bad input raises
    :class:`~backfill_core.RecordError`; the engine does all reading and writing.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    source: ClassVar[object]
    """The table read: a model class or a table name."""
    columns: ClassVar[Sequence[str]]
    """The columns of ``source`` that ``extract`` reads; the key column is always read too."""
    key: ClassVar[str] = "id"
    """A unique, ordered column of ``source`` used for keyset batching."""
    writes: ClassVar[Mapping[Any, Sequence[str]]]
    """Tables (model classes or names) to the columns the changes may set, keys included."""
    depends_on: ClassVar[Sequence[str]] = ()

    @abstractmethod
    def extract(self, row: Row) -> Iterable[Change | Skip]:
        """Return the changes for one source row (and a Skip for what it leaves out on purpose),
        or raise RecordError."""

    # Normalised declarations, used by the engine and the testing kit.

    @property
    def source_table(self) -> str:
        return table_name(self.source)

    @property
    def read_columns(self) -> tuple[str, ...]:
        cols = tuple(self.columns)
        return cols if self.key in cols else (self.key, *cols)

    @property
    def written(self) -> dict[str, frozenset[str]]:
        return {table_name(t): frozenset(cols) for t, cols in self.writes.items()}

    def declaration_problems(self) -> list[str]:
        """What is wrong with this extractor's declarations; empty when it is usable."""
        problems = []
        name = getattr(self, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"name {name!r} must be lower_snake_case")
        for attr in ("source", "columns", "writes"):
            if not hasattr(self, attr):
                problems.append(f"missing class attribute {attr!r}")
        if problems:
            return problems
        try:
            self.source_table  # noqa: B018
            self.written  # noqa: B018
        except TypeError as exc:
            problems.append(str(exc))
        strings = [attr for attr in ("columns", "depends_on") if isinstance(getattr(self, attr), str)]
        if strings:
            names = " and ".join(strings)
            problems.append(
                f"{names} must be {'sequences' if len(strings) > 1 else 'a sequence'} of names, not a string"
            )
        if not self.writes:
            problems.append("writes declares no table")
        return problems

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'name', '?')}>"
