"""Whole-run caps of the code sandbox: total memory over all of a run's processes, and total
disk use and file count of its work directory, where each process and each file stays under
its own limit. Every attack runs on whatever this machine's kernel enforces (memory cgroup,
size-capped tmpfs) and on the parent's polling fallback, forced (with and without a cgroup
listing the run's processes).
"""
from __future__ import annotations

import logging
import os
import textwrap

import pytest
from conftest import sandbox_host_check

from mindxh.rewards import _cgroup, sandbox
from mindxh.rewards.sandbox import SandboxLimits, run_python

# A sandbox uid of its own, so that test_sandbox.py running alongside (xdist) and these
# tests cannot see each other's processes, nor share RLIMIT_NPROC.
SMALL = SandboxLimits(timeout_s=8.0, memory_mb=150, total_memory_mb=200, disk_mb=4,
                      max_files=64, file_mb=2, uid=65533, gid=65533)


@pytest.fixture
def host_unharmed(monkeypatch):
    with sandbox_host_check(monkeypatch, SMALL.uid, "caps"):
        yield


def _no_cgroup(cls, *args):
    return None, ["turned off by the test"]


@pytest.fixture(params=["kernel", "polled", "polled-no-cgroup"])
def mode(request, monkeypatch):
    """kernel: what this machine enforces; polled: no memory cgroup or tmpfs (the parent
    polls); polled-no-cgroup: not even a pids cgroup (the parent reads the run from /proc)."""
    if request.param != "kernel":
        monkeypatch.setattr(sandbox, "KERNEL_CAPS", False)
    if request.param == "polled-no-cgroup":
        monkeypatch.setattr(sandbox.RunCgroup, "create", classmethod(_no_cgroup))
    return request.param


@pytest.fixture(scope="module")
def tmpfs_cap() -> bool:
    """Whether this machine puts the kernel's size-capped tmpfs on the work directory."""
    probe = "import os\ns = os.statvfs('.')\nprint(s.f_blocks * s.f_frsize, s.f_files)"
    result = run_python(probe, SMALL)
    assert result.status == "passed", result
    return result.stdout.split() == [str(SMALL.disk_mb << 20), str(SMALL.max_files + 2)]


def _disk_outcome(result, mode: str, tmpfs_cap: bool) -> None:
    """Past the disk cap: ENOSPC under the kernel's tmpfs, else killed by the parent."""
    if mode == "kernel" and tmpfs_cap:
        assert result.status == "failed", result
        assert "No space left on device" in result.stderr, result.stderr[-500:]
        assert "wrote all" not in result.stdout
    else:
        assert result.status == "disk", result


FORK_HOGS = textwrap.dedent("""
    import os, sys, time
    kids = []
    for _ in range({n}):
        pid = os.fork()
        if pid == 0:
            hog = b"\\1" * ({mb} << 20)  # resident: every page written
            time.sleep({sleep})
            os._exit(0)
        kids.append(pid)
    failed = sum(os.waitpid(pid, 0)[1] != 0 for pid in kids)
    print("children failed:", failed)
    sys.exit(1 if failed else 0)
""")


def test_forked_children_over_total_memory_are_stopped(mode, host_unharmed):
    # 6 x 60 MB: each child far under its 150 MB address space, together far over 200 MB
    result = run_python(FORK_HOGS.format(n=6, mb=60, sleep=5), SMALL)
    assert result.status == "memory", (result.status, result.stderr[-500:])
    assert result.wall_s < 4.0, result  # stopped, not left to sleep out its 5 s


def test_many_files_over_total_disk_fail_and_leave_nothing(mode, tmpfs_cap, host_unharmed):
    # 10 x 1 MB: each file under file_mb (2 MB), together over disk_mb (4 MB)
    writer = textwrap.dedent("""
        for i in range(10):
            with open(f"f{i}", "wb") as f:
                f.write(b"x" * (1 << 20))
        print("wrote all")
    """)
    result = run_python(writer, SMALL)
    _disk_outcome(result, mode, tmpfs_cap)
    # host_unharmed: the run directory (and with it every file) is gone


def test_many_tiny_files_over_the_file_cap_fail(mode, tmpfs_cap, host_unharmed):
    maker = textwrap.dedent("""
        for i in range(200):  # max_files is 64
            open(f"empty{i}", "w").close()
        print("wrote all")
    """)
    result = run_python(maker, SMALL)
    _disk_outcome(result, mode, tmpfs_cap)


def test_program_within_both_caps_passes(mode, host_unharmed):
    program = textwrap.dedent("""
        import os
        os.mkdir("sub")
        for i in range(20):  # 20 small files, 1.5 MB in 3 more, all within the caps
            with open(f"sub/f{i}", "w") as f:
                f.write(str(i))
        for i in range(3):
            with open(f"big{i}", "wb") as f:
                f.write(b"y" * (512 << 10))
        assert sorted(os.listdir("sub"))[:2] == ["f0", "f1"]
    """) + FORK_HOGS.format(n=2, mb=30, sleep=0.2)
    result = run_python(program, SMALL)
    assert result.status == "passed", (result.status, result.stderr[-500:])
    assert result.stdout == "children failed: 0\n"


def test_polled_fallback_is_logged(monkeypatch, caplog, host_unharmed):
    monkeypatch.setattr(sandbox, "KERNEL_CAPS", False)
    monkeypatch.setattr(sandbox, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="mindxh.rewards.sandbox"):
        result = run_python("print('ran')", SMALL)
    assert result.status == "passed", result
    assert "protection unavailable: kernel cap on total memory" in caplog.text
    assert "protection unavailable: kernel cap on total disk use" in caplog.text
    strict = run_python("print('ran')", SMALL, strict=True)
    assert strict.status == "error" and "kernel cap on total memory" in strict.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not _cgroup._parent_dir("memory")[0],
                    reason="no writable memory cgroup here")
def test_memory_cgroup_is_used_where_writable(host_unharmed):
    probe = "print(open('/proc/self/cgroup').read())"
    result = run_python(probe, SMALL)
    assert result.status == "passed", result
    line = next(x for x in result.stdout.splitlines() if ":memory:" in x or x.startswith("0::"))
    assert f"/{_cgroup.RunCgroup.prefix}" in line, result.stdout  # the run's own


def test_tmpfs_is_used_where_there_is_a_mount_namespace(tmpfs_cap, host_unharmed):
    # the launcher's mount namespace makes / read-only; that is where the tmpfs can be had
    result = run_python("import os\nprint(bool(os.statvfs('/').f_flag & os.ST_RDONLY))", SMALL)
    assert result.status == "passed", result
    assert tmpfs_cap == (result.stdout == "True\n"), (tmpfs_cap, result.stdout)
