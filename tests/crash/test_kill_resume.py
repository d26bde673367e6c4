"""SIGKILL a real run of both extractors again and again, then let it finish: the result must be
exactly what one uninterrupted run produces, and the ledger must account for every row once."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Crash

KILL_PLAN = ("early", "test_features", "test_features", "early", "bug_attribution", "bug_attribution")
"""Where each SIGKILL should land: 'early' is a plain random delay after the start (often
before or right after the first checkpoint); a phase name waits until that extractor's run,
owned by the process, has checkpointed rows, then waits a random delay more."""


def _seed() -> int:
    raw = os.environ.get("CRASH_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


def _in_phase(crash: Crash, path: Path, extractor: str, pid: int) -> bool:
    rows = crash.query(
        path,
        "SELECT processed FROM backfill_runs WHERE extractor = ? AND status = 'running' AND pid = ?",
        (extractor, pid),
    )
    return bool(rows) and rows[0][0] > 0


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


def test_kill_and_resume(crash: Crash, big_template: Path) -> None:
    seed = _seed()
    print(f"test_kill_and_resume: seed={seed} (set CRASH_SEED={seed} to repeat)")
    rng = random.Random(seed)

    ref_path = crash.copy(big_template, "reference.db")
    proc = crash.run_cli(["run", *crash.BOTH, "-d", ref_path, "-q", "--json"])
    assert proc.returncode == 0, proc.stderr
    tests = crash.scalar(ref_path, "SELECT COUNT(*) FROM tests")
    bugs = crash.scalar(ref_path, "SELECT COUNT(*) FROM bugs")
    ref = crash.Reference(ref_path, tests, bugs).load()
    ref_runs = {r["extractor"]: r for r in crash.runs(ref_path)}
    ref_error_keys = {
        name: sorted(e["key"] for e in crash.errors_of(ref_path, r["id"])) for name, r in ref_runs.items()
    }

    path = crash.copy(big_template, "killed.db")
    # Batches of 100 (200 for test_features, about 800 for bug_attribution) keep each phase long
    # enough for a kill at a random moment to land inside it.
    cmd = ["run", *crash.BOTH, "-d", path, "-q", "--json", "--batch-size", "100"]
    stderrs: list[str] = []
    reached_phases: list[str] = []
    kills = 0
    expected: list[str] = []
    for i, phase in enumerate(KILL_PLAN):
        where = f"kill {i} ({phase}), seed={seed}"
        proc_bg = crash.spawn(cmd)
        if phase == "early":
            time.sleep(rng.uniform(0.3, 1.2))
            reached = False
        else:
            reached = crash.wait_for(lambda p=proc_bg, x=phase: _in_phase(crash, path, x, p.pid), proc_bg)
            if reached:
                reached_phases.append(phase)
                time.sleep(rng.uniform(0.0, 0.8))
        proc_bg.signal(signal.SIGKILL)
        done = proc_bg.wait()
        stderrs.append(done.stderr)
        assert done.returncode in (-signal.SIGKILL, 0), f"{where}: exit {done.returncode}\n{done.stderr}"
        kills += done.returncode == -signal.SIGKILL
        if reached:
            for line in expected:
                assert line in done.stderr, f"{where}: stderr lacks {line!r}:\n{done.stderr}"
        view = crash.readable(path)  # as the next run will find it, after crash recovery
        crash.check_consistent(view, ref, where)
        expected = _expected_notes(crash.runs(view))
        ledger = ", ".join(
            f"{r['id']}:{r['extractor']}:{r['status']}:{r['processed']}" for r in crash.runs(view)
        )
        print(f"  {where}: exit {done.returncode}, ledger {ledger}")

    assert kills >= 4, f"only {kills} of {len(KILL_PLAN)} runs were killed before they ended (seed={seed})"
    assert "test_features" in reached_phases and "bug_attribution" in reached_phases, reached_phases

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
    source_rows = {"test_features": tests, "bug_attribution": bugs}
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
