"""The reward for code: 1.0 if the program passes its tests in the sandbox, else 0.0."""
from __future__ import annotations

from mindxh.rewards.sandbox import SandboxLimits, SandboxResult, run_python

__all__ = ["code_reward", "run_tests", "program_with_tests"]


def program_with_tests(program: str, test_code: str, entry_point: str | None = None) -> str:
    """`program`, then `test_code`, then `check(entry_point)` if given (the HumanEval layout)."""
    source = f"{program}\n\n{test_code}\n"
    return source + f"\ncheck({entry_point})\n" if entry_point else source


def run_tests(program: str, test_code: str, entry_point: str | None = None,
              limits: SandboxLimits | None = None) -> SandboxResult:
    """The sandbox's full report on `program` against its tests."""
    return run_python(program_with_tests(program, test_code, entry_point), limits)


def code_reward(program: str, test_code: str, entry_point: str | None = None,
                timeout_s: float = 5.0) -> float:
    """1.0 iff the tests pass: exit status 0 within `timeout_s` and the sandbox's limits."""
    result = run_tests(program, test_code, entry_point, SandboxLimits(timeout_s=timeout_s))
    return 1.0 if result.passed else 0.0
