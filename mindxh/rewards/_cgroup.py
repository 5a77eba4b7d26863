"""A throw-away cgroup per sandbox run, with the `pids` and `memory` controllers where they
can be had: caps how many processes the run may hold and how much memory all of them hold
together (the per-process RLIMIT_AS cannot see a run that forks), and lists every process
of the run so they can all be killed, setsid or not.

cgroup v1 (`/sys/fs/cgroup/<controller>`, one directory per controller) or v2 with the
controller enabled for our subtree (one directory for both). `RunCgroup.create` returns
None, or a cgroup lacking a controller, and says why for each one it could not have.
"""
from __future__ import annotations

import logging
import os
import signal
import time
import uuid

log = logging.getLogger(__name__)

__all__ = ["RunCgroup"]


def _own_path(controller: str) -> str | None:
    """This process's cgroup path in the hierarchy of `controller` ('' = the v2 one)."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, names, path = line.rstrip("\n").split(":", 2)
                if controller in names.split(",") or (controller == "" and names == ""):
                    return path
    except OSError:
        return None
    return None


def _parent_dir(controller: str = "pids") -> tuple[str | None, str]:
    """Where a child cgroup with `controller` can be made, or (None, why not)."""
    v1 = f"/sys/fs/cgroup/{controller}"
    own = _own_path(controller)
    if own is not None and os.path.isdir(v1):
        return os.path.join(v1, own.lstrip("/")), ""
    own = _own_path("")
    if own is not None and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        base = os.path.join("/sys/fs/cgroup", own.lstrip("/"))
        try:
            with open(os.path.join(base, "cgroup.subtree_control")) as f:
                if controller in f.read().split():
                    return base, ""
        except OSError as exc:
            return None, f"cgroup v2 at {base}: {exc.strerror}"
        return None, f"the {controller} controller is not enabled for {base}'s children"
    return None, f"no cgroup {controller} controller is mounted"


def _write(path: str, value: str, optional: bool = False) -> None:
    if optional and not os.path.exists(path):
        return
    with open(path, "w") as f:
        f.write(value)


def _limit(path: str, controller: str, value: int) -> None:
    """Set one controller's cap in the cgroup directory `path`."""
    if controller == "pids":
        _write(os.path.join(path, "pids.max"), str(value))
    elif os.path.exists(os.path.join(path, "memory.max")):  # v2: no swap; OOM kills the run
        _write(os.path.join(path, "memory.max"), str(value))
        _write(os.path.join(path, "memory.swap.max"), "0", optional=True)
        _write(os.path.join(path, "memory.oom.group"), "1", optional=True)
    else:  # v1: memory, then memory + swap (which may not be below memory)
        _write(os.path.join(path, "memory.limit_in_bytes"), str(value))
        _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(value), optional=True)


class RunCgroup:
    """One run's cgroup directories (controller -> path); `kill_all()` then `remove()`."""

    prefix = "mindxh-sandbox-"  # of the directories' names (tests use one of their own)

    def __init__(self, dirs: dict[str, str]):
        self.dirs = dirs

    @property
    def paths(self) -> list[str]:
        """The distinct directories, for the launcher to join."""
        return sorted(set(self.dirs.values()))

    @property
    def has_memory(self) -> bool:
        return "memory" in self.dirs

    @classmethod
    def create(cls, max_pids: int, memory_bytes: int | None) -> tuple["RunCgroup | None", list[str]]:
        """(cgroup or None, why each wanted controller is missing)."""
        wanted = {"pids": max_pids, **({"memory": memory_bytes} if memory_bytes else {})}
        name = f"{cls.prefix}{uuid.uuid4().hex[:12]}"
        dirs, why = {}, []
        for controller, value in wanted.items():
            parent, reason = _parent_dir(controller)
            if parent is None:
                why.append(f"{controller}: {reason}")
                continue
            path = os.path.join(parent, name)
            made = path not in dirs.values()  # v2: one directory for both
            try:
                if made:
                    os.mkdir(path)
                _limit(path, controller, value)
            except OSError as exc:
                why.append(f"{controller}: cannot set up a cgroup in {parent}: {exc.strerror}")
                if made:
                    _rmdir(path)
                continue
            dirs[controller] = path
        return (cls(dirs) if dirs else None), why

    def pids(self) -> list[int]:
        members: set[int] = set()
        for path in self.paths:
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    members.update(int(x) for x in f.read().split())
            except (OSError, ValueError):
                pass
        return sorted(members)

    def oom_kills(self) -> int:
        """How many of the run's processes the kernel killed for the memory cap (0 if none)."""
        path = self.dirs.get("memory")
        if path is None:
            return 0
        for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill"),
                          ("memory.events", "oom"), ("memory.failcnt", "")):
            try:
                with open(os.path.join(path, name)) as f:
                    text = f.read()
            except OSError:
                continue
            if not key:
                return int(text.strip() or 0)
            for line in text.splitlines():
                if line.startswith(key + " "):
                    return int(line.split()[1])
        return 0

    def kill_all(self) -> None:
        """SIGKILL every member until none is left (pids.max bounds how many can respawn)."""
        for path in self.paths:
            kill_file = os.path.join(path, "cgroup.kill")  # v2, Linux 5.14+
            if os.path.exists(kill_file):
                _write(kill_file, "1")
        for _ in range(200):
            members = self.pids()
            if not members:
                return
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)
        log.warning("sandbox cgroup %s still has processes %s after kill", self.paths, self.pids())

    def remove(self) -> None:
        for path in self.paths:
            if not _rmdir(path):
                log.warning("could not remove sandbox cgroup %s", path)


def _rmdir(path: str) -> bool:
    for _ in range(100):  # killed members leave once they are reaped
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.01)
    return False
