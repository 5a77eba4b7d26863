"""Run `python ARGS...` on N local ranks under msrun, and never leave a job hanging.

msrun alone can hang for minutes after a rank dies: it kills the other workers, then waits
on its scheduler, which only gives up after the cluster's heartbeat timeout; and a rank
blocked in a collective waits forever. So msrun runs in its own session, each of its
processes under `mindxh.launch.worker` (which writes the exit status msrun keeps to itself),
and `supervise` polls those statuses, the ranks' processes and msrun: at the first failure
it kills every process of the job (`mindxh.launch.procs`) and raises `LaunchFailed` with
the failed rank's log tail. Ctrl-C (or SIGTERM) tears the job down the same way.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mindxh.errors import MindxhError
from mindxh.launch import procs
from mindxh.launch.worker import EXIT_SUFFIX, LAUNCHER_ENV, process_name

__all__ = ["LaunchFailed", "LaunchResult", "free_port", "msrun_command", "supervise"]

log = logging.getLogger(__name__)

TAIL_LINES = 30
MSRUN_LOG = "msrun.log"  # msrun's own output (what it started, and its errors)
EXIT_DIR = "exit"


class LaunchFailed(MindxhError, RuntimeError):
    """A rank (or msrun) failed; the whole job was killed. `tail` is the failed process's log."""

    def __init__(self, message: str, rank: int | None, status: int | None, log_path: Path,
                 tail: str):
        super().__init__(message)
        self.rank, self.status, self.log_path, self.tail = rank, status, log_path, tail


@dataclass(frozen=True)
class LaunchResult:
    log_dir: Path
    wall_s: float


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks one for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def msrun_command(nproc: int, log_dir: Path, args: list[str], port: int | None = None) -> list[str]:
    """msrun (run by this interpreter) starting `python -m mindxh.launch.worker EXIT_DIR ARGS`
    on nproc local ranks. No tailing of worker logs: the supervisor reads them itself."""
    return [sys.executable, "-m", "mindspore.parallel.cluster.run",  # what the `msrun` script runs
            f"--worker_num={nproc}", f"--local_worker_num={nproc}", "--master_addr=127.0.0.1",
            f"--master_port={port or free_port()}", f"--log_dir={log_dir}", "--join=True",
            f"--tail_worker_log={nproc}",  # a rank that does not exist: tail none
            "python", "-m", "mindxh.launch.worker", str(log_dir / EXIT_DIR), *args]


def _status_text(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept)


class _Job:
    """One running msrun and what the supervisor has learnt about its processes."""

    def __init__(self, log_dir: Path, proc: subprocess.Popen, token: str):
        self.log_dir, self.proc, self.token = log_dir, proc, token
        self.groups = {proc.pid}  # msrun's session; each rank adds its own
        self.seen: set[str] = set()  # processes (worker_R, scheduler) seen running
        self._offset, self._partial = 0, b""

    def exits(self) -> dict[str, tuple[int, float]]:
        """name -> (exit status, time written) for every process that has finished."""
        out = {}
        for path in (self.log_dir / EXIT_DIR).glob(f"*{EXIT_SUFFIX}"):
            try:
                out[path.name[: -len(EXIT_SUFFIX)]] = (int(path.read_text()), path.stat().st_mtime)
            except (OSError, ValueError):
                pass  # being replaced right now: read on the next poll
        return out

    def running(self) -> set[str]:
        live = [p for p in procs.job_processes(self.token) if not p.zombie and "MS_ROLE" in p.env]
        self.groups |= {p.pgid for p in live}
        names = {process_name(p.env) for p in live}
        self.seen |= names
        return names

    def failure(self) -> LaunchFailed | None:
        """The first process that failed (by exit status, or gone without one), or None."""
        running = self.running()  # before the exit files: a process writes its file, then exits
        exits = self.exits()
        failed = sorted((t, name, s) for name, (s, t) in exits.items() if s != 0)
        if failed:
            _, name, status = failed[0]
            return self._failed(name, status)
        vanished = sorted(self.seen - running - set(exits))
        if vanished:
            return self._failed(vanished[0], None)
        code = self.proc.poll()
        if code is not None and code != 0:
            log = self.log_dir / MSRUN_LOG
            return LaunchFailed(f"msrun {_status_text(code)} (log: {log})", None, code, log, _tail(log))
        return None

    def _failed(self, name: str, status: int | None) -> LaunchFailed:
        log = self.log_dir / f"{name}.log"
        what = _status_text(status) if status is not None else "died without an exit status"
        rank = int(name[7:]) if name.startswith("worker_") and name[7:].isdigit() else None
        who = f"rank {rank}" if rank is not None else name
        return LaunchFailed(f"{who} {what}; stopped the job (log: {log})", rank, status, log, _tail(log))

    def rank0_lines(self) -> list[str]:
        """Complete lines rank 0 wrote since the last call."""
        try:
            with open(self.log_dir / "worker_0.log", "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [line.decode(errors="replace").rstrip("\r") for line in lines]


def _clear(log_dir: Path) -> None:
    """Move a previous launch's logs to `previous/` (replacing older ones) and remove its exit
    files: stale ones would read as this job's, and a refused launch must not erase the
    logs of the run it refused to overwrite."""
    (log_dir / EXIT_DIR).mkdir(parents=True, exist_ok=True)
    logs = [*log_dir.glob("worker_*.log"), log_dir / "scheduler.log", log_dir / MSRUN_LOG]
    logs = [p for p in logs if p.is_file()]
    if logs:
        previous = log_dir / "previous"
        shutil.rmtree(previous, ignore_errors=True)
        previous.mkdir()
        for path in logs:
            path.rename(previous / path.name)
    for path in (log_dir / EXIT_DIR).iterdir():
        path.unlink(missing_ok=True)


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt


def supervise(nproc: int, args: list[str], log_dir: str | Path,
              on_rank0_line: Callable[[str], None] | None = None, poll_s: float = 0.5,
              env: dict[str, str] | None = None) -> LaunchResult:
    """Run `python ARGS...` on nproc ranks under msrun until all exit 0 (returns) or one fails
    (kills the job, raises LaunchFailed); every line of rank 0's log goes to on_rank0_line."""
    log_dir = Path(log_dir).resolve()
    _clear(log_dir)
    token = uuid.uuid4().hex
    bin_dir = os.path.dirname(sys.executable)  # msrun starts `python` from PATH: ours first
    full_env = {**os.environ, **(env or {}), procs.TOKEN_ENV: token, "PYTHONUNBUFFERED": "1",
                "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                LAUNCHER_ENV: str(os.getpid())}  # ranks outlive no launcher, even a kill -9'd one
    start = time.monotonic()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # `kill LAUNCHER` tears down too,
        for sig in (signal.SIGTERM, signal.SIGHUP):  # and so does a closed terminal or ssh,
            if signal.getsignal(sig) != signal.SIG_IGN:  # unless ignored (nohup): that stays
                previous[sig] = signal.signal(sig, _raise_interrupt)
    try:
        with open(log_dir / MSRUN_LOG, "wb") as out:
            proc = subprocess.Popen(msrun_command(nproc, log_dir, args), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=full_env, start_new_session=True)
        job = _Job(log_dir, proc, token)
        try:
            while True:
                finished = proc.poll() == 0  # first: what is read after this is complete
                failure = job.failure()
                for line in job.rank0_lines():
                    if on_rank0_line is not None:
                        on_rank0_line(line)
                if failure is not None:
                    raise failure
                if finished:
                    break
                time.sleep(poll_s)
        finally:
            left = procs.kill_job(token, job.groups)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if left:
                log.warning("could not kill processes %s of the job", left)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    exits = job.exits()
    missing = [r for r in range(nproc) if exits.get(f"worker_{r}", (None,))[0] != 0]
    if missing:  # msrun said success, yet a rank has no (zero) exit status
        raise job._failed(f"worker_{missing[0]}", exits.get(f"worker_{missing[0]}", (None,))[0])
    return LaunchResult(log_dir, time.monotonic() - start)
