"""Runs inside the sandbox (as `python -I -S`, standard library only): many programs, one
process each, forked from this driver, each computing `f` on its inputs.

The driver receives programs and *inputs only*; the expected outputs stay on the host,
which compares them (rewards/code.py). So a program that exits early with status 0, prints
fake results or tampers with its siblings cannot pass: passing needs f's right outputs.
Each child runs with a wall-clock alarm and is killed at its deadline; the driver prints
one marker line with every program's outputs (a list of reprs, or null on any failure).
"""
import json
import os
import select
import signal
import sys
import time


def _child(program, inputs, w):
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
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    try:
        return json.loads(buf.decode())
    except ValueError:
        return None


def main():
    jobs = json.loads(JOBS)  # noqa: F821 (set by the host)
    results = [_one(program, inputs) for program, inputs in jobs]
    sys.stdout.write("\n" + MARKER + json.dumps(results) + "\n")  # noqa: F821 (set by the host)
    sys.stdout.flush()


main()
