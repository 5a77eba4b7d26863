"""The parent's side of a running sandbox: notices a run that went over its total memory
or disk cap, so the sandbox can say why, and kills every process of the run at the end.

Where the kernel enforces a cap (a memory cgroup, a size-capped tmpfs) this only reads the
cgroup's OOM-kill count, and the host-side work directory (which the tmpfs hides, so it
holds main.py alone). Where it cannot, this is the cap: it sums the resident memory of the
run's processes (the cgroup's members, else the launcher's descendants and session read
from /proc) and the size and entry count of the work directory, every `interval` seconds
while the program runs and once more at the end. Polling only sees what exists when it
looks: a fallback that bounds a run by what it can do in one interval, not a kernel cap.
"""
from __future__ import annotations

import os
import signal
import subprocess

from mindxh.rewards._cgroup import RunCgroup

__all__ = ["Watchdog", "dir_usage", "init_pidfd", "kill_everything", "run_rss"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def dir_usage(path: str, max_entries: int) -> tuple[int, int]:
    """(bytes allocated, entries) below `path`; stops counting past `max_entries` entries."""
    used, entries, stack = 0, 0, [path]
    while stack and entries <= max_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    used += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return used, entries


def _statm_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def run_rss(root_pid: int, cgroup: RunCgroup | None) -> int:
    """Resident bytes of every process of the run: the cgroup's members where there is
    one, else `root_pid`, its descendants, and the members of its session, from /proc."""
    if cgroup is not None and cgroup.dirs:
        return sum(_statm_rss(pid) for pid in cgroup.pids())
    parent, rss, seen = {}, {}, {root_pid}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry)
        parent[pid], rss[pid] = int(fields[1]), int(fields[21]) * _PAGE
        if int(fields[3]) == root_pid:  # same session (the launcher started it)
            seen.add(pid)
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(seen)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return sum(rss.get(pid, 0) for pid in seen)


class Watchdog:
    """`check(now)` while the program runs, `final()` once it is over: None, or the cap
    ("memory" or "disk") the run went over."""

    def __init__(self, workdir: str, disk_bytes: int, max_entries: int, memory_bytes: int,
                 cgroup: RunCgroup | None, root_pid: int, interval: float = 0.02):
        self.workdir, self.disk_bytes, self.max_entries = workdir, disk_bytes, max_entries
        self.memory_bytes, self.cgroup, self.root_pid = memory_bytes, cgroup, root_pid
        self.interval, self.next_at = interval, 0.0
        self.kernel_memory = cgroup is not None and cgroup.has_memory

    def check(self, now: float) -> str | None:
        if now < self.next_at:
            return None
        self.next_at = now + self.interval
        return self._memory(live=True) or self._disk()

    def final(self) -> str | None:
        return self._memory(live=False) or self._disk()

    def _memory(self, live: bool) -> str | None:
        if self.kernel_memory:
            return "memory" if self.cgroup.oom_kills() else None
        if live and run_rss(self.root_pid, self.cgroup) > self.memory_bytes:
            return "memory"
        return None

    def _disk(self) -> str | None:
        used, entries = dir_usage(self.workdir, self.max_entries)
        return "disk" if used > self.disk_bytes or entries > self.max_entries else None


def init_pidfd(pid: int, launcher_pid: int) -> int | None:
    """A pidfd for the namespace's init, if `pid` still is that process (not a reused pid):
    the launcher, our unreaped child, is its parent, and it is pid 1 in its namespace."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        if int(fields["PPid"]) == launcher_pid and fields["NSpid"].split()[-1] == "1":
            return fd
    except (OSError, KeyError, ValueError):
        pass
    os.close(fd)
    return None


def kill_everything(proc: subprocess.Popen, init_pidfd: int | None) -> None:
    """Kill the program's pid namespace (if any), then its whole session."""
    if init_pidfd is not None:
        try:  # the namespace's init: the kernel kills and reaps the rest before it dies,
            signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
        except OSError:
            pass
        os.close(init_pidfd)
        try:  # and the launcher reaps the init, then exits
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        stream.close()
