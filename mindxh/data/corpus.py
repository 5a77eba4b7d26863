"""The embedded pretraining corpus: documents of one or more synthetic tasks, interleaved.

`data.tasks` names them (`math`: synthetic.py's word problems; `code`: synthetic_code.py's
specs). Candidate number `g` of the corpus is candidate `g // k` of task `tasks[g % k]`
(k tasks), so the stream resumes exactly at a saved index, and a single-task corpus is
that task's own stream, unchanged.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

from mindxh.data.synthetic import iter_problems
from mindxh.data.synthetic_code import iter_code_problems

__all__ = ["CORPUS_TASKS", "corpus_source", "corpus_texts"]

CORPUS_TASKS: dict[str, Callable] = {"math": iter_problems, "code": iter_code_problems}


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in CORPUS_TASKS]
    if not tasks or unknown:
        raise ValueError(f"tasks must be among {sorted(CORPUS_TASKS)}, got {list(tasks)}")
    return tasks


def _interleaved(seed: int, split: str, levels: Sequence[int], tasks: tuple[str, ...],
                 start: int) -> Iterator[tuple[int, str]]:
    k = len(tasks)
    if k == 1:  # the task's own stream (and its own candidate numbering)
        for index, problem in CORPUS_TASKS[tasks[0]](seed, split, levels, start):
            yield index, problem.text()
        return
    g = start
    while True:
        it = CORPUS_TASKS[tasks[g % k]](seed, split, levels, g // k)
        index, problem = next(it)
        if index == g // k:  # candidate g // k itself is in the split
            yield g, problem.text()
        g += 1


def corpus_source(seed: int, split: str, levels: Sequence[int],
                  tasks: Sequence[str] = ("math",)) -> Callable[[int], Iterator[tuple[int, str]]]:
    """A `make_iter(start)` factory of `(index, text)` for `PackedBatcher`."""
    tasks_t = _check_tasks(tasks)
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}; expected train or heldout")
    return lambda start: _interleaved(seed, split, levels, tasks_t, start)


def corpus_texts(seed: int, split: str, levels: Sequence[int], n: int,
                 tasks: Sequence[str] = ("math",)) -> list[str]:
    """The first `n` documents of the corpus (the tokenizer's training text)."""
    it = corpus_source(seed, split, levels, tasks)(0)
    return [next(it)[1] for _ in range(n)]
