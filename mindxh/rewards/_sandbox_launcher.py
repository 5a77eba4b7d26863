"""Sandbox launcher: sets up the cage, then becomes (or forks) the untrusted program.

Run by `mindxh.rewards.sandbox` as `python -I -S this_file CONFIG_JSON`, in a new session,
with the privileges of the caller. Standard library only (it runs without site-packages).
In order: join the per-run cgroup, unshare namespaces (mount, network, pid, ipc; plus a
user namespace when not root), make the whole filesystem read-only, mount a size- and
inode-capped tmpfs on the work directory (the one writable place; main.py is copied in),
set resource limits, drop to the sandbox uid, exec the program. With a pid
namespace the program runs as its init, so when it exits the kernel kills everything it
left behind. Each protection that cannot be had is reported on the control pipe, as
JSON lines, and the parent logs it; setup errors end the run before any untrusted code.
"""
import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
SYS_MOUNT_SETATTR, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, 0x8000, 1
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
libc.syscall.restype = ctypes.c_long


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, what, data=None):
    enc = [None if x is None else x.encode() for x in (source, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), what)


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _read_only_everywhere():
    """Every mount read-only: one recursive mount_setattr (Linux 5.12+), else one by one."""
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    ret = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(-100), b"/",
                       ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr),
                       ctypes.c_size_t(ctypes.sizeof(attr)))
    if ret == 0:
        return
    keep = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        point = fields[4].encode().decode("unicode_escape")  # "\040" is a space
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in fields[5].split(","):
            flags |= keep.get(opt, 0)
        try:
            _mount(None, point, None, flags, f"remount {point} read-only")
        except OSError as exc:
            if os.path.realpath(point) in ("/", "/tmp", "/var/tmp", "/dev/shm"):
                raise
            report(warn=f"read-only remount of {point} failed ({exc.strerror})")


def _writable_bind(path):
    _mount(path, path, None, MS_BIND, f"bind {path}")
    _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, f"remount {path} rw")


def _work_tmpfs(cfg, drop):
    """A tmpfs capped at disk_bytes and max_files entries (+ its root and main.py) over the
    work directory, so the run's total disk use is bounded by the kernel: ENOSPC past it."""
    work = cfg["workdir"]
    with open(os.path.join(work, "main.py"), "rb") as f:
        code = f.read()
    opts = f"size={cfg['disk_bytes']},nr_inodes={cfg['max_files'] + 2},mode=0700"
    if drop:
        opts += f",uid={cfg['uid']},gid={cfg['gid']}"
    _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, f"tmpfs on {work}", opts)
    try:  # mounted: a failure from here on is the sandbox's, not a missing protection
        fd = os.open(os.path.join(work, "main.py"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, code)
            if drop:
                os.fchown(fd, cfg["uid"], cfg["gid"])
        finally:
            os.close(fd)
    except OSError as exc:
        raise RuntimeError(f"copying main.py into the tmpfs: {exc}") from exc


def report(**msg):
    os.write(CTRL, (json.dumps(msg) + "\n").encode())


def _unshare(flags, missing):
    """Unshare what can be unshared; name each namespace that cannot."""
    if libc.unshare(flags) == 0:
        return flags
    got = 0
    names = {CLONE_NEWUSER: "user", CLONE_NEWNS: "mount", CLONE_NEWNET: "network",
             CLONE_NEWPID: "pid", CLONE_NEWIPC: "ipc"}
    for bit, name in names.items():
        if flags & bit and libc.unshare(bit) == 0:
            got |= bit
        elif flags & bit:
            missing.append(f"{name} namespace ({os.strerror(ctypes.get_errno())})")
    return got


def _map_self(uid, gid):
    """Inside a fresh user namespace, map our own uid/gid (so files keep their owner)."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def _limits(cfg):
    """Resource limits; never above a hard limit we were given (only root may raise one)."""
    for res, value in ((resource.RLIMIT_AS, cfg["memory_bytes"]),
                       (resource.RLIMIT_CPU, cfg["cpu_s"]),  # SIGXCPU at soft, SIGKILL at hard
                       (resource.RLIMIT_FSIZE, cfg["file_bytes"]),
                       (resource.RLIMIT_NOFILE, cfg["open_files"]), (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_NPROC, cfg["nproc"])):
        hard = value + 1 if res == resource.RLIMIT_CPU else value
        old_hard = resource.getrlimit(res)[1]
        if old_hard != resource.RLIM_INFINITY:
            hard = min(hard, old_hard)
        resource.setrlimit(res, (min(value, hard), hard))


def _become_program(cfg, drop, in_pid_ns):
    """Drop privileges and exec the program; never returns."""
    if drop:
        os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if in_pid_ns:  # if the launcher dies, so does the program (and with it the namespace)
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    os.set_inheritable(CTRL, False)
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])


def main():
    cfg = json.loads(sys.argv[1])
    missing = []
    for path in cfg["cgroups"]:
        try:
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError as exc:
            missing.append(f"per-run cgroup caps (joining the cgroup: {exc.strerror})")
    root = os.geteuid() == 0
    drop = root and cfg["uid"] != 0
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | (0 if root else CLONE_NEWUSER)
    if cfg["namespaces"]:
        got = _unshare(flags, missing)
    else:
        got = 0
        missing.append("namespaces (turned off: no network, mount, pid or ipc isolation)")
    if got & CLONE_NEWUSER:
        _map_self(uid, gid)
    if got & CLONE_NEWNS:
        try:
            _mount(None, "/", None, MS_REC | MS_PRIVATE, "make mounts private")
            _read_only_everywhere()
            if cfg["python_bind"]:
                source, target = cfg["python_bind"]
                _mount(source, target, None, MS_BIND | MS_REC, f"bind {source}")
            tmpfs = False
            if cfg["disk_tmpfs"]:
                try:
                    _work_tmpfs(cfg, drop)
                    tmpfs = True
                except OSError as exc:
                    missing.append("kernel cap on total disk use (tmpfs: "
                                   f"{os.strerror(exc.errno or 0)}); the parent polls it")
            else:
                missing.append("kernel cap on total disk use (turned off); the parent polls it")
            if not tmpfs:
                _writable_bind(cfg["workdir"])
            os.chdir(cfg["workdir"])  # the old cwd still points below the read-only mount
        except OSError as exc:
            report(error=f"sandbox filesystem setup failed: {exc}")
            return 126
    elif cfg["python_bind"]:
        report(error=f"the interpreter in {cfg['python_bind'][0]} is not reachable by uid "
                     f"{cfg['uid']}, and without a mount namespace it cannot be exposed",
               missing=missing)
        return 126
    else:
        missing.append("read-only filesystem outside the work directory (no mount namespace)")
        missing.append("kernel cap on total disk use (no mount namespace); the parent polls it")
    if root and not drop:
        missing.append("unprivileged uid (the program runs as root)")
    if not got & CLONE_NEWPID:
        missing.append("kill-all on exit (no pid namespace; falling back to the process group)")
    if cfg["strict"] and missing:
        report(error="strict sandbox refused to run without: " + "; ".join(missing))
        return 126
    _limits(cfg)
    if not got & CLONE_NEWPID:
        report(missing=missing, init_pid=None)
        _become_program(cfg, drop, False)
    pid = os.fork()
    if pid == 0:
        try:
            if got & CLONE_NEWNS:
                try:
                    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mount /proc")
                except OSError as exc:
                    report(warn=f"own /proc ({exc.strerror}): host processes stay visible")
            _become_program(cfg, drop, True)
        except BaseException as exc:  # report, never fall through into the launcher's code
            report(error=f"starting the program failed: {exc}")
            os._exit(127)
    report(missing=missing, init_pid=pid)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        report(signal=os.WTERMSIG(status))
        return 128 + os.WTERMSIG(status)
    report(exit=os.WEXITSTATUS(status))
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    CTRL = int(json.loads(sys.argv[1])["ctrl_fd"])
    try:
        sys.exit(main())
    except Exception as exc:  # an unexpected setup failure: say so on the control pipe
        report(error=f"sandbox launcher failed: {type(exc).__name__}: {exc}")
        sys.exit(126)
