"""`mindxh grade gsm8k FILE.jsonl`: grade model responses against GSM8K references, no model needed.

Each input line is `{"reference": GSM8K answer text, "response": model text, ...}`; each
output line on stdout is that object plus `"correct": true|false`. Malformed lines are
reported on stderr as FILE:LINE and skipped, and then the command exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys

_CHUNK = 1024  # lines graded together: output flows, memory stays bounded


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("grade", help="grade model responses by rule (no model needed)")
    tasks = parser.add_subparsers(dest="grade_task", required=True)
    gsm8k = tasks.add_parser("gsm8k", help="final-answer accuracy against GSM8K references")
    gsm8k.add_argument("file", help='JSON lines with "reference" (text with "#### N" or "A: N") '
                                    'and "response"')
    gsm8k.add_argument("--workers", type=int, default=2, help="math-verify processes (default 2)")
    gsm8k.add_argument("--timeout", type=float, default=10.0,
                       help="seconds per math-verify check; a slower one counts as wrong (default 10)")
    gsm8k.set_defaults(func=run_gsm8k)


def run_gsm8k(args: argparse.Namespace) -> int:
    from mindxh.rewards.math import MathGrader, gsm8k_reference_answer
    from mindxh.utils.records import JsonlError, read_records

    graded = correct = 0
    bad: list[int] = []
    chunk: list[tuple[dict, str]] = []

    def flush(grader: MathGrader) -> None:
        nonlocal graded, correct
        verdicts = grader.grade_many([(ref, obj["response"]) for obj, ref in chunk])
        for (obj, _), ok in zip(chunk, verdicts):
            print(json.dumps({**obj, "correct": ok}, ensure_ascii=False))
        graded, correct = graded + len(chunk), correct + sum(verdicts)
        chunk.clear()

    with MathGrader(workers=args.workers, timeout_s=args.timeout) as grader:
        for lineno, obj, problem in read_records(args.file, {"reference": str, "response": str}):
            ref = gsm8k_reference_answer(obj["reference"]) if obj is not None else None
            if obj is not None and ref is None:
                problem = "'reference' has no final answer ('#### N' or 'A: N')"
            if problem:
                print(f"{args.file}:{lineno}: {problem}", file=sys.stderr)
                bad.append(lineno)
                continue
            chunk.append((obj, ref))
            if len(chunk) >= _CHUNK:
                flush(grader)
        if chunk:
            flush(grader)
        timeouts = grader.timeouts
    accuracy = correct / graded if graded else 0.0
    print(f"gsm8k: n={graded} correct={correct} accuracy={accuracy:.4f}"
          + (f" ({timeouts} checks timed out, counted wrong)" if timeouts else ""), file=sys.stderr)
    if bad:
        raise JsonlError(f"{args.file}: {len(bad)} malformed line(s) skipped, "
                         f"the first at line {bad[0]}")
    return 0
