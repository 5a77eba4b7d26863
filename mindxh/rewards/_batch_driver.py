"""Runs inside the sandbox (as `python -I -S`, standard library only): many programs, one
process each, forked from this driver, each computing `f` on its inputs.

The driver receives programs and *inputs only*; the expected outputs stay on the host,
which compares them (rewards/code.py). So a program that exits early with status 0, prints
fake results or tampers with its siblings cannot pass: passing needs f's right outputs.
Each child runs in its own session with its output discarded and a wall-clock alarm, and is
killed at its deadline together with every process it started, before the next program
runs; the driver prints one marker line with every program's outputs (a list of reprs, or
null on any failure).
"""
import json
import os
import select
import signal
import sys
import time

DEVNULL = None  # an fd on /dev/null for the children's output; opened by main()


def _child(program, inputs, w):
    os.setsid()  # its own process group, killed with everything it started (_one)
    if DEVNULL is not None:  # its printing must not cut the driver's result line (output cap)
        os.dup2(DEVNULL, 1)
        os.dup2(DEVNULL, 2)
    try:
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)  # noqa: F821 (set by the host)
        ns = {"__name__": "__program__"}
        exec(compile(program, "<program>", "exec"), ns)
        data = json.dumps([repr(ns["f"](x)) for x in inputs]).encode()
    except BaseException:  # anything the program does wrong: no outputs
        data = b"null"
    try:
        while data:
            data = data[os.write(w, data):]
    finally:
        os._exit(0)


def _one(program, inputs):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(program, inputs, w)
    os.close(w)
    buf, deadline = b"", time.monotonic() + TIMEOUT_S + 0.5  # noqa: F821
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            buf = b"null"  # hung (or a grandchild holds the pipe): killed below
            break
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        buf += chunk
    os.close(r)
    _kill_leftovers(pid)
    try:
        return json.loads(buf.decode())
    except ValueError:
        return None


def _kill_leftovers(pid):
    """The child and whatever it started, before the next program runs: a process left
    behind could otherwise kill or slow its siblings (a saboteur's own advantage in GRPO).
    As init of the sandbox's pid namespace (the usual case), every other process in it;
    without one, the child's process group (a grandchild that left it by setsid escapes)."""
    if os.getpid() == 1:
        try:
            os.kill(-1, signal.SIGKILL)  # all but init itself
        except ProcessLookupError:
            pass
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    while True:  # reap the orphans init inherited; they die of the SIGKILL above
        try:
            if os.waitpid(-1, 0 if os.getpid() == 1 else os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def main():
    global DEVNULL
    try:
        DEVNULL = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        pass
    jobs = json.loads(JOBS)  # noqa: F821 (set by the host)
    results = [_one(program, inputs) for program, inputs in jobs]
    sys.stdout.write("\n" + MARKER + json.dumps(results) + "\n")  # noqa: F821 (set by the host)
    sys.stdout.flush()


if __name__ == "__main__":  # run by the sandbox with JOBS and MARKER set; importing it does nothing
    main()
