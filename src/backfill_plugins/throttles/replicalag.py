"""``--max-replica-lag SECONDS``: wait while a PostgreSQL replica replays more than SECONDS behind.

The lag is ``replay_lag`` from ``pg_stat_replication`` on the server the run writes to, read
before each batch. A server with no replica, and SQLite, have no lag to wait for: the throttle
says so once and never waits.
"""

from __future__ import annotations

from backfill_core.throttle import DatabaseView, Throttle, Wait

LAG = """SELECT coalesce(application_name, ''), coalesce(client_addr::text, ''),
       coalesce(EXTRACT(EPOCH FROM replay_lag)::float8, 0),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
FROM pg_stat_replication"""
"""Each replica's name, address and lag (NULL, caught up: 0), and whether this role may see the lag
(other roles read NULL)."""
LONGEST_WAIT = 10.0
"""Seconds at most before the lag is read again."""


class ReplicaLag(Throttle):
    name = "replica_lag"
    query = LAG

    async def check(self, db: DatabaseView) -> Wait | None:
        limit = db.options.get("max_replica_lag")
        if limit is None:
            return None
        if db.kind != "postgresql":
            db.note("--max-replica-lag: SQLite has no replicas; not throttling")
            return None
        rows = await db.fetch(self.query)
        if not rows:
            db.note(
                "--max-replica-lag: the server has no replicas (pg_stat_replication is empty); not throttling"
            )
            return None
        if not all(row[3] for row in rows):
            db.note(
                "--max-replica-lag: this role cannot read replay_lag in pg_stat_replication (grant it "
                "pg_monitor or pg_read_all_stats); not throttling"
            )
            return None
        name, address, lag, _ = max(rows, key=lambda row: float(row[2]))
        lag = float(lag)
        if lag <= limit:
            return None
        replica = name or address or "a replica"
        return Wait(
            min(max(lag - limit, 0.5), LONGEST_WAIT),
            f"replica {replica} replays {lag:.1f}s behind, over --max-replica-lag {limit:g}",
        )
