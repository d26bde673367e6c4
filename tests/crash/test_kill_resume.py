"""SIGKILL a real run of both extractors again and again, then let it finish: the result must be
exactly what one uninterrupted run produces, and the ledger must account for every row once; on
a SQLite file and on a scratch PostgreSQL database."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from support.consistency import Reference
    from support.crash import Crash
    from support.db import Where

KILL_PLAN = ("early", "test_features", "test_features", "early", "bug_attribution", "bug_attribution")
"""Where each SIGKILL lands: 'early' is the start of whichever extractor the run does first (its
run recorded, or its first batch written but not committed); a phase name is a seeded random
batch of that extractor's run, written but not committed, or just committed. The run stops
itself there (BACKFILL_STOP_AT) and is killed while stopped, so every kill lands where it was
aimed on any machine, fast or slow."""

BATCH = 100


def _remaining(crash: Crash, path: Where, extractor: str) -> int:
    """The source rows the next run of ``extractor`` reads: after its checkpoint, if it has one."""
    source = {"test_features": "tests", "bug_attribution": "bugs"}[extractor]
    mine = [r for r in crash.runs(path) if r["extractor"] == extractor and r["retry_of"] is None]
    if mine and mine[-1]["status"] == "succeeded":
        return 0
    last = crash.decode_key(mine[-1]["last_key"]) if mine else None
    if last is None:
        return int(crash.scalar(path, f"SELECT COUNT(*) FROM {source}"))
    return int(crash.scalar(path, f"SELECT COUNT(*) FROM {source} WHERE id > ?", (last,)))


def _aim(crash: Crash, path: Where, phase: str, rng: random.Random) -> tuple[str, str]:
    """The extractor a kill aims at, and the BACKFILL_STOP_AT spec that holds the run there."""
    if phase == "early":
        target = "test_features" if _remaining(crash, path, "test_features") else "bug_attribution"
        return target, rng.choice([f"{target}:started", f"{target}:written:1"])
    left = -(-_remaining(crash, path, phase) // BATCH)
    assert left > 1, f"{phase} has {left} batches left: the kill plan leaves no room for this kill"
    # At most a third of what is left, so the later kills of the plan find their phase unfinished.
    batch = rng.randint(1, max(1, left // 3))
    return phase, f"{phase}:{rng.choice(['written', 'committed'])}:{batch}"


def _expected_notes(ledger: list[dict[str, Any]]) -> list[str]:
    """The stderr lines the next ``backfill run test_features bug_attribution`` must print,
    judged from the ledger a SIGKILL left behind."""
    mine = [r for r in ledger if r["retry_of"] is None]
    if not mine:
        return []
    latest = mine[-1]
    if latest["status"] != "running":  # the kill hit between runs or during validation
        return []
    notes = []
    if latest["extractor"] == "bug_attribution":
        done = [
            r
            for r in mine
            if r["extractor"] == "test_features"
            and r["invocation"] == latest["invocation"]
            and r["status"] == "succeeded"
        ]
        assert len(done) == 1, f"bug_attribution run {latest['id']} has no completed test_features run"
        notes.append(f"backfill: test_features: already completed in run {done[0]['id']}")
    last = None if latest["last_key"] is None else json.loads(latest["last_key"])
    where = "from the start" if last is None else f"from key {last}"
    notes.append(f"backfill: taking over run {latest['id']} of {latest['extractor']} {where}")
    return notes


def test_kill_and_resume(kind: str, crash: Crash, medium_template: Path, medium_reference: Reference) -> None:
    seed, rng = crash.seeded()
    ref = medium_reference
    ref_runs = {r["extractor"]: r for r in crash.runs(ref.path)}
    ref_error_keys = {
        name: sorted(e["key"] for e in crash.errors_of(ref.path, r["id"])) for name, r in ref_runs.items()
    }

    path = crash.database(kind, medium_template, "killed.db")
    cmd = ["run", *crash.BOTH, "-d", path.url, "-q", "--json", "--batch-size", str(BATCH)]
    stderrs: list[str] = []
    expected: list[str] = []
    for i, phase in enumerate(KILL_PLAN):
        target, spec = _aim(crash, crash.readable(path), phase, rng)
        where = f"kill {i} ({phase}, {spec}), seed={seed}"
        proc_bg = crash.spawn(cmd, env={"BACKFILL_STOP_AT": spec})
        proc_bg.wait_stopped()
        proc_bg.signal(signal.SIGKILL)
        done = proc_bg.wait()
        stderrs.append(done.stderr)
        assert done.returncode == -signal.SIGKILL, f"{where}: exit {done.returncode}\n{done.stderr}"
        for line in expected:
            assert line in done.stderr, f"{where}: stderr lacks {line!r}:\n{done.stderr}"
        view = crash.readable(path)  # as the next run will find it, after crash recovery
        crash.check_consistent(view, ref, where)
        ledger = crash.runs(view)
        latest = ledger[-1]
        assert (latest["extractor"], latest["status"]) == (target, "running"), f"{where}: {latest}"
        expected = _expected_notes(ledger)
        summary = ", ".join(f"{r['id']}:{r['extractor']}:{r['status']}:{r['processed']}" for r in ledger)
        print(f"  {where}: ledger {summary}")

    final = crash.run_cli(cmd)
    stderrs.append(final.stderr)
    assert final.returncode == 0, f"seed={seed}\n{final.stderr}"
    for line in expected:
        assert line in final.stderr, f"final run: stderr lacks {line!r}:\n{final.stderr}"
    assert json.loads(final.stdout)["exit_code"] == 0
    assert any("taking over run" in e or "resuming run" in e for e in stderrs), (
        f"no resumed run announced itself (seed={seed}):\n" + "\n---\n".join(stderrs)
    )

    crash.check_equal_to_reference(path, ref, f"after the final run, seed={seed}")
    crash.check_consistent(path, ref, f"after the final run, seed={seed}")

    ledger = crash.runs(path)
    assert not [r for r in ledger if r["status"] == "running"], f"runs left 'running': {ledger}"
    source_rows = {"test_features": ref.tests, "bug_attribution": ref.bugs}
    for name in crash.BOTH:
        succeeded = [r for r in ledger if r["extractor"] == name and r["status"] == "succeeded"]
        assert succeeded, f"no succeeded {name} run in {ledger}"
        last = succeeded[-1]
        assert last["processed"] == source_rows[name], f"seed={seed}: {last}"
        assert last["total"] == source_rows[name], f"seed={seed}: {last}"
        keys = [e["key"] for e in crash.errors_of(path, last["id"])]
        assert len(keys) == last["record_errors"] + last["batch_errors"], last
        assert len(set(keys)) == len(keys), f"run {last['id']} recorded a key twice"
        assert sorted(keys) == ref_error_keys[name], (
            f"seed={seed}: the final {name} run recorded other failing keys than the uninterrupted run"
        )
    final_ba = [r for r in ledger if r["extractor"] == "bug_attribution" and r["status"] == "succeeded"][-1]
    assert final_ba["processed"] == (
        final_ba["updated"] + final_ba["unchanged"] + final_ba["record_errors"] + final_ba["batch_errors"]
    ), final_ba
    tf_inserted = sum(r["inserted"] for r in ledger if r["extractor"] == "test_features")
    assert tf_inserted == crash.scalar(path, "SELECT COUNT(*) FROM test_features") == len(ref.features)
