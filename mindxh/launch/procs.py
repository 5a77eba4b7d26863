"""Find and kill every process of one launched job, whatever session it moved to.

msrun starts each worker with `setsid`, so killing msrun's process group leaves the workers
running; a worker whose parent died is re-parented away from msrun, so walking msrun's
children misses it too. What every process of the job keeps is its environment: the
launcher puts a unique token in it, and this module finds the job by reading
/proc/<pid>/environ (Linux, like msrun itself).
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "MINDXH_LAUNCH_TOKEN"
_PROC = Path("/proc")


@dataclass(frozen=True)
class JobProcess:
    pid: int
    pgid: int
    zombie: bool
    env: dict[str, str]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc/PID/stat; None once the process is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and ')'
    return fields[0], int(fields[2])


def job_processes(token: str) -> list[JobProcess]:
    """Every live or zombie process whose environment carries TOKEN_ENV=token."""
    marker = f"{TOKEN_ENV}={token}".encode()
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes()
        except OSError:  # another user's process, or gone
            continue
        items = raw.split(b"\0")
        if marker not in items:
            continue
        stat = _stat(int(entry.name))
        if stat is None:
            continue
        env = dict(i.decode(errors="replace").partition("=")[::2] for i in items if b"=" in i)
        found.append(JobProcess(int(entry.name), stat[1], stat[0] == "Z", env))
    return found


def kill_job(token: str, groups: set[int], wait_s: float = 10.0) -> list[int]:
    """SIGKILL the given process groups and every process of the job, until none is left
    alive (zombies are their parents' to reap); returns the pids still alive after wait_s."""
    own = os.getpgrp()
    deadline = time.monotonic() + wait_s
    while True:
        alive = [p for p in job_processes(token) if not p.zombie and p.pid != os.getpid()]
        targets = groups | {p.pgid for p in alive}
        for pgid in targets - {own, 0, 1}:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in alive:  # one that shares our group (or left its own) still dies
            try:
                os.kill(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        groups = set()
        if not alive or time.monotonic() > deadline:
            return [p.pid for p in alive]
        time.sleep(0.1)
