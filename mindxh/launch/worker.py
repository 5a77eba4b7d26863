"""`python -m mindxh.launch.worker EXIT_DIR ARGS...`: run `python ARGS...` as one msrun process
and write its exit status to EXIT_DIR/<worker_RANK|scheduler>.exit.

msrun's workers are msrun's children in their own sessions, so the launcher cannot wait()
on them, and msrun only reports a failed rank in its log, and only after its own poll. This
wrapper makes every rank's exit status a file the supervisor can read the moment it exists.
It shares the rank's process group, so killing that group kills both. It also watches the
launcher (MINDXH_LAUNCHER_PID): once that is gone, even by kill -9 (no teardown), the rank
is stopped, so no headless job goes on training into the run directory.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from mindxh.utils.fsio import pid_alive

EXIT_SUFFIX = ".exit"
LAUNCHER_ENV = "MINDXH_LAUNCHER_PID"
GRACE_S = 10.0  # from SIGTERM to SIGKILL when the launcher is gone


def process_name(environ: Mapping[str, str] = os.environ) -> str:
    """The name msrun gives this process's log: `scheduler` or `worker_<rank>`."""
    if environ.get("MS_ROLE") == "MS_SCHED":
        return "scheduler"
    return f"worker_{environ.get('RANK_ID', 'unknown')}"


def _watch_launcher(pid: int, child: subprocess.Popen, orphaned: threading.Event,
                    poll_s: float = 1.0) -> None:
    """Stop `child` (SIGTERM, then SIGKILL after GRACE_S) once process `pid` is gone."""
    while child.poll() is None:
        if not pid_alive(pid):
            orphaned.set()
            child.terminate()
            try:
                child.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
            return
        time.sleep(poll_s)


def main(argv: list[str]) -> int:
    exit_dir, args = Path(argv[0]), argv[1:]
    child = subprocess.Popen([sys.executable, *args])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # pass on, then record what happens
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    launcher, orphaned = os.environ.get(LAUNCHER_ENV, ""), threading.Event()
    if launcher.isdigit():
        threading.Thread(target=_watch_launcher, args=(int(launcher), child, orphaned),
                         daemon=True).start()
    code = child.wait()
    if orphaned.is_set():  # no status for a launcher that is gone: a new launch's logs may be
        return 128 + signal.SIGTERM  # here by now, and would read it as one of its own ranks
    tmp = exit_dir / f".{process_name()}{EXIT_SUFFIX}.tmp"
    tmp.write_text(str(code))
    tmp.replace(exit_dir / f"{process_name()}{EXIT_SUFFIX}")  # atomic: never read half-written
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
