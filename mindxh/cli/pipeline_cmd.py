"""`mindxh pipeline RECIPE`: tokenizer -> pretrain -> SFT -> GRPO -> eval -> export, resumable."""
from __future__ import annotations

import argparse

from mindxh.cli.recipe_cmd import add_set_option, seed_int
from mindxh.config import load_recipe
from mindxh.config.post_training import STAGES


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("pipeline", help="run every stage of a recipe (the tiny X1 pipeline)")
    parser.add_argument("recipe", help="path to a pipeline recipe, e.g. recipes/tiny/x1.yaml")
    parser.add_argument("--output-dir", help="where every stage writes (default: recipe output_dir)")
    parser.add_argument("--seed", type=seed_int, help="shorthand for --set seed=N")
    parser.add_argument("--restart-from", choices=STAGES,
                        help="redo this stage and every stage that reads its results, from scratch")
    add_set_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.output_dir is not None:
        overrides.append(f"output_dir={args.output_dir}")
    recipe = load_recipe(args.recipe, overrides, pipeline=True)

    # imported here, not at module load: the stages pull in the training, GRPO and export code,
    # which `mindxh --help` and the other commands need not load
    from mindxh.train import runtime
    runtime.prepare_process(recipe)  # before the stages import MindSpore
    from mindxh.pipeline.runner import run_pipeline

    report = run_pipeline(recipe, args.restart_from)
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    print(f"done in {report['total_wall_s']:.0f}s | held-out accuracy: SFT {pct(report['sft_accuracy'])}"
          f" -> GRPO {pct(report['grpo_accuracy'])}"
          + "".join(f" | control {k} {pct(v)}" for k, v in report["controls"].items())
          + f" | report: {recipe.output_dir}/report.md")
    return 0
