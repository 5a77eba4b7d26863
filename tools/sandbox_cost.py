"""What one program costs in the code sandbox, next to the floor of starting any Python at all.

    python tools/sandbox_cost.py [--n 200] [--polled]

Runs `--n` tiny programs (a correct small function and a few asserts, as GRPO grades them)
one after another through `run_python`, and as many `python -I -S -c pass` subprocesses
(the floor: an interpreter start, without any sandbox); prints mean, median and p95 ms per
program and programs/s for each, and which protections were active. `--polled` turns the
kernel's whole-run caps off (no memory cgroup or tmpfs), to price the parent's polling.
Then the way GRPO grades code: `grade_programs` on `--n` distinct synthetic specs with their
reference solutions (one sandbox run per chunk, a forked child per program), per program.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindxh.data.synthetic_code import generate_code  # noqa: E402
from mindxh.rewards import sandbox  # noqa: E402
from mindxh.rewards.code import GradeStats, grade_programs  # noqa: E402
from mindxh.rewards.sandbox import SandboxLimits, run_python  # noqa: E402

PROGRAM = """
def add_squares(xs):
    return sum(x * x for x in xs)

assert add_squares([]) == 0
assert add_squares([1, 2, 3]) == 14
assert add_squares(range(10)) == 285
print("ok")
"""

PROBE = r"""
import os
s = os.statvfs(".")
groups = [l.split(":", 2)[1] or "v2" for l in open("/proc/self/cgroup") if "mindxh-sandbox-" in l]
net = [l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]]
print(f"uid {os.getuid()}; pid {os.getpid()} (1 = own pid namespace); "
      f"/ read-only {bool(os.statvfs('/').f_flag & os.ST_RDONLY)}; "
      f"work dir {s.f_blocks * s.f_frsize >> 20} MiB, {s.f_files} inodes; "
      f"run cgroups {groups or 'none'}; network interfaces {net}")
"""


def _stats(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    mean = statistics.fmean(ms)
    print(f"{name:<28} mean {mean:7.1f} ms  median {statistics.median(ms):7.1f} ms  "
          f"p95 {p95:7.1f} ms  {1000 / mean:6.1f} programs/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--polled", action="store_true", help="no memory cgroup or tmpfs: poll")
    args = ap.parse_args()
    if args.polled:
        sandbox.KERNEL_CAPS = False
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("mindxh.rewards.sandbox").addHandler(handler)

    limits = SandboxLimits(timeout_s=5.0)
    probe = run_python(PROBE, limits)
    print(f"sandbox ({'root' if os.geteuid() == 0 else 'not root'}, {probe.status}): "
          f"{probe.stdout.strip() or probe.stderr.strip()}")
    for w in warnings:
        print(f"  missing: {w.split('unavailable: ', 1)[-1]}")
    print(f"limits: {limits}")

    ms, statuses = [], {}
    for _ in range(args.n):
        t = time.perf_counter()
        result = run_python(PROGRAM, limits)
        ms.append(1000 * (time.perf_counter() - t))
        statuses[result.status] = statuses.get(result.status, 0) + 1
    floor = []
    for _ in range(args.n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
        floor.append(1000 * (time.perf_counter() - t))
    print(f"{args.n} programs, statuses {statuses}")
    _stats("run_python", ms)
    _stats("python -I -S -c pass (floor)", floor)
    print(f"sandbox overhead over the floor: {statistics.median(ms) - statistics.median(floor):.1f}"
          " ms per program (median)")

    problems = [generate_code(0, i, 2) for i in range(args.n)]
    batches = []
    for _ in range(3):
        stats = GradeStats()
        passed = grade_programs(problems, [p.response() for p in problems], stats=stats)
        batches.append(stats.ms_per_program)
    print(f"grade_programs, {args.n} distinct programs per batch, 3 batches: "
          f"{sum(passed)}/{args.n} passed; {statistics.median(batches):.1f} ms per program "
          f"(median of {', '.join(f'{b:.1f}' for b in batches)}; wall time over programs run)")


if __name__ == "__main__":
    main()
