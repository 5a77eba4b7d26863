"""Judging any task's responses: routes each problem to its task's check.

Math answers are compared exactly in this process (tasks/arith.py); code runs its hidden
tests in the sandbox (rewards/code.py), a batch at a time. GRPO's reward and every
held-out accuracy go through here, so a mixed batch is graded by task, in order.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from mindxh.rewards.code import GradeStats, grade_programs
from mindxh.tasks.arith import is_correct
from mindxh.tasks.format import format_ok
from mindxh.tasks.mix import prompt_ids
from mindxh.tokenizer import Tokenizer

__all__ = ["GreedyGenerator", "correct", "greedy_records", "rewards"]


def correct(problems: Sequence, responses: Sequence[str],
            stats: GradeStats | None = None) -> list[bool]:
    """Whether each response solves its problem, whatever the problems' tasks."""
    if len(problems) != len(responses):
        raise ValueError(f"{len(problems)} problems but {len(responses)} responses")
    out: list[bool | None] = [None] * len(problems)
    code = [i for i, p in enumerate(problems) if p.task == "code"]
    for i, p in enumerate(problems):
        if p.task == "math":
            out[i] = is_correct(responses[i], p.answer)
        elif p.task != "code":
            raise ValueError(f"no judge for task {p.task!r}")
    if code:
        passed = grade_programs([problems[i] for i in code], [responses[i] for i in code],
                                stats=stats)
        for i, ok in zip(code, passed):
            out[i] = ok
    return [bool(v) for v in out]


def rewards(problems: Sequence, responses: Sequence[str], format_weight: float,
            stats: GradeStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(reward, correct) per response: 1 if correct, plus `format_weight` for the exact
    `<think>..</think><answer>..</answer>` layout."""
    ok = np.array(correct(problems, responses, stats), bool)
    fmt = np.array([format_ok(r) for r in responses], bool)
    return ok + format_weight * fmt, ok


class GreedyGenerator(Protocol):
    def greedy(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list: ...


def greedy_records(generator: GreedyGenerator, tok: Tokenizer, problems: Sequence,
                   max_new_tokens: int) -> tuple[float, list[dict]]:
    """(accuracy, one record per problem: task, question, answer, response, correct,
    format_ok, finish_reason, and for code the spec's `plan`), greedy decoding."""
    if not problems:
        raise ValueError("no problems to evaluate")
    completions = generator.greedy([prompt_ids(tok, p) for p in problems], max_new_tokens)
    texts = [c.text for c in completions]
    ok = correct(problems, texts)
    records = [{"task": p.task, "question": p.question, "answer": p.answer, "response": t,
                "correct": k, "format_ok": bool(format_ok(t)), "finish_reason": c.finish_reason,
                **({"plan": p.key} if p.task == "code" else {})}
               for p, t, k, c in zip(problems, texts, ok, completions)]
    return sum(ok) / len(records), records
