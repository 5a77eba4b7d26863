"""Run untrusted Python (model-written code) in a sandboxed subprocess and report how it went.

Protections, each applied where the machine allows and logged once as a warning where not:

- wall-clock timeout, CPU-time limit (RLIMIT_CPU), address-space limit (RLIMIT_AS),
  file-size and open-file limits, no core dumps;
- its own temporary directory as cwd, HOME and TMPDIR, removed afterwards; in the mount
  namespace a tmpfs capped at `disk_mb` and `max_files` entries, so many files each under
  the per-file limit cannot fill the host's disk or inode table (no mount namespace: the
  parent polls the directory's size and entry count and kills the run, status "disk");
- as root: an unprivileged uid/gid (65534, "nobody") with no supplementary groups and
  no_new_privs, so RLIMIT_NPROC applies and setuid binaries grant nothing;
- a mount namespace in which every mount is read-only except the work directory (so
  /tmp, /dev/shm and the repository cannot be written, whoever owns them);
- a network namespace with no interfaces up (no network, not even the host's loopback);
- a pid namespace in which the program is init: when it exits, the kernel kills every
  process it left behind, daemonised or not; it cannot see or signal host processes;
- a cgroup per run where cgroups are writable: `pids` (cap on processes, fork bombs
  included) and `memory` (`total_memory_mb` over all its processes, no swap; the per-process
  RLIMIT_AS cannot see a run that forks). No memory cgroup: the parent sums the resident
  memory of the run's processes every 20 ms and kills the run past the cap (status "memory");
- a new session, whose process group is killed at the end in any case.

The program runs as `python -I -S`: the standard library only, no site-packages.
"""
from __future__ import annotations

import json
import logging
import math
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from mindxh.rewards._cgroup import RunCgroup
from mindxh.rewards._watchdog import Watchdog, init_pidfd, kill_everything

log = logging.getLogger(__name__)

__all__ = ["SandboxLimits", "SandboxResult", "run_python"]

_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_launcher.py")
_WARNED: set[str] = set()
KERNEL_CAPS = True  # False: no memory cgroup or tmpfs, the parent's polling only (for tests)


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. `memory_mb` (address space) and `file_mb` are per process and
    per file; `total_memory_mb` (resident), `disk_mb` and `max_files` (files and directories
    it may create) are for the whole run (the work directory's tmpfs counts as memory too,
    so keep disk_mb well below total_memory_mb). `uid`/`gid` apply when the caller is root;
    `namespaces=False` turns the namespaces off (for debugging a machine where they
    misbehave; logged)."""

    timeout_s: float = 5.0
    memory_mb: int = 1024
    max_procs: int = 32
    file_mb: int = 16
    disk_mb: int = 32
    max_files: int = 1024
    total_memory_mb: int = 1024
    open_files: int = 256
    output_bytes: int = 64 * 1024
    uid: int = 65534
    gid: int = 65534
    namespaces: bool = True


@dataclass
class SandboxResult:
    """status is one of passed, failed, timeout, memory, disk, error: "memory" is a MemoryError
    or a run killed for its total memory; "disk" a run killed by the parent's polling for
    its total disk use (under the kernel's tmpfs cap, a write past it fails with ENOSPC, so
    the program usually ends "failed"); "error" is the sandbox's fault."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _warn_once(what: str) -> None:
    if what not in _WARNED:
        _WARNED.add(what)
        log.warning("sandbox: protection unavailable: %s", what)


def _reachable(path: str, uid: int, gid: int, bit: int = stat.S_IROTH) -> bool:
    """Whether `uid` can reach `path` and has `bit` on it, by the permission bits alone."""
    def allows(st: os.stat_result, bit: int) -> bool:
        shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
        return bool(st.st_mode & (bit << shift))

    parts = os.path.abspath(path).split(os.sep)
    for i in range(1, len(parts)):
        try:
            if not allows(os.stat(os.sep.join(parts[:i]) or os.sep), stat.S_IXOTH):
                return False
        except OSError:
            return False
    return os.path.exists(path) and allows(os.stat(path), bit)


def _interpreter(limits: SandboxLimits, base: str) -> tuple[list[str], list[str] | None, dict]:
    """(argv head, bind (source, target) or None, extra env) for running the program."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    if os.geteuid() != 0 or _reachable(os.path.join(prefix, "lib"), limits.uid, limits.gid) \
            and _reachable(exe, limits.uid, limits.gid, stat.S_IXOTH):
        return [exe], None, {}
    if not exe.startswith(prefix + os.sep):
        return [exe], None, {}  # no way to expose it; the launcher reports the failure
    # The interpreter sits below a directory the sandbox uid cannot enter (e.g. pyenv in
    # /root): mount its prefix, read-only, at a path it can reach.
    target = os.path.join(base, "python")
    os.mkdir(target, 0o755)
    env = {"LD_LIBRARY_PATH": os.path.join(target, "lib")}  # beats an absolute RUNPATH
    return [os.path.join(target, os.path.relpath(exe, prefix))], [prefix, target], env


def _run_dirs(limits: SandboxLimits) -> tuple[str, str]:
    """(base, workdir): base is ours (0755), workdir belongs to the sandbox uid (0700)."""
    parent = tempfile.gettempdir()
    if os.geteuid() == 0 and not _reachable(parent, limits.uid, limits.gid, stat.S_IXOTH):
        parent = "/tmp"  # e.g. TMPDIR under /root: the sandbox uid could not reach its cwd
    base = tempfile.mkdtemp(prefix="mindxh-sandbox-", dir=parent)
    os.chmod(base, 0o755)
    work = os.path.join(base, "work")
    os.mkdir(work, 0o700)
    if os.geteuid() == 0:
        os.chown(work, limits.uid, limits.gid)
    return base, work


def run_python(code: str, limits: SandboxLimits | None = None, strict: bool = False) -> SandboxResult:
    """Run `code` as a Python program in the sandbox; never raises for anything the code does.

    `strict=True` refuses to run (status "error") where any protection is unavailable.
    """
    limits = limits or SandboxLimits()
    t0 = time.monotonic()
    base, work = _run_dirs(limits)
    cgroup, missing = _run_cgroup(limits)
    try:
        # surrogatepass: a lone surrogate (valid JSON, not UTF-8) is written as the bytes it
        # stands for, and the interpreter's decoding error fails the run instead of this call
        with open(os.path.join(work, "main.py"), "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(code)
        if os.geteuid() == 0:
            os.chown(os.path.join(work, "main.py"), limits.uid, limits.gid)
        head, bind, env_extra = _interpreter(limits, base)
        if strict and missing:
            return SandboxResult("error", None, "", "; ".join(missing), time.monotonic() - t0)
        return _launch(limits, work, head, bind, env_extra, cgroup, missing, strict, t0)
    finally:
        if cgroup is not None:
            cgroup.kill_all()
            cgroup.remove()
        shutil.rmtree(base, ignore_errors=True)


def _run_cgroup(limits: SandboxLimits) -> tuple[RunCgroup | None, list[str]]:
    """The run's cgroup, if any, and which of its caps are missing (as protections)."""
    if os.geteuid() != 0:
        cgroup, why = None, ["not root"]
    else:
        memory = limits.total_memory_mb << 20 if KERNEL_CAPS else None
        cgroup, why = RunCgroup.create(limits.max_procs, memory)
        why += [] if KERNEL_CAPS else ["memory: turned off"]
    dirs = cgroup.dirs if cgroup else {}
    missing = [] if "pids" in dirs else [f"per-run pids cgroup ({'; '.join(why)}); "
                                         "RLIMIT_NPROC still caps processes"]
    if "memory" not in dirs:
        missing.append(f"kernel cap on total memory ({'; '.join(why)}); the parent polls it")
    return cgroup, missing


def _launch(limits, work, head, bind, env_extra, cgroup, missing, strict, t0) -> SandboxResult:
    base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env = {**base_env, "HOME": work, "TMPDIR": work, "PYTHONIOENCODING": "utf-8", **env_extra}
    ctrl_r, ctrl_w = os.pipe()
    cfg = {"ctrl_fd": ctrl_w, "workdir": work, "cgroups": cgroup.paths if cgroup else [],
           "uid": limits.uid, "gid": limits.gid, "python_bind": bind, "env": env,
           "argv": head + ["-I", "-S", "-B", os.path.join(work, "main.py")],
           "memory_bytes": limits.memory_mb << 20, "file_bytes": limits.file_mb << 20,
           "cpu_s": int(math.ceil(limits.timeout_s)) + 1, "open_files": limits.open_files,
           "nproc": max(4 * limits.max_procs, 64), "strict": strict,
           "namespaces": limits.namespaces, "disk_tmpfs": KERNEL_CAPS,
           "disk_bytes": limits.disk_mb << 20, "max_files": limits.max_files}
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", _LAUNCHER, json.dumps(cfg)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(ctrl_w,), cwd=work, env=base_env,
                                start_new_session=True)
    except OSError as exc:
        os.close(ctrl_r)
        return SandboxResult("error", None, "", f"cannot start the sandbox: {exc}", 0.0)
    finally:
        os.close(ctrl_w)
    init_fd = None
    watch = Watchdog(work, limits.disk_mb << 20, limits.max_files + 1,  # + main.py
                     limits.total_memory_mb << 20, cgroup, proc.pid)
    try:
        out, err, ctrl, stop = _collect(proc, ctrl_r, limits, time.monotonic(), watch)
        msgs = [json.loads(line) for line in ctrl.splitlines()]
        init_fd = next((init_pidfd(m["init_pid"], proc.pid) for m in msgs if m.get("init_pid")),
                       None)
        return _result(proc, out, err, msgs, watch.final() or stop, missing, t0)
    finally:
        kill_everything(proc, init_fd)
        os.close(ctrl_r)


def _collect(proc: subprocess.Popen, ctrl_r: int, limits: SandboxLimits, started: float,
             watch: Watchdog):
    """Read stdout/stderr (capped) and the control pipe until all close, the launcher exits
    (plus a short grace), the deadline, or a whole-run cap is exceeded; (out, err, ctrl,
    stop), stop being None, "timeout" or the watchdog's "memory"/"disk"."""
    sel = selectors.DefaultSelector()
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), ctrl_r: bytearray()}
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    deadline, exited_at, stop = started + limits.timeout_s, None, None
    while True:
        now = time.monotonic()
        if now >= deadline:
            stop = "timeout"
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is None and (stop := watch.check(now)):
            break  # polled only while the program runs: one cheap look per 20 ms
        if exited_at is not None and (not sel.get_map() or now - exited_at > 0.2):
            break  # the launcher is gone; whatever still holds a pipe is a leftover
        if not sel.get_map():  # pipes closed, program still running
            try:
                proc.wait(timeout=min(deadline - now, 0.02))
            except subprocess.TimeoutExpired:
                pass
            continue
        for key, _ in sel.select(timeout=min(deadline - now, 0.02)):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fd)
                continue
            cap = 1 << 20 if key.fd == ctrl_r else limits.output_bytes
            buf = bufs[key.fd]
            buf += chunk[:max(0, cap - len(buf))]
    sel.close()
    text = [bytes(b).decode("utf-8", "replace") for b in bufs.values()]
    return text[0], text[1], text[2], stop


def _result(proc, out, err, msgs, stop, missing, t0) -> SandboxResult:
    wall = time.monotonic() - t0
    code, sig, error = None, None, None
    for msg in msgs:
        missing += msg.get("missing", [])
        if "warn" in msg:
            _warn_once(msg["warn"])
        code = msg.get("exit", code)
        sig = msg.get("signal", sig)
        error = msg.get("error", error)
    for what in missing:
        _warn_once(what)
    if error:
        return SandboxResult("error", None, out, f"{err}\nsandbox: {error}".lstrip(), wall)
    if stop is not None:  # killed: for a whole-run cap ("memory", "disk") or the deadline
        return SandboxResult(stop, None, out, err, wall)
    if code is None and sig is None:  # no pid namespace: the launcher became the program
        rc = proc.poll()
        code, sig = (rc, None) if rc is None or rc >= 0 else (None, -rc)
    if sig == signal.SIGXCPU:
        return SandboxResult("timeout", -sig, out, err, wall)
    rc = code if sig is None else -sig
    if rc == 0:
        status = "passed"
    else:
        status = "memory" if "MemoryError" in err[-2000:] else "failed"
    return SandboxResult(status, rc, out, err, wall)
