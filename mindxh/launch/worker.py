"""`python -m mindxh.launch.worker EXIT_DIR ARGS...`: run `python ARGS...` as one msrun process
and write its exit status to EXIT_DIR/<worker_RANK|scheduler>.exit.

msrun's workers are msrun's children in their own sessions, so the launcher cannot wait()
on them, and msrun only reports a failed rank in its log, and only after its own poll. This
wrapper makes every rank's exit status a file the supervisor can read the moment it exists.
It shares the rank's process group, so killing that group kills both.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

EXIT_SUFFIX = ".exit"


def process_name(environ: Mapping[str, str] = os.environ) -> str:
    """The name msrun gives this process's log: `scheduler` or `worker_<rank>`."""
    if environ.get("MS_ROLE") == "MS_SCHED":
        return "scheduler"
    return f"worker_{environ.get('RANK_ID', 'unknown')}"


def main(argv: list[str]) -> int:
    exit_dir, args = Path(argv[0]), argv[1:]
    child = subprocess.Popen([sys.executable, *args])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # pass on, then record what happens
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    code = child.wait()
    tmp = exit_dir / f".{process_name()}{EXIT_SUFFIX}.tmp"
    tmp.write_text(str(code))
    tmp.replace(exit_dir / f"{process_name()}{EXIT_SUFFIX}")  # atomic: never read half-written
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
