"""A throw-away `pids` cgroup per sandbox run: caps how many processes the run may hold,
and lists every one of them so they can all be killed, setsid or not.

cgroup v1 (`/sys/fs/cgroup/pids`) or v2 with the pids controller enabled for our subtree;
`PidsCgroup.create` returns None (and says why) where neither can be written.
"""
from __future__ import annotations

import logging
import os
import signal
import time
import uuid

log = logging.getLogger(__name__)

__all__ = ["PidsCgroup"]


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


def _parent_dir() -> tuple[str | None, str]:
    """Where a child cgroup with a pids controller can be made, or (None, why not)."""
    v1 = "/sys/fs/cgroup/pids"
    own = _own_path("pids")
    if own is not None and os.path.isdir(v1):
        return os.path.join(v1, own.lstrip("/")), ""
    own = _own_path("")
    if own is not None and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        base = os.path.join("/sys/fs/cgroup", own.lstrip("/"))
        try:
            with open(os.path.join(base, "cgroup.subtree_control")) as f:
                if "pids" in f.read().split():
                    return base, ""
        except OSError as exc:
            return None, f"cgroup v2 at {base}: {exc.strerror}"
        return None, f"the pids controller is not enabled for {base}'s children"
    return None, "no cgroup pids controller is mounted"


class PidsCgroup:
    """One run's cgroup; `kill_all()` then `remove()` when the run is over."""

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def create(cls, max_pids: int) -> tuple["PidsCgroup | None", str]:
        parent, why = _parent_dir()
        if parent is None:
            return None, why
        path = os.path.join(parent, f"mindxh-sandbox-{uuid.uuid4().hex[:12]}")
        try:
            os.mkdir(path)
        except OSError as exc:
            return None, f"cannot create {path}: {exc.strerror}"
        try:
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(max_pids))
        except OSError as exc:
            os.rmdir(path)
            return None, f"cannot set {path}/pids.max: {exc.strerror}"
        return cls(path), ""

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return []

    def kill_all(self) -> None:
        """SIGKILL every member until none is left (pids.max bounds how many can respawn)."""
        kill_file = os.path.join(self.path, "cgroup.kill")  # v2, Linux 5.14+
        if os.path.exists(kill_file):
            with open(kill_file, "w") as f:
                f.write("1")
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
        log.warning("sandbox cgroup %s still has processes %s after kill", self.path, self.pids())

    def remove(self) -> None:
        for _ in range(100):  # killed members leave once they are reaped
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)
        log.warning("could not remove sandbox cgroup %s", self.path)
