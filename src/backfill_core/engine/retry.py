"""Trying a batch again when its transaction gave way to another's lock (LockConflict).

The batch's transaction is rolled back by then, so trying it again from the start is safe: it is
planned afresh against the rows as they are now. The waits between tries grow exponentially,
with jitter, so that two processes that collided do not collide again in step.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from backfill_core.errors import DatabaseUnavailable
from backfill_core.store.connection import LockConflict

T = TypeVar("T")

FIRST_DELAY = 0.1
"""Seconds before the first retry, at most; each later one may wait twice as long."""
MAX_DELAY = 10.0
"""The longest wait between two tries, in seconds."""


@dataclass(frozen=True)
class Backoff:
    """Up to ``retries`` more tries after the first, waiting ``delay(n)`` before the ``n``-th."""

    retries: int
    first: float = FIRST_DELAY
    cap: float = MAX_DELAY

    def delay(self, retry: int, draw: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry ``retry`` (1, 2, …): from half to all of
        ``first * 2 ** (retry - 1)``, at most ``cap``; ``draw`` gives a number in [0, 1)."""
        ceiling = min(self.cap, self.first * 2.0 ** (retry - 1))
        return ceiling * (0.5 + draw() / 2)


async def with_retries(
    attempt: Callable[[int], Awaitable[T]],
    backoff: Backoff,
    *,
    conflicted: Callable[[LockConflict, int, float], object],
    what: str,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    waiting: Callable[[], Awaitable[object]] | None = None,
) -> T:
    """``attempt(retries)``, tried again after each LockConflict, up to ``backoff.retries`` times.

    ``conflicted(error, n, delay)`` is told of each conflict before the ``n``-th retry waits
    ``delay`` seconds, and ``waiting()`` is awaited as the wait begins. When the
    retries are spent, DatabaseUnavailable ends the run with a message saying which lock, where
    (``what``: ``test_features: the batch of keys after 500``) and what to do. A signal during a
    wait ends it at once: no transaction is open then.
    """
    retries = 0
    while True:
        try:
            return await attempt(retries)
        except LockConflict as e:
            if retries >= backoff.retries:
                raise gave_up(e, what, retries) from e
            retries += 1
            delay = backoff.delay(retries)
            conflicted(e, retries, delay)
            if waiting is not None:
                await waiting()
            await sleep(delay)


async def retried(
    work: Callable[[], Awaitable[T]], retries: int, *, what: str, announce: Callable[[str], object]
) -> T:
    """``work`` (one transaction, such as starting a run in the ledger), tried again after a lock
    conflict as a batch is, each retry announced."""

    def conflicted(error: LockConflict, retry: int, delay: float) -> None:
        announce(retry_line(what, error, retry, retries, delay))

    return await with_retries(lambda _: work(), Backoff(retries), conflicted=conflicted, what=what)


def retry_line(what: str, error: LockConflict, retry: int, retries: int, delay: float) -> str:
    """The line on stderr saying that ``what`` is tried again."""
    return (
        f"{what} gave way to another transaction's lock ({error.cause}) and was rolled back; "
        f"lock retry {retry} of {retries} in {delay:.2f}s"
    )


def gave_up(error: LockConflict, what: str, retries: int) -> DatabaseUnavailable:
    """The run-ending error once ``what`` lost to a lock on its last try (after ``retries``)."""
    tries = f"{retries + 1} tries" if retries else "its only try (--lock-retries 0)"
    return DatabaseUnavailable(
        f"{what} gave way to another transaction's lock on {tries} (the last: {error.cause}): {error}. "
        "The batches committed before it are kept, and none of its rows is recorded as failed. "
        "Find the transaction holding the lock (on PostgreSQL: pg_stat_activity rows whose "
        "wait_event_type is 'Lock', and pg_blocking_pids()), end it or wait for it, then run the same "
        "command to resume; or allow more with --lock-retries, --lock-timeout (PostgreSQL) or "
        "BACKFILL_BUSY_TIMEOUT (SQLite)"
    )
