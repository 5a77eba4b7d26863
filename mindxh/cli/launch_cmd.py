"""`mindxh launch --nproc N RECIPE [train options]`: `mindxh train` on N local data-parallel
ranks under msrun, supervised so that a failed rank stops the whole job within seconds.

Shows rank 0's own log lines (`[mindxh] ...`) on stderr, not MindSpore's per-rank noise
(that stays in OUTPUT_DIR/logs), and rank 0's `done:` summary on stdout, like `mindxh train`.
"""
from __future__ import annotations

import argparse
import sys

from mindxh.cli.recipe_cmd import add_max_steps_option, add_set_option


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("launch", help="train on N local data-parallel ranks (msrun)")
    parser.add_argument("--nproc", type=int, required=True, help="number of ranks (>= 2)")
    parser.add_argument("recipe", help="path to a recipe YAML file")
    parser.add_argument("--output-dir", help="where checkpoints, metrics and logs/ go "
                                             "(default: recipe output_dir)")
    add_max_steps_option(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--worker-script", help=argparse.SUPPRESS)  # tests: run this, not -m mindxh
    add_set_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mindxh.launch.msrun import LaunchFailed, supervise
    from mindxh.launch.train_job import oversubscription_warning, plan_train, usable_cpus

    job = plan_train(args.nproc, args.recipe, args.output_dir, args.max_steps, args.resume,
                     args.no_progress, args.overrides, args.worker_script)
    warning = oversubscription_warning(args.nproc, usable_cpus())
    if warning:
        print(f"[mindxh] warning: {warning}", file=sys.stderr)
    print(f"[mindxh] launching {args.nproc} ranks; logs in {job.log_dir}", file=sys.stderr)
    done: list[str] = []

    def show(line: str) -> None:
        if line.startswith("done:"):
            done.append(line)
        elif line.startswith("[mindxh]"):
            print(line, file=sys.stderr, flush=True)

    try:
        supervise(args.nproc, job.args, job.log_dir, on_rank0_line=show)
    except LaunchFailed as exc:
        print(f"--- last lines of {exc.log_path} ---\n{exc.tail}\n---", file=sys.stderr)
        raise
    if done:
        print(done[-1])
    return 0
