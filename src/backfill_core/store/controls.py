"""Controls set from any process on any host (``backfill pause``, ``resume``, ``throttle``), kept
in the target database's ``backfill_controls`` table and read by running runs between batches.

A row applies to one run (``run:17``) or to every run of one extractor, current and next
(``extractor:test_features``). A column left NULL leaves that setting as the run's command line
gave it; a row that no longer changes anything is deleted.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert as sa_insert,
    inspect,
    select,
    update as sa_update,
)

from backfill_core.store.database import Database
from backfill_core.store.ledger import RUNNING, now, runs

controls = Table(
    "backfill_controls",
    MetaData(),
    Column("target", String(220), primary_key=True),
    Column("paused", Integer, nullable=False, default=0, server_default="0"),
    Column("max_rows_per_second", Float),
    Column("sleep_between_batches", Float),
    Column("changed_at", DateTime, nullable=False),
    Column("changed_by", Text),
)


def run_target(run_id: int) -> str:
    return f"run:{run_id}"


def extractor_target(name: str) -> str:
    return f"extractor:{name}"


@dataclass(frozen=True)
class Control:
    """One row of ``backfill_controls``: what an operator set for a run or an extractor."""

    target: str
    paused: bool = False
    max_rows_per_second: float | None = None
    """0: no limit; None: as the run's command line says."""
    sleep_between_batches: float | None = None
    changed_at: datetime | None = None
    changed_by: str | None = None

    @property
    def empty(self) -> bool:
        """Whether it changes nothing."""
        return not self.paused and self.max_rows_per_second is None and self.sleep_between_batches is None


class Controls:
    """Reads and writes ``backfill_controls`` of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def exists(self) -> bool:
        async with self.db.sqlalchemy() as conn:
            found: bool = await conn.run_sync(lambda sync: inspect(sync).has_table(controls.name))
            return found

    async def ensure(self) -> None:
        """Create the table if it is missing."""
        if await self.exists():
            return
        async with self.db.sqlalchemy(write=True) as conn:
            await self.db.lock(conn, "backfill:controls")
            await conn.run_sync(lambda sync: controls.create(sync, checkfirst=True))

    async def of(self, targets: Sequence[str]) -> dict[str, Control]:
        """The controls set for ``targets`` (one small query)."""
        async with self.db.sqlalchemy() as conn:
            rows = (await conn.execute(select(controls).where(controls.c.target.in_(targets)))).all()
        return {r.target: _control(r) for r in rows}

    async def all(self) -> list[Control]:
        if not await self.exists():
            return []
        async with self.db.sqlalchemy() as conn:
            rows = (await conn.execute(select(controls).order_by(controls.c.target))).all()
        return [_control(r) for r in rows]

    async def change(self, target: str, **fields: Any) -> tuple[Control, Control]:
        """Set ``fields`` (``paused``, ``max_rows_per_second``, ``sleep_between_batches``) of
        ``target``'s control; the control before and after."""
        await self.ensure()
        async with self.db.sqlalchemy(write=True) as conn:
            await self.db.lock(conn, "backfill:controls")
            row = (await conn.execute(select(controls).where(controls.c.target == target))).first()
            before = _control(row) if row is not None else Control(target)
            after = replace(
                before, **fields, changed_at=now(), changed_by=f"{socket.gethostname()}:{os.getpid()}"
            )
            values = {
                "paused": int(after.paused),
                "max_rows_per_second": after.max_rows_per_second,
                "sleep_between_batches": after.sleep_between_batches,
                "changed_at": after.changed_at,
                "changed_by": after.changed_by,
            }
            if after.empty:
                await conn.execute(delete(controls).where(controls.c.target == target))
            elif row is None:
                await conn.execute(sa_insert(controls).values(target=target, **values))
            else:
                await conn.execute(sa_update(controls).where(controls.c.target == target).values(**values))
        return before, after

    async def touch(self, run_id: int, message: str | None) -> None:
        """Refresh a waiting run's heartbeat (so another host never takes it for dead) and set
        its message (what it waits for; None when it goes on)."""
        async with self.db.sqlalchemy(write=True) as conn:
            await conn.execute(
                sa_update(runs)
                .where(runs.c.id == run_id, runs.c.status == RUNNING)
                .values(heartbeat_at=now(), message=message)
            )


def _control(row: Any) -> Control:
    return Control(
        row.target,
        bool(row.paused),
        row.max_rows_per_second,
        row.sleep_between_batches,
        row.changed_at,
        row.changed_by,
    )
