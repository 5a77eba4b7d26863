"""One or more tasks at once: the cold-start set, held-out sets and GRPO stream of `data.tasks`.

Each task keeps its own streams (tasks/arith.py, tasks/code.py); a mixture interleaves
them round-robin, so a single-task mixture is exactly that task's stream. Held-out sets
take `n` problems *per task*, so each task's accuracy is measured on a set of the size
the recipe names. The GRPO stream keeps one cursor per task, checkpointed with the policy.
"""
from __future__ import annotations

from types import ModuleType
from typing import Sequence

from mindxh.data.chat import prompt_ids as chat_prompt_ids
from mindxh.tasks import arith, code
from mindxh.tokenizer import Tokenizer

__all__ = ["TASKS", "RLStream", "check_tasks", "cold_start_samples", "heldout_problems",
           "prompt_ids"]

TASKS: dict[str, ModuleType] = {"math": arith, "code": code}


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct names among {sorted(TASKS)}, got {list(tasks)}")
    return tasks


def _shares(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _round_robin(parts: list[list]) -> list:
    out = []
    for i in range(max(map(len, parts), default=0)):
        out += [part[i] for part in parts if i < len(part)]
    return out


def cold_start_samples(tasks: Sequence[str], seed: int, level: int, n: int) -> list[dict]:
    """`n` worked solutions in all, shared evenly between the tasks, interleaved."""
    tasks = check_tasks(tasks)
    return _round_robin([TASKS[t].cold_start_samples(seed, level, m)
                         for t, m in zip(tasks, _shares(n, len(tasks)))])


def heldout_problems(tasks: Sequence[str], seed: int, level: int, n: int) -> list:
    """The first `n` held-out problems of stream `seed` of each task, task after task."""
    return [p for t in check_tasks(tasks) for p in TASKS[t].heldout_problems(seed, level, n)]


def prompt_ids(tok: Tokenizer, problem) -> list[int]:
    """The token ids the model is given for `problem` (chat template, user turn only)."""
    return chat_prompt_ids(tok, problem.prompt())


_DEALT = "_dealt"  # RLStream.state(): beside the per-task cursors


class RLStream:
    """GRPO's problems: `per_step` a step, dealt round-robin between the tasks over the whole
    run (the n-th problem drawn is task n mod len(tasks)'s, so a step of 5 gives 3+2, the next
    2+3, and one task of two is never left out when `per_step` < len(tasks)), each task
    continuing its own answers-only stream from its cursor."""

    def __init__(self, tasks: Sequence[str], seed: int, level: int, per_step: int):
        self.tasks, self.seed, self.level = check_tasks(tasks), seed, level
        self.per_step = per_step
        self.cursors = {t: 0 for t in self.tasks}  # stream positions (held-out ones skipped)
        self.dealt = 0  # problems dealt so far: whose turn it is

    def take(self) -> list:
        order = [self.tasks[(self.dealt + j) % len(self.tasks)] for j in range(self.per_step)]
        self.dealt += self.per_step
        parts = {}
        for t in self.tasks:
            parts[t], self.cursors[t] = TASKS[t].rl_problems(self.seed, self.level,
                                                             self.cursors[t], order.count(t))
            parts[t] = iter(parts[t])
        return [next(parts[t]) for t in order]

    def state(self) -> dict:
        return {**self.cursors, _DEALT: self.dealt}

    def load_state(self, state) -> None:
        """A dict of cursors, or one integer (a single-task checkpoint of an older mindxh)."""
        if isinstance(state, dict):
            missing = [t for t in self.tasks if t not in state]
            if missing:
                raise ValueError(f"the checkpoint has no GRPO stream position for {missing}: "
                                 "data.tasks changed since it was written")
            self.cursors = {t: int(state[t]) for t in self.tasks}
            self.dealt = int(state.get(_DEALT, 0))
        elif len(self.tasks) == 1:
            self.cursors = {self.tasks[0]: int(state)}
        else:
            raise ValueError("the checkpoint holds one GRPO stream position, but data.tasks "
                             f"names {list(self.tasks)}")
