"""A run that commits its key ranges out of key order, killed part-way, resumes with ``backfill run``
to exactly the tables and ledger of an uninterrupted run, on SQLite and PostgreSQL alike: the
ledger's low-water mark and the ranges above it tell the next run what is left, and nothing
committed is read again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from support.backends import Backend
from support.cli import make_env
from support.processes import wait_until_stopped

if TYPE_CHECKING:
    from support.consistency import Reference
    from support.crash import Crash

BATCH = 10
TODO = [(150, 250), (None, 50), (250, None), (50, 150)]
"""The key ranges the first run processes, in this order (the source keys are 1 to 300)."""
KILLED_AT = "test_features:committed:17"
"""After 10 batches of (150, 250], 5 of (None, 50] and 2 of (250, None): at least the first of
these ranges is committed above a low-water mark that is not past it (unchanged batches may be
folded into a later checkpoint, so the exact ranges depend on the data)."""

RUN = """
import asyncio, sys

from backfill_core import RunOptions, make_registry, resolve_url
from backfill_core.engine.batch import Converter
from backfill_core.engine.loop import BatchLoop
from backfill_core.engine.sources import Pages
from backfill_core.engine.stats import ErrorLog, ExtractorStats
from backfill_core.engine.writer import Writer
from backfill_core.store.database import Database
from backfill_core.store.ledger import Ledger
from backfill_core.store.records import KeyRange
from backfill_plugins.testmanagement import plugin


async def main(url: str, batch: int, todo: list[list[int | None]]) -> None:
    (extractor,) = make_registry(plugin).ordered(["test_features"])
    async with Database(resolve_url(url)) as db:
        ledger = Ledger(db)
        await ledger.ensure()
        options = RunOptions(batch_size=batch, max_error_rate=1.0)  # a batch may hold a messy test
        x = Converter(extractor)
        await db.check_schema({extractor.source_table: x.cols, **x.written})
        loop = BatchLoop(db, Writer(db, x.name, x.written), options, ErrorLog(keep=10), ledger=ledger)
        state = await ledger.begin(
            "test_features", plugin="", version="0", invocation="out-of-order", plan="test_features",
            options={}, restart=False,
        )
        state.todo = [KeyRange(after, upto) for after, upto in todo]
        await loop.run(Pages(db, x, state.todo, batch), ExtractorStats(x.name), state)


asyncio.run(main(sys.argv[1], int(sys.argv[2]), __import__("json").loads(sys.argv[3])))
"""
"""The real engine over out-of-order key ranges, as a process of its own (``python -c RUN URL
BATCH TODO``): no command runs ranges out of order yet."""

FEATURES = (
    "SELECT id, customer_id, test_id, feature_id, title, description, howtofind, user_stories, "
    "CAST(enable_default AS INTEGER), CAST(enable_content AS INTEGER), CAST(enable_visual AS INTEGER) "
    "FROM test_features ORDER BY id"
)


def within(key: int, spans: list[tuple[Any, Any]]) -> bool:
    return any((a is None or a < key) and (u is None or key <= u) for a, u in spans)


def test_ranges_committed_out_of_order_resume_to_the_uninterrupted_result(
    small: Backend, crash: Crash, small_reference: Reference
) -> None:
    keys = [r[0] for r in crash.query(small_reference.path, "SELECT id FROM tests ORDER BY id")]
    assert (keys[0], keys[-1], len(keys)) == (1, 300, 300)
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, small.url, str(BATCH), json.dumps(TODO)],
        env=make_env({"BACKFILL_STOP_AT": KILLED_AT}),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_stopped(proc)
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, stderr

    # What the kill left: the data of exactly the committed keys, and ranges above the mark.
    ((last, processed, status),) = crash.query(
        crash.readable(small), "SELECT last_key, processed, status FROM backfill_runs"
    )
    assert status == "running"
    low = None if last is None else json.loads(last)
    above = [
        (None if a is None else json.loads(a), json.loads(u))
        for a, u in crash.query(crash.readable(small), "SELECT after, upto FROM backfill_ranges")
    ]
    assert above, "the out-of-order commits left no range in backfill_ranges"
    assert low is None or low < 150
    committed = [(None, low), *above] if low is not None else above
    done = [k for k in keys if within(k, committed)]
    assert processed == len(done)
    assert 151 in done and 250 in done
    reference = crash.query(small_reference.path, FEATURES)
    assert crash.query(crash.readable(small), FEATURES) == [r for r in reference if within(r[2], committed)]

    cmd = ["run", "test_features", "-d", small.url, "-q", "--batch-size", str(BATCH), "--no-validate"]
    cmd += ["--max-error-rate", "1"]  # a batch of 10 rows may hold a messy test or two
    again = crash.run_cli(cmd)
    assert again.returncode == 0, again.stderr
    where = "from the start" if low is None else f"from key {low}"
    assert f"taking over run 1 of test_features {where} (and {len(above)} key range" in again.stderr

    assert crash.query(crash.readable(small), FEATURES) == reference
    ledger = crash.query(
        crash.readable(small),
        "SELECT id, status, last_key, processed, total, record_errors FROM backfill_runs",
    )
    ((ref_id, _, ref_last, ref_processed, ref_total, ref_errors),) = crash.query(
        small_reference.path,
        "SELECT id, status, last_key, processed, total, record_errors FROM backfill_runs "
        "WHERE extractor = 'test_features'",
    )
    assert ledger == [(1, "succeeded", ref_last, ref_processed, ref_total, ref_errors)]
    assert crash.query(crash.readable(small), "SELECT COUNT(*) FROM backfill_ranges") == [(0,)]
    errors = "SELECT key FROM backfill_errors WHERE run_id = {} ORDER BY key"
    assert crash.query(crash.readable(small), errors.format(1)) == crash.query(
        small_reference.path, errors.format(ref_id)
    )
