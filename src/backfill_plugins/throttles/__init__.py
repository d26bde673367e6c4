"""The built-in throttles: ``backfill run --max-replica-lag SECONDS``."""

from backfill_plugins.throttles.replicalag import ReplicaLag

__all__ = ["ReplicaLag"]
