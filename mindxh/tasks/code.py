"""The synthetic code task: specs, splits, seed streams, and reading a program from a response.

Specs come from `mindxh.data.synthetic_code` (deterministic in `(seed, index)`); the hash of
the *function* decides its split, so a held-out spec asks for a function that no training
spec asks for. The streams mirror the math task's (tasks/arith.py), with the same stream
offsets: cold-start worked solutions, GRPO specs (tests only, no solutions), SFT
validation, GRPO validation and the test set, each disjoint from the others.

Grading runs the hidden tests in the sandbox, a layer above this one:
`mindxh.rewards.code.grade_programs`.
"""
from __future__ import annotations

from mindxh.data.synthetic_code import CodeProblem, iter_code_problems
from mindxh.tasks.arith import RL_STREAM
from mindxh.tasks.format import answer_text

__all__ = ["CodeProblem", "cold_start_samples", "heldout_problems", "program_of", "rl_problems"]


def program_of(response: str) -> str | None:
    """The program inside `<answer>...</answer>`, or None if there is none."""
    return answer_text(response)


def heldout_problems(seed: int, level: int, n: int) -> list[CodeProblem]:
    """The first `n` held-out specs of stream `seed` (never in any training stream)."""
    it = iter_code_problems(seed, "heldout", [level])
    return [next(it)[1] for _ in range(n)]


def cold_start_samples(seed: int, level: int, n: int) -> list[dict]:
    """Worked solutions SFT may use: the first `n` training specs of stream `seed`."""
    it = iter_code_problems(seed, "train", [level])
    return [{"prompt": p.prompt(), "response": p.response()}
            for _, p in (next(it) for _ in range(n))]


def rl_problems(seed: int, level: int, start: int, n: int) -> tuple[list[CodeProblem], int]:
    """`n` GRPO specs from stream index `start` on; returns them and the next index."""
    it = iter_code_problems(seed + RL_STREAM, "train", [level], start)
    out, next_index = [], start
    for _ in range(n):
        index, problem = next(it)
        out.append(problem)
        next_index = index + 1
    return out, next_index
