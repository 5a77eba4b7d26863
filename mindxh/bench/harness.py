"""The measuring harness: child processes, alternated rounds, medians. No framework imports.

Rounds alternate the peers (A B C, A B C, ...) so that a burst of load from another job on a
shared machine lands on every peer alike instead of on whichever ran during it; the quoted
figure is the median over all timed steps of all rounds, with min and max beside it.
A peer that fails (not installed, a compile error, a timeout) is recorded with the reason
and not retried: such failures repeat, and the others' rounds go on.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from mindxh.bench.child import MARK

REPO_ROOT = Path(__file__).resolve().parents[2]
MF_PYTHON = REPO_ROOT / ".venv-mf" / "bin" / "python"


_log = logging.getLogger(__name__)


def log(message: str) -> None:
    """Progress on stderr through the CLI's log handler (it keeps the lines off stdout)."""
    _log.info("bench: %s", message)


def parse_result(stdout: str) -> dict | None:
    """The JSON after the last MARK line, or None when the child printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return None


def failure_reason(returncode: int, stderr: str) -> str:
    """One line saying why a child failed: its last error line (a Python exception, or
    MindSpore's / torch's own message), else its last line, with the exit status."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "Exception" in ln or "error:" in ln]
    text = (errors or lines or ["no output"])[-1]
    if returncode < 0:
        text = f"killed by signal {-returncode}; last line: {text}"
    return f"exit {returncode}: {text[:300]}"


def run_child(job: str, params: dict, python: str | Path | None = None, timeout: float | None = None,
              log_file: Path | None = None, env: dict[str, str] | None = None) -> dict:
    """Run `mindxh.bench.child JOB` in a fresh process; its result dict, or {"error": why}.
    `env` adds to this process's environment (set before the child imports anything).
    Its whole stdout and stderr go to `log_file` (kept for failures' details)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GLOG_v": os.environ.get("GLOG_v", "3"),
           **(env or {})}
    cmd = [str(python or sys.executable), "-m", "mindxh.bench.child", job, json.dumps(params)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as exc:
        _write_log(log_file, cmd, exc.stdout, exc.stderr)
        return {"error": f"timed out after {timeout:.0f} s"}
    except OSError as exc:  # e.g. the interpreter is missing
        return {"error": f"could not start {cmd[0]}: {exc}"}
    _write_log(log_file, cmd, proc.stdout, proc.stderr)
    result = parse_result(proc.stdout)
    if result is None or proc.returncode != 0:
        return {"error": failure_reason(proc.returncode, proc.stderr)}
    result["process_s"] = time.perf_counter() - t0
    return result


def _write_log(path: Path | None, cmd: list[str], stdout, stderr) -> None:
    if path is None:
        return
    as_text = lambda s: s.decode(errors="replace") if isinstance(s, bytes) else (s or "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{as_text(stdout)}\n--- stderr\n{as_text(stderr)}")


def alternate(peers: Iterable[str], repeats: int, measure: Callable[[str, int], dict]
              ) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """`repeats` rounds, each measuring every peer once in the same order; returns the
    successful results per peer and the first error of each peer that failed."""
    peers = list(peers)
    runs: dict[str, list[dict]] = {p: [] for p in peers}
    errors: dict[str, str] = {}
    for rnd in range(repeats):
        for peer in peers:
            if peer in errors:
                continue
            result = measure(peer, rnd)
            if "error" in result:
                errors[peer] = result["error"]
                log(f"  {peer}: {result['error']}")
            else:
                runs[peer].append(result)
    return runs, errors


def spread(values: Iterable[float]) -> dict:
    """Median, min, max and count of `values` (None for an empty list)."""
    values = list(values)
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value and base else None


def measure_peak(work: Path, size: int = 2048, repeats: int = 5) -> dict:
    """The float32 GEMM probe in a fresh process: every GEMM library of this venv, fastest kept."""
    return run_child("peak", {"size": size, "repeats": repeats}, log_file=work / "logs" / "peak.log")
