"""`mindxh eval TASK (--samples FILE | --checkpoint DIR)`: score a task's benchmark.

`--samples` scores answers that already exist (HumanEval completions, run in the
sandbox); `--checkpoint` generates them with a trained model first (mindxh.eval.runner).
"""
from __future__ import annotations

import argparse
import sys

from mindxh.cli.recipe_cmd import seed_int

TASKS = ("arith", "code", "gsm8k", "humaneval")


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k wants integers like 1,10; got {text!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"--k wants integers >= 1; got {text!r}")
    return ks


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="score a benchmark from samples or a checkpoint")
    parser.add_argument("task", choices=TASKS)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", help='JSON lines of answers to score (humaneval: "task_id", '
                                          '"completion")')
    source.add_argument("--checkpoint", help="a run directory or checkpoint to generate answers with")
    parser.add_argument("--out", help="per-sample results, JSON lines (default: SAMPLES_results.jsonl "
                                      "with --samples; RUN/eval/STEP-TASK.jsonl for a run's "
                                      "checkpoint, else CHECKPOINT/eval_TASK.jsonl)")
    parser.add_argument("--k", type=_ks, default=[1, 10], help="pass@k to report (default 1,10)")
    parser.add_argument("--workers", type=int, default=2, help="samples run in parallel (default 2)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per sample (default 3)")
    gen = parser.add_argument_group("generation (--checkpoint)")
    gen.add_argument("--limit", type=int, help="first N problems only")
    gen.add_argument("--level", type=int, default=2, help="arith, code: problem level (default 2)")
    gen.add_argument("--data", help="gsm8k: a JSONL file with question/answer "
                                    "(default ../shared/data/gsm8k/test.jsonl)")
    gen.add_argument("--samples-per-task", type=int, default=1, help="humaneval: n for pass@k")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--batch-size", type=int, default=64)
    gen.add_argument("--seed", type=seed_int, default=0)
    parser.set_defaults(func=lambda args: run(args, parser))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.checkpoint is not None:
        from mindxh.eval.runner import EvalOptions, run_eval

        print(run_eval(EvalOptions(
            task=args.task, checkpoint=args.checkpoint, out=args.out, limit=args.limit,
            level=args.level, data=args.data, samples_per_task=args.samples_per_task, k=args.k,
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
            batch_size=args.batch_size, seed=args.seed, workers=args.workers, timeout=args.timeout)))
        return 0
    if args.task != "humaneval":
        hint = ("use `mindxh grade gsm8k FILE` for existing answers" if args.task == "gsm8k"
                else f"{args.task} problems are generated; use --checkpoint")
        parser.error(f"--samples is for humaneval; {hint}")
    return _humaneval_samples(args)


def _humaneval_samples(args: argparse.Namespace) -> int:
    from mindxh.eval.humaneval import evaluate, load_problems, pass_at_k
    from mindxh.utils.fsio import write_jsonl
    from mindxh.utils.records import JsonlError, read_records

    problems = load_problems()
    samples, bad = [], []
    for lineno, obj, problem in read_records(args.samples, {"task_id": str, "completion": str}):
        if obj is not None and obj["task_id"] not in problems:
            problem = f"unknown task_id {obj['task_id']!r}"
        if problem:
            print(f"{args.samples}:{lineno}: {problem}", file=sys.stderr)
            bad.append(lineno)
        else:
            samples.append(obj)
    if bad:  # pass@k over a silently thinned sample set would mislead
        raise JsonlError(f"{args.samples}: {len(bad)} malformed line(s), the first at line {bad[0]}")
    if not samples:
        raise JsonlError(f"{args.samples}: no samples")
    records = evaluate(samples, problems, workers=args.workers, timeout_s=args.timeout)
    out = args.out or f"{args.samples}_results.jsonl"
    write_jsonl(out, records)
    attempted = len({r["task_id"] for r in records})
    scores = pass_at_k(records, args.k)
    for k in args.k:
        if k in scores:
            print(f"pass@{k}: {scores[k]:.4f}")
        else:
            print(f"pass@{k}: n/a (some problems have fewer than {k} samples)")
    print(f"humaneval: {sum(r['passed'] for r in records)}/{len(records)} samples passed over "
          f"{attempted}/{len(problems)} problems | results in {out}")
    return 0
