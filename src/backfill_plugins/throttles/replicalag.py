"""``--max-replica-lag SECONDS``: wait while a PostgreSQL replica replays more than SECONDS behind.

The lag is ``replay_lag`` from ``pg_stat_replication`` on the server the run writes to, read
before each batch. A server with no replica, and SQLite, have no lag to wait for: the throttle
says so once and never waits.
"""

from __future__ import annotations

from backfill_core.throttle import DatabaseView, Throttle, Wait

LAG = """SELECT coalesce(application_name, ''), coalesce(client_addr::text, ''),
       coalesce(EXTRACT(EPOCH FROM replay_lag)::float8, 0)
FROM pg_stat_replication"""
LONGEST_WAIT = 10.0
"""Seconds at most before the lag is read again."""


class ReplicaLag(Throttle):
    name = "replica_lag"

    async def check(self, db: DatabaseView) -> Wait | None:
        limit = db.options.get("max_replica_lag")
        if limit is None:
            return None
        if db.kind != "postgresql":
            db.note("--max-replica-lag: SQLite has no replicas; not throttling")
            return None
        rows = await db.fetch(LAG)
        if not rows:
            db.note(
                "--max-replica-lag: the server has no replicas (pg_stat_replication is empty); not throttling"
            )
            return None
        name, address, lag = max(rows, key=lambda row: float(row[2]))
        lag = float(lag)
        if lag <= limit:
            return None
        replica = name or address or "a replica"
        return Wait(
            min(max(lag - limit, 0.5), LONGEST_WAIT),
            f"replica {replica} replays {lag:.1f}s behind, over --max-replica-lag {limit:g}",
        )
