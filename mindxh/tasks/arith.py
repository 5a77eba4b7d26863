"""The synthetic arithmetic task: problems, splits, seed streams and the answer check.

Problems come from `mindxh.data.synthetic` (deterministic in `(seed, index)`); a question's
hash decides its split, so a held-out problem is never in any training stream. Each use
draws from its own seed stream:

* cold-start SFT solutions: `train` split, stream `seed`;
* GRPO prompts: `train` split, stream `seed + RL_STREAM` (answers only);
* SFT validation (early stopping): `heldout` split, stream `seed + VALIDATION_STREAM`;
* GRPO validation (its curve): `heldout` split, stream `seed + GRPO_VALIDATION_STREAM`;
* the test set: `heldout` split, stream `seed`.

GRPO's curve has its own stream because the SFT checkpoint was *chosen* on the SFT
validation problems: judged on them, GRPO's step-0 figure is inflated by that choice.
Variants are compared on the test set only, which nothing chooses on.

The check is pure Python (it runs on every sampled response): the `<answer>` integer is
right. No subprocess, no math-verify: the answers are integers, so exact comparison is the
check. Rewards and accuracies of every task are scored in one place, mindxh.rewards.judge.
"""
from __future__ import annotations

import re

from mindxh.data.chat import prompt_ids as chat_prompt_ids
from mindxh.data.synthetic import Problem, iter_problems
from mindxh.tasks.format import answer_text
from mindxh.tasks.stream import take
from mindxh.tokenizer import Tokenizer

__all__ = ["GRPO_VALIDATION_STREAM", "RL_STREAM", "VALIDATION_STREAM", "Problem", "answer_int",
           "cold_start_samples", "heldout_problems", "is_correct", "prompt_ids", "rl_problems"]

RL_STREAM = 7919  # GRPO prompts: another stream than the SFT set's
VALIDATION_STREAM = 104729  # SFT early stopping: another held-out stream than the test set's
GRPO_VALIDATION_STREAM = 15485863  # GRPO's curve: unseen by the choice of the SFT checkpoint

_INT = re.compile(r"[+-]?\d+")


def answer_int(text: str) -> int | None:
    """The integer inside `<answer>...</answer>` (`1,234` allowed); None if absent or not an integer."""
    inner = answer_text(text)
    if inner is None:
        return None
    inner = inner.replace(",", "")
    return int(inner) if _INT.fullmatch(inner) else None


def is_correct(text: str, answer: int) -> bool:
    """The `<answer>` holds exactly `answer`."""
    return answer_int(text) == answer


def heldout_problems(seed: int, level: int, n: int) -> list[Problem]:
    """The first `n` held-out problems of stream `seed` (never in any training stream)."""
    it = iter_problems(seed, "heldout", [level])
    return [next(it)[1] for _ in range(n)]


def cold_start_samples(seed: int, level: int, n: int) -> list[dict]:
    """The worked solutions SFT may use: the first `n` training problems of stream `seed`."""
    it = iter_problems(seed, "train", [level])
    return [{"prompt": p.prompt(), "response": p.response()} for _, p in (next(it) for _ in range(n))]


def rl_problems(seed: int, level: int, start: int, n: int) -> tuple[list[Problem], int]:
    """`n` GRPO problems from stream index `start` on; returns them and the next index."""
    return take(iter_problems(seed + RL_STREAM, "train", [level], start), start, n)


def prompt_ids(tok: Tokenizer, problem: Problem) -> list[int]:
    """The token ids the model is given for `problem` (chat template, user turn only)."""
    return chat_prompt_ids(tok, problem.prompt())
