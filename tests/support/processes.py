"""``backfill`` processes running in the background: started, stopped at a stop point, signalled,
waited for; and the processes around them, read from /proc."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from support.cli import BACKFILL, Env, make_env


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


class Spawned:
    """A ``backfill`` process running in the background; its output goes to files, so a full
    pipe can never stall it."""

    def __init__(self, args: Sequence[object], workdir: Path, env: Env | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.monotonic_ns()}"
        self.out_path = workdir / f"out-{stamp}.txt"
        self.err_path = workdir / f"err-{stamp}.txt"
        self._out = self.out_path.open("w")
        self._err = self.err_path.open("w")
        self.args = [str(BACKFILL), *map(str, args)]
        self.popen = subprocess.Popen(
            self.args, env=make_env(env), stdout=self._out, stderr=self._err, text=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait_stopped(self) -> None:
        """Wait until the process stops itself at its ``BACKFILL_STOP_AT`` point."""
        wait_until_stopped(self.popen)

    def resume(self) -> None:
        """SIGCONT: a signal sent while it was stopped is handled now."""
        if self.alive():
            self.popen.send_signal(signal.SIGCONT)

    def wait(self, timeout: float = 300) -> Finished:
        rc = self.popen.wait(timeout=timeout)
        self._out.close()
        self._err.close()
        return Finished(rc, self.out_path.read_text(), self.err_path.read_text())

    def stop(self) -> None:
        """Teardown: kill this one process if a failed test left it running."""
        if self.alive():
            self.popen.kill()
        try:
            self.popen.wait(timeout=30)
        finally:
            self._out.close()
            self._err.close()


def wait_for(
    predicate: Callable[[], bool], proc: Spawned, *, timeout: float = 120, every: float = 0.02
) -> bool:
    """Poll ``predicate`` until it holds (True) or ``proc`` exits first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except sqlite3.OperationalError:
            pass  # e.g. the ledger table does not exist yet, or a writer holds the lock
        if not proc.alive():
            return False
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting on {' '.join(proc.args)}")


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s living child processes (a run's extraction worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _state(pid: int) -> str | None:
    """The one-letter state of process ``pid`` (R, S, T for stopped, Z, ...), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has)."""
    return _state(pid) not in (None, "Z")


def wait_until_stopped(proc: subprocess.Popen[str], timeout: float = 600) -> None:
    """Wait until ``proc``, started with ``BACKFILL_STOP_AT``, has stopped itself at that point.

    The timeout only guards against a hang: the wait ends on an event, however slow the machine.
    """
    deadline = time.monotonic() + timeout
    while _state(proc.pid) not in ("T", "t"):
        if proc.poll() is not None:
            args = proc.args
            words = [args] if isinstance(args, str | bytes | os.PathLike) else args
            raise AssertionError(
                f"{' '.join(map(os.fsdecode, words))} exited with {proc.returncode} "
                "before reaching its stop point"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"process {proc.pid} did not reach its stop point in {timeout}s")
        time.sleep(0.01)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
