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

import re
import textwrap
from typing import Iterable, Mapping

from mindxh.data.synthetic_code import CodeProblem, iter_code_problems
from mindxh.tasks.arith import RL_STREAM
from mindxh.tasks.format import answer_text
from mindxh.tasks.stream import take

__all__ = ["CODE_ERRORS", "CodeProblem", "cold_start_samples", "code_error", "code_error_table",
           "heldout_problems", "program_of", "rl_problems"]

# where a wrong program first goes wrong, read from its evaluation record ("plan": the spec)
CODE_ERRORS = ("code: format", "code: plan", "code: program")
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.S)
_FENCE = re.compile(r"\s*```[\w+-]*[ \t]*\r?\n(.*?)\r?\n?[ \t]*```\s*", re.S)


def program_of(response: str) -> str | None:
    """The program inside `<answer>...</answer>`, or None if there is none. A Markdown fence
    around it (```python ... ```) is removed and a common indent taken off, as a model that
    did not learn this task's bare format writes it."""
    inner = answer_text(response, strip=False)
    if inner is None:
        return None
    fenced = _FENCE.fullmatch(inner)
    if fenced:
        inner = fenced.group(1)
    program = textwrap.dedent(inner.lstrip("\r\n").rstrip())
    first, sep, rest = program.partition("\n")
    return first.lstrip() + sep + rest  # a first line indented more than the rest (`<answer> x`)


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
    return take(iter_code_problems(seed + RL_STREAM, "train", [level], start), start, n)


def code_error(record: Mapping) -> str:
    """The first error of a wrong answer: no think block or no program (format); a plan that
    is not the spec's operations and constants, i.e. the spec misread (plan); or the right
    plan written as a wrong program (program: composition, precedence, Python)."""
    think = _THINK_BLOCK.search(record["response"])
    if think is None or program_of(record["response"]) is None:
        return "code: format"
    return "code: plan" if think.group(1).strip() != record["plan"] else "code: program"


def code_error_table(records: Iterable[Mapping]) -> dict[str, int]:
    """Category -> number of wrong code records whose first error it is."""
    table = dict.fromkeys(CODE_ERRORS, 0)
    for r in records:
        if not r["correct"]:
            table[code_error(r)] += 1
    return table
